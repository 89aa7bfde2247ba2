"""The blocking client: Client and Session, for scripts and notebooks.

Each Client runs the asyncio client (seqserve.aio) on a private event loop in a daemon
thread and waits for each call, so the protocol handling is written once and both clients
behave identically (including inside a notebook whose own loop is running).

Example: stream a CSV through a session, one reading per message::

    import pandas as pd
    from seqserve import Client

    frame = pd.read_csv("electricity_halfhourly.csv")
    with Client("http://127.0.0.1:8000") as client, client.session("electricity") as session:
        for y in session.stream(frame[["demand_mw"]].to_numpy(), window=16):
            print(y)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import httpx
import numpy as np

from seqserve._protocol import Intervals, RetryPolicy
from seqserve.aio import CHECKPOINT_EVERY, DEFAULT_TIMEOUT, AsyncClient, AsyncSession, BulkStepError

T = TypeVar("T")
_STOP = object()


class _Loop:
    """An event loop in a daemon thread; `run(coro)` waits for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="seqserve-client", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        async def step() -> Any:
            return await anext(agen, _STOP)

        try:
            while True:
                item = self.run(step())
                if item is _STOP:
                    return
                yield item
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                self.run(aclose())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Client:
    """A seqserve service, blocking calls. Same arguments as AsyncClient.

    Example::

        client = Client("http://127.0.0.1:8000", api_key="my-key")
        print([m["name"] for m in client.models()])
        y = client.predict("electricity", np.array([[22262.0], [21756.0]]))
        with client.session("electricity") as session:
            y1 = session.step([[22262.0]])
        client.close()
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        auth_header: str = "authorization",
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._loop = _Loop()

        async def build() -> AsyncClient:
            return AsyncClient(
                base_url, api_key, auth_header=auth_header, timeout=timeout, retry=retry, transport=transport
            )

        self.aio = self._loop.run(build())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._loop.run(self.aio.aclose())
        self._loop.close()

    def models(self) -> list[dict[str, Any]]:
        """Every served model: ``[{"name", "latest", "versions": [...]}]``."""
        return self._loop.run(self.aio.models())

    def model(self, name: str) -> dict[str, Any]:
        """One model's versions, features, outputs, state shapes and training metrics."""
        return self._loop.run(self.aio.model(name))

    def predict(
        self,
        name: str,
        inputs: Any,
        version: int | None = None,
        return_state: bool = False,
        state: Mapping[str, Any] | None = None,
        start_time: Any = None,
    ) -> Any:
        """Stateless prediction; see AsyncClient.predict."""
        return self._loop.run(self.aio.predict(name, inputs, version, return_state, state, start_time))

    def forecast(self, name: str, frame: Any, time_column: str | None = None, version: int | None = None) -> Any:
        """Forecasts indexed by the times they are for; see AsyncClient.forecast."""
        return self._loop.run(self.aio.forecast(name, frame, time_column, version))

    def session(
        self,
        name: str,
        version: int | None = None,
        ttl: float | None = None,
        state: Mapping[str, Any] | None = None,
        *,
        recreate: bool = False,
        checkpoint_every: int = CHECKPOINT_EVERY,
        **create: Any,
    ) -> Session:
        """A new streaming session (a context manager that deletes it on exit); see
        AsyncClient.session for the arguments."""
        opener = self.aio.session(
            name, version, ttl, state, recreate=recreate, checkpoint_every=checkpoint_every, **create
        )
        return Session(self, self._loop.run(opener.open()))

    def step_many(self, steps: Mapping[Session, Any]) -> dict[Session, np.ndarray]:
        """Step many sessions over the bulk endpoint; see AsyncClient.step_many."""
        by_async = {s.aio: s for s in steps}
        try:
            results = self._loop.run(self.aio.step_many({s.aio: x for s, x in steps.items()}))
        except BulkStepError as exc:
            exc.results = {by_async[k]: v for k, v in exc.results.items()}
            exc.errors = {by_async[k]: v for k, v in exc.errors.items()}
            raise
        return {by_async[k]: v for k, v in results.items()}


class Session:
    """A streaming session, blocking calls; see AsyncSession. Use it as a context manager
    to delete it on exit."""

    def __init__(self, client: Client, session: AsyncSession) -> None:
        self.client = client
        self.aio = session

    def __repr__(self) -> str:
        return repr(self.aio).replace("AsyncSession", "Session")

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def session_id(self) -> str:
        return self.aio.session_id

    @property
    def position(self) -> int:
        """Steps acknowledged so far (over recreations)."""
        return self.aio.position

    @property
    def model(self) -> str:
        return self.aio.model

    @property
    def version(self) -> int:
        return self.aio.version

    @property
    def stats(self) -> dict[str, int]:
        """What recovery took so far (resent requests, reconnects, recomputed steps...)."""
        return self.aio.stats

    @property
    def last_intervals(self) -> Intervals | None:
        """Quantiles and anomaly flags of the last `step` (None: the model has no levels)."""
        return self.aio.last_intervals

    @property
    def last_forecast_times(self) -> list[list[str]] | None:
        """[time][lead] times the last `step`'s forecasts are for (a session with a start time)."""
        return self.aio.last_forecast_times

    def step(self, readings: Any) -> np.ndarray:
        """Apply readings exactly once and return their outputs [time][outputs].

        Example: ``y = session.step([[22262.0], [21756.0]])``"""
        return self.client._loop.run(self.aio.step(readings))

    def stream(self, readings: Iterable[Any], window: int = 16) -> Iterator[np.ndarray]:
        """Pipelined WebSocket stream; yields each item's outputs in order (see
        AsyncSession.stream). Resumes exactly after dropped connections.

        Example: ``outputs = list(session.stream(series.reshape(-1, 1), window=16))``"""
        return self.client._loop.iterate(self.aio.stream(readings, window))

    def fork(self, ttl: float | None = None) -> Session:
        """A what-if copy of this session, at the same position."""
        return Session(self.client, self.client._loop.run(self.aio.fork(ttl)))

    def export_state(self) -> dict[str, np.ndarray]:
        """The state now, {name: [rows][width]}."""
        return self.client._loop.run(self.aio.export_state())

    def info(self) -> dict[str, Any]:
        return self.client._loop.run(self.aio.info())

    def close(self) -> None:
        """Delete the session (already gone counts as deleted)."""
        self.client._loop.run(self.aio.close())
