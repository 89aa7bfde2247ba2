"""Two tiers: `make test-fast` runs what needs nothing but this interpreter (-m "not slow and
not e2e"); `make test` runs everything. A test that starts a real component (a service process,
redis-server, a Redis Cluster, nginx, a container, torchrun, a browser) belongs to the full
suite and must say so with `@pytest.mark.e2e` (real server processes) or `@pytest.mark.slow`
(containers, clusters, torchrun, long trainings).

Two checks keep a slow test from slipping into the fast tier unmarked:
- at collection (tests/conftest.py): a test whose fixtures include one decorated with
  `@starts(...)` must carry one of the markers;
- at run time: every helper that starts a component calls `heavy(what)`, which fails the running
  test when it lacks the markers, however it reached the helper (fixture or direct call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest

MARKERS = ("slow", "e2e")
F = TypeVar("F", bound=Callable[..., object])

_running: pytest.Item | None = None


def starts(what: str) -> Callable[[F], F]:
    """Marks a fixture function (decorate it below `@pytest.fixture`) as starting `what`."""

    def mark(func: F) -> F:
        func.starts = what  # type: ignore[attr-defined]
        return func

    return mark


def is_marked(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(name) is not None for name in MARKERS)


# Directories whose every test talks to real processes (tests/e2e: uvicorn, redis-server, nginx;
# tests/ui: a browser and a server).
HEAVY_DIRECTORIES = ("e2e", "ui")


def started_by_fixtures(item: pytest.Item) -> list[str]:
    """What the item's fixtures (its whole closure, as pytest resolved it) start; a test in one
    of HEAVY_DIRECTORIES counts as starting real processes whatever its fixtures."""
    parts = item.path.parts
    found = []
    if "tests" in parts and parts[parts.index("tests") + 1] in HEAVY_DIRECTORIES:
        found.append(f"real processes (tests/{parts[parts.index('tests') + 1]}/)")
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return found
    for name, definitions in info.name2fixturedefs.items():
        what = getattr(definitions[-1].func, "starts", None) if definitions else None
        if what is not None:
            found.append(f"{what} (fixture {name})")
    return sorted(found)


def running(item: pytest.Item | None) -> None:
    global _running
    _running = item


def heavy(what: str) -> None:
    """Called by every helper that starts a real component, before it does."""
    if _running is not None and not is_marked(_running):
        pytest.fail(
            f"{_running.nodeid} starts {what} but is not marked slow or e2e: mark it (pytestmark = "
            "pytest.mark.e2e for real server processes, pytest.mark.slow for containers, clusters, torchrun "
            "and long trainings) so that `make test-fast` leaves it out",
            pytrace=False,
        )
