"""The session-wide floating-point reset in tests/conftest.py really undoes flush-to-zero."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import pytest

from tests.conftest import _flushes_subnormals, _restore_ieee_default


@pytest.mark.skipif(platform.machine() != "x86_64", reason="sets MXCSR through glibc's x86-64 fenv_t layout")
def test_restore_undoes_flush_to_zero() -> None:
    libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    env = (ctypes.c_uint8 * 64)()
    libm.fegetenv(env)
    mxcsr = int.from_bytes(bytes(env[28:32]), "little") | 0x8040  # FTZ | DAZ
    env[28:32] = (ctypes.c_uint8 * 4)(*mxcsr.to_bytes(4, "little"))
    libm.fesetenv(env)
    try:
        assert _flushes_subnormals()
    finally:
        _restore_ieee_default()
    assert not _flushes_subnormals()
