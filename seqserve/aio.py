"""The asyncio client: AsyncClient and AsyncSession. The blocking Client in
seqserve.client runs these on a private event loop, so both behave identically.

Exactly-once stepping, in short. A session object never has more than one unacknowledged
REST request (an asyncio lock serialises `step` calls), and every request carries `position`,
the number of steps this object saw acknowledged. The service keeps the last applied request
of each session replayable: the identical request sent again is answered from its record,
never applied twice. So:

- transport error / timeout / 502 / 504: send the identical request again;
- 409 whose position is ours plus this request's steps: our request was applied and its reply
  lost (e.g. a retry raced the original on another replica); the identical request again
  fetches the recorded reply;
- any other 409: someone else moved the session; raise PositionConflict (nothing skipped);
- 404 / 410: raise SessionLost carrying the position and the readings not applied, or with
  ``recreate=True`` create a new session from the last exported state, re-apply the readings
  acknowledged since then, and carry on;
- 410 model_changed: raise ModelChanged, also with ``recreate=True``: the exported state
  belongs to the graph that was replaced, so nothing is rebuilt from it;
- 429 / 503: bounded backoff with jitter, then the same request.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterable, AsyncIterator, Generator, Iterable, Mapping
from types import TracebackType
from typing import Any

import httpx
import numpy as np

from models import times
from seqserve import _requests as requests
from seqserve._progress import Progress, State
from seqserve._protocol import (
    RETRY_STATUSES,
    Attempts,
    Intervals,
    RetryPolicy,
    as_batch,
    as_steps,
    body_of,
    error_of,
)
from seqserve._requests import Request
from seqserve._stream import stream_session
from seqserve.errors import NotFound, PositionConflict, SeqserveError, SessionLost, error_from_body

DEFAULT_TIMEOUT = 10.0
CHECKPOINT_EVERY = 1000


def _auth_headers(api_key: str | None, auth_header: str) -> dict[str, str]:
    if api_key is None:
        return {}
    if auth_header.lower() == "x-api-key":
        return {"X-API-Key": api_key}
    return {"Authorization": f"Bearer {api_key}"}


class AsyncClient:
    """A seqserve service over HTTP and WebSocket, for asyncio code.

    Example::

        async with AsyncClient("http://127.0.0.1:8000", api_key="...") as client:
            print(await client.models())
            async with client.session("electricity") as session:
                out = await session.step([[22262.0], [21756.0]])

    `api_key` is sent as ``Authorization: Bearer <key>`` (or ``X-API-Key`` with
    ``auth_header="x-api-key"``) on every request and on the WebSocket handshake.
    `transport` replaces httpx's network transport (tests use httpx.MockTransport)."""

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
        self.base_url = base_url.rstrip("/")
        self.headers = _auth_headers(api_key, auth_header)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        # The quantiles and anomaly flags of the last prediction, per sequence (None for a
        # model without quantile levels).
        self.last_intervals: list[Intervals | None] = []
        self.last_forecast_times: list[list[list[str]]] | None = None  # of the last predict with a start time
        self.http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(
        self, method: str, path: str, body: Any = None, *, params: Mapping[str, str] | None = None
    ) -> Any:
        """One call with the retry policy for transport errors and 429/502/503/504; the decoded
        JSON answer, or the typed error."""
        return await self.send(Request(method, path, body, params))

    async def send(self, request: Request) -> Any:
        """A built request (seqserve/_requests.py) with the retry policy of `request`. Used for
        everything but session steps."""
        content = request.content()
        attempts = Attempts(self.retry)
        while True:
            try:
                response = await self.http.request(request.method, request.path, content=content, params=request.params)
            except httpx.TransportError as exc:
                await attempts.wait(exc)
                continue
            if response.status_code < 300:
                return body_of(response) if response.content else None
            error = error_of(response)
            if response.status_code in RETRY_STATUSES:
                await attempts.wait(error)
                continue
            raise error

    # Models and stateless prediction

    async def models(self) -> list[dict[str, Any]]:
        """Every served model: ``[{"name", "latest", "versions": [...]}]``."""
        models: list[dict[str, Any]] = (await self.send(requests.models()))["models"]
        return models

    async def model(self, name: str) -> dict[str, Any]:
        """One model: its versions with features, outputs, state shapes and training metrics."""
        info: dict[str, Any] = await self.send(requests.model(name))
        return info

    async def predict(
        self,
        name: str,
        inputs: Any,
        version: int | None = None,
        return_state: bool = False,
        state: Mapping[str, Any] | None = None,
        start_time: Any = None,
    ) -> Any:
        """Stateless: whole sequences from a given (default initial) state, or from a fresh one
        whose clock `start_time` sets (the time of the first reading: ISO 8601, 1949-01,
        1990Q1, epoch seconds, ...; the reply's `forecast_times` then say what each forecast is
        for, see `forecast`).

        `inputs` is [time][features] (array, list or DataFrame), [batch][time][features], or a
        list of sequences of different lengths. A DataFrame's columns are picked by the model's
        feature names (other columns, such as its time column, are left out). The outputs come back in the same form
        (a DataFrame with the model's output names for a DataFrame; for a model with quantile
        levels also a column per output and level, ``y@t+1:q0.1``..., and the anomaly flags,
        see `Intervals.columns`, the flags `outside_80`/`outside_95` as booleans, <NA> where a
        reading has none; `intervals(answer)` reads them for other forms). With
        `return_state`, returns ``(outputs, state)`` where state maps names to
        [rows][batch][width] arrays.

        Example: ``y = await client.predict("electricity", np.array([[22262.0], [21756.0]]))``
        """
        info: dict[str, Any] | None = None
        frame = inputs if _is_dataframe(inputs) else None
        if frame is not None:
            info = await self.model(name)
            chosen = version if version is not None else info["default"]
            described = next((v for v in info["versions"] if v["version"] == chosen), info["versions"][-1])
            inputs = model_columns(frame, list(described["features"]))
        sequences, form = as_batch(inputs)
        answer = await self.send(requests.predict(name, sequences, version, return_state, state, start_time))
        self.last_forecast_times = answer.get("forecast_times")
        self.last_intervals = [Intervals.of(answer, i) for i in range(len(answer["outputs"]))]
        outputs = [np.asarray(o, dtype=np.float32) for o in answer["outputs"]]
        result: Any = outputs[0] if form == "one" else (np.stack(outputs) if form == "batch" else outputs)
        if form == "one" and frame is not None and info is not None:
            import pandas as pd

            versions = info["versions"]
            served = next((v for v in versions if v["version"] == answer["version"]), versions[-1])
            result = pd.DataFrame(outputs[0], index=frame.index, columns=served["outputs"])
            intervals = self.last_intervals[0]
            if intervals is not None:
                extra = pd.DataFrame(intervals.columns(served["outputs"]), index=frame.index)
                for flag in ("outside_80", "outside_95"):
                    if flag in extra:
                        extra[flag] = extra[flag].astype("boolean")  # <NA> where a reading has no flag
                result = pd.concat([result, extra], axis=1)
        if return_state:
            return result, {k: np.asarray(v, dtype=np.float32) for k, v in answer["state"].items()}
        return result

    async def forecast(self, name: str, frame: Any, time_column: str | None = None, version: int | None = None) -> Any:
        """Forecasts over a DataFrame of readings, indexed by the times they are for.

        `frame` holds the model's input columns and the times of its rows (`time_column`, or a
        DatetimeIndex when it is None). The times are read as training reads a time column
        (models/times.py: `1949-01`, `31/01/1949`, `1990Q1`, epoch seconds, ...); rows out of
        time order are sorted by them (with a warning), as training sorted its file, and
        duplicated times are refused naming the rows. Times missing from the model's sampling
        period (a month dropped, trading-day holidays, a daylight-saving hour) are filled as
        training fills a file's gaps: the readings interpolated linearly between their
        neighbours, with a warning naming how many (``result.attrs["filled"]`` lists their
        times), so every row is labelled with its own time; times off the model's period (daily
        rows for a monthly model) are refused, as is a frame missing more than a tenth of
        them. The first time is sent as the start time
        (ISO 8601), so the model's clock is set and the service says what each forecast is for.
        Returns a DataFrame with one row per reading and one column per lead (the model's output
        names, ``y@t+1``..``y@t+h``), and for a model with quantile levels a column per lead and
        level and the anomaly flags, as `predict` returns them: the row after reading i is
        indexed by the time of its first lead (the next reading's time), and column ``y@t+k``
        is the forecast for k-1 periods after that. The values are exactly stateless `predict`
        with that start time; ``result.attrs["forecast_times"]`` lists every lead's time per
        row. The shape statsforecast and neuralforecast users expect: the future on the index."""
        import pandas as pd

        seconds = frame_times(frame, time_column)
        order = np.argsort(seconds, kind="stable")
        if np.any(order != np.arange(len(order))):
            newest_first = bool(np.all(np.diff(seconds) < 0))
            how = (
                "newest first"
                if newest_first
                else f"row {int(np.flatnonzero(np.diff(seconds) < 0)[0]) + 1} out of order"
            )
            warnings.warn(f"forecast: the rows are not in time order ({how}); sorted by time", stacklevel=2)
            frame, seconds = frame.iloc[order], seconds[order]
        info = await self.model(name)
        versions = info["versions"]
        chosen = version if version is not None else info["default"]
        described = next((v for v in versions if v["version"] == chosen), versions[-1])
        features = list(described["features"])
        missing = [c for c in features if c not in frame.columns]
        if missing:
            raise ValueError(f"the DataFrame lacks the model's input column(s) {missing}")
        readings = frame[features].reset_index(drop=True)
        readings = readings.astype(np.float32)
        filled: list[str] = []
        period = model_period(described)
        if period is not None:
            readings, filled = fill_to_period(readings, seconds, period, name)
        outputs = await self.predict(
            name, readings.astype(np.float32), version=version, start_time=times.iso(float(seconds[0]))
        )
        stamps = self.last_forecast_times
        if stamps is None:
            raise ValueError(f"model {name!r} does not know its sampling period: it returned no forecast times")
        index = pd.DatetimeIndex([pd.Timestamp(row[0]) for row in stamps[0]], name="time")
        result = outputs.set_axis(index, axis=0)
        result.attrs["forecast_times"] = stamps[0]
        result.attrs["filled"] = filled
        return result

    # Sessions

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
    ) -> _SessionOpener:
        """A new streaming session; await it, or use it as ``async with``, which deletes the
        session on exit.

        `state` resumes from exported state ({name: [rows][width]}). `recreate=True` makes the
        session survive expiry and loss: it exports its state every `checkpoint_every`
        acknowledged steps and, when the service answers 404/410, creates a new session from
        that state and re-applies the readings since. Further keyword arguments go into the
        create request as they are (e.g. ``start_time="2014-01-06T00:00:00Z"``).

        Example::

            session = await client.session("electricity", ttl=600)
            y = await session.step([[22262.0]])
        """
        return _SessionOpener(self, name, version, ttl, state, recreate, checkpoint_every, create)

    async def _create(
        self,
        name: str,
        version: int | None,
        ttl: float | None,
        state: Mapping[str, Any] | None,
        extra: Mapping[str, Any],
    ) -> dict[str, Any]:
        # A create whose reply is lost and is sent again leaves one unused session behind; it
        # expires after its TTL. Nothing else about a create can be applied twice.
        created: dict[str, Any] = await self.send(requests.create(name, version, ttl, state, extra))
        return created

    async def step_many(self, steps: Mapping[AsyncSession, Any]) -> dict[AsyncSession, np.ndarray]:
        """Step many sessions in one request per model over the bulk endpoint.

        Each session's readings are applied exactly once with the same rules as
        `AsyncSession.step`: entries whose reply was unclear (a whole-request transport error,
        a 409 that our own lost reply explains, 429/503) are finished by that session's own
        `step`, which resends the identical entry. Sessions must not be stepped concurrently
        by other calls meanwhile. Raises BulkStepError (with the results that succeeded) when
        some entries failed for good.

        Example: ``outs = await client.step_many({s1: [[1.0]], s2: [[2.0]]})``"""
        by_model: dict[str, list[tuple[AsyncSession, np.ndarray]]] = {}
        for session, readings in steps.items():
            by_model.setdefault(session.model, []).append((session, as_steps(readings, session.features)))
        results: dict[AsyncSession, np.ndarray] = {}
        errors: dict[AsyncSession, SeqserveError] = {}
        for model, entries in by_model.items():
            await self._bulk(model, entries, results, errors)
        if errors:
            raise BulkStepError(f"{len(errors)} of {len(steps)} session(s) failed", results=results, errors=errors)
        return results

    async def _bulk(
        self,
        model: str,
        entries: list[tuple[AsyncSession, np.ndarray]],
        results: dict[AsyncSession, np.ndarray],
        errors: dict[AsyncSession, SeqserveError],
    ) -> None:
        request = requests.bulk(model, [(s.session_id, x, s._progress.on_server()) for s, x in entries])
        try:
            answer = await self.send(request)
            replies: list[Any] = answer["results"]
        except SeqserveError:
            replies = [None] * len(entries)  # unclear as a whole: each session finishes its own
        for (session, x), reply in zip(entries, replies, strict=True):
            try:
                if isinstance(reply, dict) and "outputs" in reply:
                    results[session] = session._progress.accept(x, reply)
                    continue
                if isinstance(reply, dict) and reply.get("status") not in (None, 409, *RETRY_STATUSES):
                    error = _error_from_entry(reply)
                    if not isinstance(error, SessionLost) or not session.recreate:
                        raise session._progress.annotate(error, x)
                results[session] = await session.step(x)  # resend the identical entry, alone
            except SeqserveError as exc:
                errors[session] = exc


