"""Session-wide test hygiene shared by every package's tests."""

from __future__ import annotations

import ctypes
import ctypes.util
import warnings
from collections.abc import Iterator

import numpy as np
import pytest

from tests.support import tier


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test whose fixtures start a real component must be marked slow or e2e (tests/support/tier.py)."""
    unmarked = [
        f"{item.nodeid}: {', '.join(started)}"
        for item in items
        if not tier.is_marked(item) and (started := tier.started_by_fixtures(item))
    ]
    if unmarked:
        raise pytest.UsageError(
            "these tests start real components or long work but are not marked slow or e2e (tests/support/tier.py):\n  "
            + "\n  ".join(unmarked)
        )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    tier.running(item)
