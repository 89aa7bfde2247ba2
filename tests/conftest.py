"""Session-wide test hygiene shared by every package's tests."""

from __future__ import annotations

import ctypes
import ctypes.util
import warnings
from collections.abc import Iterator

import numpy as np
import pytest


def _flushes_subnormals() -> bool:
    """True when the CPU's floating-point state flushes subnormals to zero (FTZ/DAZ)."""
    tiny = np.array([1e-310])
    return bool((tiny * np.float64(1.0))[0] == 0.0)


def _restore_ieee_default() -> None:
    """fesetenv(FE_DFL_ENV): the C library's default floating-point environment (FTZ/DAZ off).
    FE_DFL_ENV is ((const fenv_t *) -1) in glibc."""
    libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    libm.fesetenv(ctypes.c_void_p(-1))


@pytest.fixture(autouse=True)
def ieee_floats(request: pytest.FixtureRequest) -> Iterator[None]:
    """Some native library loaded by an earlier test (in this process) can switch the thread
    to flush-to-zero, after which Hypothesis refuses to generate floats at all. The product
    never depends on that state; restore IEEE-754 behaviour so each test starts the same."""
    if _flushes_subnormals():
        _restore_ieee_default()
        warnings.warn(f"flush-to-zero was on before {request.node.nodeid}; restored IEEE defaults", stacklevel=1)
        assert not _flushes_subnormals(), "could not restore IEEE-754 subnormals"
    yield