def _error_from_entry(reply: dict[str, Any]) -> SeqserveError:
    status = reply.get("status")
    return error_from_body(status if isinstance(status, int) else 500, reply)


def model_columns(frame: Any, features: list[str]) -> Any:
    """The model's input columns of a DataFrame, by name and in the model's order (a frame may
    hold more: its time column, ids, ...); a frame whose columns are not named as the model's
    but are as many, all numeric, is taken as it is. Anything else: a ValueError naming the
    columns the model wants and the frame lacks."""
    import pandas as pd

    columns = [str(c) for c in frame.columns]
    if all(f in columns for f in features):
        return frame[features] if list(frame.columns) != features else frame
    numeric = all(pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns)
    if len(columns) == len(features) and numeric:
        return frame
    missing = [f for f in features if f not in columns]
    raise ValueError(
        f"the DataFrame lacks the model's input column(s) {missing} (the model reads {features}; "
        f"the frame has {columns})"
    )


def _is_dataframe(value: Any) -> bool:
    try:
        import pandas as pd
    except ImportError:
        return False
    return isinstance(value, pd.DataFrame)


class BulkStepError(SeqserveError):
    """Some entries of `step_many` failed for good. `results` holds the outputs of those that
    succeeded (applied exactly once), `errors` the typed error of each that failed."""

    def __init__(self, message: str, *, results: dict[Any, np.ndarray], errors: dict[Any, SeqserveError]) -> None:
        super().__init__(message)
        self.results = results
        self.errors = errors


class _SessionOpener:
    """What `AsyncClient.session()` returns: awaitable (the session) and an async context
    manager (the session, deleted on exit)."""

    def __init__(self, client: AsyncClient, *args: Any) -> None:
        self.client = client
        self.args = args
        self.session: AsyncSession | None = None

    async def open(self) -> AsyncSession:
        name, version, ttl, state, recreate, checkpoint_every, create = self.args
        info = await self.client._create(name, version, ttl, state, create)
        session = AsyncSession(self.client, info, recreate=recreate, checkpoint_every=checkpoint_every)
        session._create_args = (ttl, create)
        if recreate:
            await session.export_state()  # the state to recreate from, known from position 0
        return session

    def __await__(self) -> Generator[Any, None, AsyncSession]:
        return self.open().__await__()

    async def __aenter__(self) -> AsyncSession:
        self.session = await self.open()
        return self.session

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.session is not None:
            await self.session.close()


class AsyncSession:
    """One streaming session. `position` counts the steps this object has seen
    acknowledged, over the whole life of the stream (a recreated session continues it).

    Not for concurrent use by several writers: that is what the position check refuses."""

    def __init__(
        self, client: AsyncClient, info: Mapping[str, Any], *, recreate: bool = False, checkpoint_every: int = 1000
    ) -> None:
        self.client = client
        self.model: str = info["model"]
        self.version: int = info["version"]
        self.recreate = recreate
        self.features: int | None = None
        self._progress = Progress(info["session_id"], info.get("position", 0), checkpoint_every)
        self._lock = asyncio.Lock()
        self._create_args: tuple[float | None, Mapping[str, Any]] = (None, {})
        self.recreated = 0
        # What recovery took so far: requests sent again, 409s our own lost reply explained,
        # WebSocket reconnections, steps whose outputs were recomputed after lost replies.
        self.stats = {"resent": 0, "conflicts_resolved": 0, "reconnects": 0, "recomputed": 0}

    def __repr__(self) -> str:
        return f"<AsyncSession {self.session_id[:8]}… {self.model} v{self.version} at {self.position}>"

    @property
    def session_id(self) -> str:
        """The server-side session's id (a new one after a recreation)."""
        return self._progress.session_id

    @property
    def position(self) -> int:
        """Steps acknowledged so far (over recreations)."""
        return self._progress.position

    @property
    def last_intervals(self) -> Intervals | None:
        """The quantiles and anomaly flags of the last step reply (None for a model without
        quantile levels): e.g. ``session.last_intervals.anomaly[-1]["outside_95"]``."""
        return self._progress.last_intervals

    @property
    def last_forecast_times(self) -> list[list[str]] | None:
        """[time][lead] ISO times the last step reply's forecasts are for: a session created with
        ``start_time`` (and a model that knows its period); None otherwise, and for outputs the
        stream recomputed after lost replies."""
        return self._progress.last_forecast_times

    @property
    def checkpoint_every(self) -> int:
        return self._progress.checkpoint_every

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def step(self, readings: Any) -> np.ndarray:
        """Apply readings ([time][features], one reading, or a number) and return exactly
        their outputs, [time][outputs]. Retries and resynchronises as the module says; the
        readings are applied exactly once or an error says why not.

        Example: ``y = await session.step([[22262.0], [21756.0]])  # y.shape == (2, 1)``"""
        steps = as_steps(readings, self.features)
        async with self._lock:
            outputs = await self._apply(steps)
            if self._progress.due():
                await self.export_state()
            return outputs

    async def _apply(self, steps: np.ndarray) -> np.ndarray:
        attempts = Attempts(self.client.retry)
        replays = 0
        progress = self._progress
        while True:
            request = requests.step(progress.session_id, steps, progress.on_server())
            try:
                response = await self.client.http.post(request.path, content=request.content())
            except httpx.TransportError as exc:
                await attempts.wait(exc)  # the identical request again: applied once either way
                self.stats["resent"] += 1
                continue
            if response.status_code == 200:
                return progress.accept(steps, body_of(response))
            error = error_of(response)
            if isinstance(error, PositionConflict):
                if error.server_position == progress.on_server() + len(steps) and replays < 2:
                    replays += 1  # ours was applied, its reply lost: the same request fetches it
                    self.stats["conflicts_resolved"] += 1
                    continue
                raise progress.annotate(error, steps)
            if isinstance(error, SessionLost):  # not ModelChanged: its exported state is the old graph's
                if self.recreate:
                    await self._recreate()
                    continue
                raise progress.annotate(error, steps)
            if response.status_code in RETRY_STATUSES:
                await attempts.wait(error)
                self.stats["resent"] += 1
                continue
            raise progress.annotate(error, steps)

    async def export_state(self) -> dict[str, np.ndarray]:
        """The session's state now, {name: [rows][width]} (feed it to
        ``client.session(name, state=...)`` to continue the stream elsewhere). Also the point
        a ``recreate=True`` session or a stream recovers from."""
        position, state = await self._read_state()
        self._progress.adopt(position, state)
        return state

    async def _read_state(self) -> tuple[int, State]:
        """(logical position, state) as the server holds them, read together."""
        info = await self.client.send(requests.info(self.session_id, include_state=True))
        state = {k: np.asarray(v, dtype=np.float32) for k, v in info["state"].items()}
        position = self._progress.base + info["position"]
        if info.get("next_time") is not None:  # kept for a recreation from this export
            checkpoint = self._progress.checkpoint
            kept = {p: t for p, t in self._progress.times.items() if checkpoint is None or p >= checkpoint[0]}
            self._progress.times = {**kept, position: info["next_time"]}
        return position, state

    async def info(self) -> dict[str, Any]:
        """The server's view: position, version, expiry (no state)."""
        info: dict[str, Any] = await self.client.send(requests.info(self.session_id))
        return info

    async def _recreate(self) -> None:
        """A new server-side session from the last checkpoint, brought up to `position` by
        re-applying the acknowledged readings since (their outputs are already known)."""
        checkpoint = self._progress.checkpoint
        if checkpoint is None:
            raise SessionLost("session lost before any state was exported; cannot recreate", status=410)
        ttl, extra = self._create_args
        # The state carries the model's clock; the checkpoint's time (when the session had a start
        # time) labels the recreated session's forecasts from where it resumes.
        extra = {k: v for k, v in extra.items() if k not in ("start_time", "resume_time")}
        if (resume := self._progress.times.get(checkpoint[0])) is not None:
            extra["resume_time"] = resume
        info = await self.client._create(self.model, self.version, ttl, checkpoint[1], extra)
        journal = self._progress.restart(info["session_id"])
        self.recreated += 1
        if journal is not None:
            await self._apply(journal)

    async def fork(self, ttl: float | None = None) -> AsyncSession:
        """A new session starting from a copy of this one's state (what-if runs); it has
        this session's position and recovery settings."""
        async with self._lock:
            info = await self.client.send(requests.fork(self.session_id, ttl))
            child = AsyncSession(self.client, info, recreate=self.recreate, checkpoint_every=self.checkpoint_every)
            child._progress = self._progress.copy(info["session_id"], info["position"])
            child.features = self.features
            child._create_args = (ttl, self._create_args[1])
            return child

    async def close(self) -> None:
        """Delete the session (a session already gone counts as deleted)."""
        with contextlib.suppress(SessionLost, NotFound):
            await self.client.send(requests.delete(self.session_id))

    def stream(self, readings: Iterable[Any] | AsyncIterable[Any], window: int = 16) -> AsyncIterator[np.ndarray]:
        """Send readings over the WebSocket without waiting for each reply (up to `window`
        unanswered messages) and yield each message's outputs in order. Each item is one
        message: a reading (1-D, yields [outputs]) or several ([time][features], yields
        [time][outputs]). A dropped connection is reopened and the stream resumes at the
        right position: nothing applied twice, nothing skipped.

        Example::

            async for y in session.stream(readings, window=16):
                print(y)
        """
        return stream_session(_StreamLink(self), readings, window)

    async def _recompute(self, steps: np.ndarray) -> np.ndarray:
        """Outputs for `steps`, which the server applied right after `position` but whose
        replies were lost: a stateless predict from the checkpoint over the journal and
        `steps` (equal to the session's own outputs: stream == whole sequence)."""
        state, inputs = self._progress.since_checkpoint(steps)
        batch_state = {k: v[:, None, :] for k, v in state.items()}
        answer = await self.client.send(requests.predict(self.model, [inputs], self.version, state=batch_state))
        return np.asarray(answer["outputs"][0], dtype=np.float32)[len(inputs) - len(steps) :]


class _StreamLink:
    """What the WebSocket stream (seqserve/_stream.py) works with: one session's progress,
    lock and settings, and the calls it needs, without reaching into the session."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        client = session.client
        self.progress = session._progress
        self.lock = session._lock
        self.features = session.features
        self.recreate = session.recreate
        self.stats = session.stats
        self.retry, self.timeout = client.retry, client.timeout
        self.base_url, self.headers = client.base_url, client.headers

    async def send(self, request: Request) -> Any:
        return await self._session.client.send(request)

    async def export_state(self) -> None:
        await self._session.export_state()

    async def read_state(self) -> tuple[int, State]:
        return await self._session._read_state()

    async def recreate_session(self) -> None:
        await self._session._recreate()  # the same progress object, restarted

    async def recompute(self, steps: np.ndarray) -> np.ndarray:
        return await self._session._recompute(steps)


def frame_times(frame: Any, time_column: str | None) -> np.ndarray:
    """Unix seconds of a frame's rows: its `time_column` read as training reads a time column
    (models/times.py, the one parser of training, service and client), or its DatetimeIndex.
    Duplicated times are refused naming the rows (1-based, as a file's data rows)."""
    import pandas as pd

    if time_column is None:
        if not isinstance(frame.index, pd.DatetimeIndex):
            raise ValueError("forecast needs time_column=... or a DataFrame with a DatetimeIndex")
        column = pd.Series(frame.index)
    else:
        if time_column not in frame.columns:
            raise ValueError(f"time column {time_column!r} is not in the DataFrame: {list(frame.columns)}")
        column = frame[time_column]
    if len(column) == 0:
        raise ValueError("forecast needs at least one row")
    if pd.api.types.is_datetime64_any_dtype(column):
        stamps = pd.to_datetime(column, utc=True)
        seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
    else:
        values = column.tolist() if pd.api.types.is_numeric_dtype(column) else [str(v) for v in column]
        parsed = None if column.isna().any() else times.parse_times(values)
        if parsed is None:
            raise ValueError(f"time column {time_column!r} does not hold times; accepted: {times.FORMATS}")
        seconds = np.asarray(parsed, dtype=np.float64)
    unique, inverse, counts = np.unique(seconds, return_inverse=True, return_counts=True)
    if np.any(counts > 1):
        first = int(np.flatnonzero(counts > 1)[0])
        rows = (np.flatnonzero(inverse == first) + 1).tolist()
        raise ValueError(
            f"duplicated times: rows {rows} are all at {times.iso(float(unique[first]))}; one row per time"
        )
    return np.asarray(seconds, dtype=np.float64)


def model_period(described: Mapping[str, Any]) -> float | None:
    """The sampling period a served model version was trained at (seconds; None: unknown):
    `period_seconds`, or its clock's from a service that does not list it."""
    period = described.get("period_seconds")
    if period is None and isinstance(described.get("clock"), Mapping):
        period = described["clock"].get("period_seconds")
    return float(period) if isinstance(period, int | float) and period > 0 else None


def fill_to_period(readings: Any, seconds: np.ndarray, period: float, name: str) -> tuple[Any, list[str]]:
    """The readings (rows in time order at `seconds`) reindexed onto the model's period from the
    first time, the missing times filled by linear interpolation between their neighbours, as
    training fills a file's gaps (training/seasons.py `fill_gaps`, the same grid from
    models/times.py), with a warning; and the ISO times filled. ValueError naming the first
    row when a time is off that grid, or when more than times.MAX_FILLED of it is missing."""
    what = f"model {name!r}'s {times.period_name(period)} period"
    stamps = [float(t) for t in seconds]
    positions = times.grid_positions(stamps, period)
    if positions is None:
        bad = times.off_grid(stamps, period)
        assert bad is not None
        raise ValueError(
            f"the frame's times do not fit {what}: row {bad + 1} ({times.iso(stamps[bad])}) is not a whole "
            f"number of periods after the first row ({times.iso(stamps[0])}); give rows sampled as the model was "
            "trained"
        )
    size = positions[-1] + 1
    missing = sorted(set(range(size)) - set(positions))
    if not missing:
        return readings, []
    if len(missing) > times.MAX_FILLED * size:
        raise ValueError(
            f"the frame misses {len(missing)} of the {size} times of {what} from {times.iso(stamps[0])} to "
            f"{times.iso(stamps[-1])}, more than training fills ({times.MAX_FILLED:.0%}); fill or trim the frame"
        )
    full = readings.set_axis(positions, axis=0).reindex(range(size)).interpolate(method="linear")
    filled = [times.iso(times.step(stamps[0], p, period)) for p in missing]
    warnings.warn(
        f"forecast: the frame misses {len(missing)} time(s) of {what}, first {filled[0]}: filled by linear "
        "interpolation between their neighbours, as training fills a file's gaps",
        stacklevel=3,
    )
    return full.reset_index(drop=True).astype(np.float32), filled
