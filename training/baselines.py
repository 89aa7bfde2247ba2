"""The baselines a forecaster has to beat, on exactly the model's test origins.

Every baseline forecasts, for each origin t (a pair index of `ForecastData`), the targets at
t+1..t+h from readings up to t only, and is fitted on the training block only: the same split and
origins as the model's own evaluation, so the numbers side by side compare like with like.

- `naive`: every future step equals the last reading.
- `seasonal_naive_<s>` for every season s given: y[t+k] = y[t+k-s*ceil(k/s)], already observed.
- statsforecast (the [train] extra), fitted once on the training block and rolled forward with
  the fitted parameters (no refit per origin, as a served model is not refitted either):
  - `mstl_autoets` for seasonal series: MSTL over all the seasons, AutoETS on the deseasonalised
    series, forecasting the trend while each seasonal component repeats its last cycle (see
    `_mstl_autoets` for how it is rolled over the origins cheaply).
  - `autoets` for every series and `autoarima` for short ones, with the shortest season when it
    is short enough for them (a long seasonal series keeps AutoETS beside MSTL: on a daily
    temperature whose only season is the year, MSTL at 365 lost to naive while AutoETS did not,
    and the report's best baseline should be the one a user would compare with), rolled
    forward by their `forward` (fixed parameters, states from
    the data up to the origin).
  A statistical model that fails or is not installed is left out and the reason is recorded;
  the naive baselines are always there.

`start` runs the statistical ones of a long series in a worker process, so that they take no
wall-clock time of their own beside the network's training (one core each).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from training.data import ForecastData

# Series with at most this many training rows count as "short": AutoETS and AutoARIMA are fitted
# on them (on longer ones AutoARIMA's search takes minutes and MSTL covers the seasonal case).
SHORT_SERIES_ROWS = 1000
# ETS and ARIMA seasonal fits above this season length are slow or unsupported; use non-seasonal.
MAX_ETS_SEASON = 24
# MSTL+AutoETS's cost is its decompositions (an MSTL of n readings with two seasons: ~0.3 ms per
# reading on one core, more on a loaded machine): the readings decomposed over the test block
# are bounded by this. Within it every refresh decomposes the whole history, as statsforecast's
# MSTL.forward does (the electricity preset: 13 decompositions, ~48k readings; day ahead, Taylor's
# design: 28, ~93k); beyond it (a year of hourly readings, seasons 24 and 168: 55 decompositions
# of ~8k readings, ~445k) each refresh after the first decomposes only the latest readings.
MAX_DECOMPOSED_ROWS = 100_000
# A statistical baseline still running after this many seconds (a loaded machine, a long
# series) is stopped and reported as skipped "over budget", not left to hold training up; in a
# worker process beside the training (`start`), seconds of its own CPU time.
BASELINE_BUDGET_SECONDS = 180.0
PROGRESS_SECONDS = 15.0  # a progress line at most this often while a baseline runs
# AutoARIMA's default search over a season of 24 or more (hourly readings) fits seasonal ARIMAs
# whose likelihood runs over lags of a day: its first fit took 150 s of a 1,000-row hourly
# series' 240 s training. From this season on the search is bounded by design (small orders,
# few models, stepwise with the CSS approximation): ~8 s on that series, test MAE 44.9 -> 46.5.
RESTRICTED_ARIMA_SEASON = 24
RESTRICTED_ARIMA = {"max_p": 2, "max_q": 2, "max_P": 1, "max_Q": 1, "max_order": 4, "nmodels": 20}
RESTRICTED_ARIMA_WORDS = "restricted search: p, q <= 2, P, Q <= 1, p+q+P+Q <= 4, at most 20 models, stepwise"


class OverBudget(Exception):
    """A statistical baseline ran past BASELINE_BUDGET_SECONDS."""


class Progress:
    """Progress lines and the time budget of one baseline: `tick(done, total)` after each
    origin prints where it is every PROGRESS_SECONDS and raises OverBudget past the budget."""

    def __init__(
        self,
        name: str,
        report: Callable[[str], None] = print,
        budget: float | None = None,
        every: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.name, self.report, self.clock = name, report, clock
        self.unit = "s" if clock is time.perf_counter else "s CPU"
        self.budget = BASELINE_BUDGET_SECONDS if budget is None else budget
        self.every = PROGRESS_SECONDS if every is None else every
        self.start = self.last = clock()

    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    def tick(self, done: int, total: int) -> None:
        now = self.clock()
        if now - self.start > self.budget:
            raise OverBudget(
                f"over budget: {done} of {total} origins in {now - self.start:.0f}{self.unit} "
                f"(budget {self.budget:.0f}{self.unit})"
            )
        if now - self.last >= self.every:
            self.last = now
            self.report(f"baseline {self.name}: {done} of {total} test origins, {now - self.start:.0f}{self.unit}")


def decompose_window(seasons: Sequence[int], pairs: np.ndarray, budget: int = MAX_DECOMPOSED_ROWS) -> int | None:
    """How many of the latest readings mstl_origins decomposes at each refresh after the first:
    None (the whole history, as statsforecast's MSTL.forward does) while the decompositions over
    the test block read at most `budget` readings in all, else that budget shared between them
    (at least four of the longest season)."""
    origins = _refresh_origins(pairs, int(min(seasons)))
    if sum(t + 1 for t in origins) <= budget:
        return None
    return max(budget // max(1, len(origins) - 1), 4 * int(max(seasons)))


def _refresh_origins(pairs: np.ndarray, refresh: int) -> list[int]:
    """The origins at which mstl_origins decomposes, refreshing every `refresh` origins."""
    out: list[int] = []
    for t in (int(p) for p in pairs):
        if not out or t - out[-1] >= refresh:
            out.append(t)
    return out


@dataclass
class Baselines:
    """Predictions [P, T*h] of every baseline over the same pairs, with how each was made."""

    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # statistical model -> why it is absent

    def add(self, name: str, prediction: np.ndarray, description: str, seconds: float = 0.0) -> None:
        self.predictions[name] = prediction
        self.descriptions[name] = description
        self.seconds[name] = round(seconds, 3)

    @property
    def naive_names(self) -> list[str]:
        """The baselines the quality gate uses: naive and every seasonal naive."""
        return [n for n in self.predictions if n == "naive" or n.startswith("seasonal_naive_")]


def naive_forecast(data: ForecastData, pairs: np.ndarray) -> np.ndarray:
    """[P, T*h]: the last observed target value repeated over the horizon."""
    last = data.targets[pairs]  # [P, T]
    return np.repeat(last, data.horizon, axis=1)


def seasonal_naive_forecast(data: ForecastData, pairs: np.ndarray, season: int) -> np.ndarray:
    """[P, T*h]: the value one (or more) seasons before each future step, all already observed."""
    cols = []
    for j in range(len(data.target_names)):
        for k in range(1, data.horizon + 1):
            back = season * int(np.ceil(k / season))
            idx = pairs + k - back
            cols.append(data.targets[np.clip(idx, 0, None), j])
    return np.stack(cols, axis=1)


def _columns(data: ForecastData, per_target: list[np.ndarray]) -> np.ndarray:
    """[T] arrays of [P, h] -> [P, T*h] in the target-major output order."""
    return np.concatenate(per_target, axis=1)


def _usable_seasons(seasons: Sequence[int], train_rows: int) -> list[int]:
    """Seasons MSTL can estimate: at least two full cycles in the training block."""
    return sorted({s for s in seasons if s > 1 and 2 * s < train_rows})


def _decompose(segment: np.ndarray, seasons: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """MSTL of `segment`: (sum of its seasonal components [len], each component's last cycle)."""
    from statsforecast.mstl import mstl

    frame = mstl(segment, seasons)
    columns = [c for c in frame.columns if c.startswith("seasonal")]
    cycles = [frame[c].to_numpy()[-s:] for c, s in zip(columns, seasons, strict=True)]
    return frame[columns].to_numpy().sum(axis=1), cycles


def _mstl_autoets(
    y: np.ndarray,
    train_rows: int,
    seasons: list[int],
    pairs: np.ndarray,
    h: int,
    window: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """MSTL + AutoETS forecasts from every origin in `pairs`, fitted once on the training block.

    What statsforecast's `MSTL.forward` does at each origin (decompose the whole history, repeat
    each seasonal component's last cycle, run the fitted ETS over the deseasonalised history),
    except that the decomposition is refreshed once per shortest season instead of at every
    origin: an STL fit of a few thousand readings takes seconds, one per origin would take many
    minutes. Between refreshes the new readings are deseasonalised with the repeated cycles.
    On a long test block of a long series the refreshes decompose only the latest `window`
    readings (decompose_window), the earlier ones keeping what the previous decompositions gave.
    """
    out = np.empty((len(pairs), h))
    for row, ets, history, future in mstl_origins(y, train_rows, seasons, pairs, h, window):
        out[row] = ets.forward(y=history, h=h)["mean"] + future
        if progress is not None:
            progress.tick(row + 1, len(pairs))
    return out


def mstl_origins(
    y: np.ndarray, train_rows: int, seasons: list[int], pairs: np.ndarray, h: int, window: int | None = None
) -> Iterator[tuple[int, Any, np.ndarray, np.ndarray]]:
    """For each origin in `pairs`: its row, the AutoETS fitted once on the deseasonalised
    training block, the deseasonalised history up to the origin and the seasonal cycles repeated
    over the next `h` steps, all from the past only (see `_mstl_autoets`). The point forecast is
    `ets.forward(y=history, h=h)["mean"] + future`; intervals shift by `future` the same way.
    `window`: after the first decomposition (of the whole history), each refresh decomposes the
    latest `window` readings only and replaces their deseasonalised values (None: the whole
    history every time)."""
    from statsforecast.models import AutoETS

    seasonal, _ = _decompose(y[:train_rows], seasons)
    ets = AutoETS(model="ZZN").fit(y[:train_rows] - seasonal)
    refresh = seasons[0]
    steps = np.arange(refresh + h)
    origin = -refresh  # no decomposition yet
    future = deseasonalised = np.zeros(0)
    for row, t in enumerate(int(p) for p in pairs):
        if t - origin >= refresh:  # a new decomposition once per shortest season (pairs may skip)
            if window is None or origin < 0 or t + 1 <= window:
                seasonal, cycles = _decompose(y[: t + 1], seasons)  # the history only
                deseasonalised = y[: t + 1] - seasonal
            else:  # the past as deseasonalised so far, its latest `window` readings decomposed again
                before = np.concatenate([deseasonalised, y[origin + 1 : t + 1] - future[: t - origin]])
                seasonal, cycles = _decompose(y[t + 1 - window : t + 1], seasons)
                deseasonalised = np.concatenate([before[: t + 1 - window], y[t + 1 - window : t + 1] - seasonal])
            origin = t
            future = cast(np.ndarray, sum(cycle[steps % len(cycle)] for cycle in cycles))
        k = t - origin
        history = np.concatenate([deseasonalised, y[origin + 1 : t + 1] - future[:k]])
        yield row, ets, history, future[k : k + h]


def _rolled(model: object, y: np.ndarray, pairs: np.ndarray, h: int, progress: Progress | None = None) -> np.ndarray:
    """Forecasts from each origin with a fitted statsforecast model's `forward` (no refit)."""
    out = np.empty((len(pairs), h))
    for row, t in enumerate(pairs):
        out[row] = model.forward(y=y[: t + 1], h=h)["mean"]  # type: ignore[attr-defined]
        if progress is not None:
            progress.tick(row + 1, len(pairs))
    return out


_FITTED: dict[tuple[str, int, str, bytes], object] = {}
_FITTED_MAX = 4096


def _fitted(model_cls: type, season: int, train: np.ndarray, **options: Any) -> object:
    """A statsforecast model fitted on `train`, remembered for this process: the fit depends only
    on the training block, so runs over the same series at another horizon (a global model over
    many series at horizons 1 and 5) reuse it instead of searching again. `forward` does not
    change a fitted model, so sharing it is safe."""
    key = (
        model_cls.__name__,
        season,
        repr(sorted(options.items())),
        np.ascontiguousarray(train, dtype=np.float64).tobytes(),
    )
    model = _FITTED.get(key)
    if model is None:
        model = model_cls(season_length=season, **options).fit(np.asarray(train, dtype=np.float64))
        if len(_FITTED) >= _FITTED_MAX:
            _FITTED.pop(next(iter(_FITTED)))
        _FITTED[key] = model
    return model


def _ets_season(seasons: Sequence[int], train_rows: int) -> int:
    short = [s for s in sorted(seasons) if 1 < s <= MAX_ETS_SEASON and 2 * s < train_rows]
    return short[0] if short else 1


def statistical_forecasts(
    data: ForecastData,
    pairs: np.ndarray,
    seasons: Sequence[int],
    baselines: Baselines,
    report: Callable[[str], None] = print,
    clock: Callable[[], float] = time.perf_counter,
) -> None:
    """Add the statsforecast baselines that suit this series to `baselines` (see module doc).
    `clock` measures each one's budget: wall-clock time, or in a worker process beside the
    training its own CPU time (the training's share of the machine is not the baseline's cost)."""
    try:
        from statsforecast.models import AutoARIMA, AutoETS
    except ImportError as exc:
        baselines.skipped["statsforecast"] = f"not installed ({exc}); install the [train] extra"
        return
    train_rows, h = data.train_rows, data.horizon
    usable = _usable_seasons(seasons, train_rows)
    short = train_rows <= SHORT_SERIES_ROWS
    m = _ets_season(seasons, train_rows)
    too_long = sorted({s for s in seasons if s > MAX_ETS_SEASON and 2 * s < train_rows})
    if too_long:
        report(
            f"baselines autoets{', autoarima' if short else ''}: season(s) {too_long} longer than "
            f"{MAX_ETS_SEASON} are not fitted by them (minutes per fit, or unsupported); season {m} used"
        )
    plans: list[tuple[str, str, str, Callable[[np.ndarray, Progress], np.ndarray]]] = []
    if usable:
        window = decompose_window(usable, pairs)
        cadence = "refreshed every shortest season" + (
            ""
            if window is None
            else f" (after the first, over the latest {window} readings: at most ~{MAX_DECOMPOSED_ROWS} "
            "readings decomposed over the test block)"
        )
        plans.append(
            (
                "mstl_autoets",
                f"statsforecast MSTL(seasons {usable}) + AutoETS(ZZN) on the deseasonalised series; ETS "
                f"fitted on the training block and run forward without refit, decomposition of the history {cadence}",
                f", {len(_refresh_origins(pairs, usable[0]))} decompositions"
                + ("" if window is None else f" of the latest {window} readings"),
                lambda y, progress: _mstl_autoets(y, train_rows, usable, pairs, h, window, progress),
            )
        )
    plans.append(  # every series (module docstring)
        (
            "autoets",
            f"statsforecast AutoETS(season {m}) fitted on the training block, rolled forward without refit",
            "",
            lambda y, progress: _rolled(_fitted(AutoETS, m, y[:train_rows]), y, pairs, h, progress),
        )
    )
    if short:
        arima = RESTRICTED_ARIMA if m >= RESTRICTED_ARIMA_SEASON else {}
        bound = f"; {RESTRICTED_ARIMA_WORDS}, as for every season >= {RESTRICTED_ARIMA_SEASON}" if arima else ""
        plans.append(
            (
                "autoarima",
                f"statsforecast AutoARIMA(season {m}{bound}) fitted on the training block, "
                "rolled forward without refit",
                f" ({RESTRICTED_ARIMA_WORDS}: season {m} >= {RESTRICTED_ARIMA_SEASON}, the full search takes minutes)"
                if arima
                else "",
                lambda y, progress: _rolled(_fitted(AutoARIMA, m, y[:train_rows], **arima), y, pairs, h, progress),
            )
        )
    for name, description, how, run in plans:
        progress = Progress(name, report, clock=clock)
        report(f"baseline {name}: running over {len(pairs)} test origins{how}")
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                per_target = [
                    run(data.targets[:, j].astype(np.float64), progress) for j in range(len(data.target_names))
                ]
            prediction = _columns(data, per_target)
        except OverBudget as exc:  # honest: absent from the comparison, and the report says why
            baselines.skipped[name] = str(exc)
            report(f"baseline {name} skipped: {exc}")
            continue
        except Exception as exc:  # a statistical fit failing must not stop training; say why
            baselines.skipped[name] = f"{type(exc).__name__}: {exc}"
            report(f"baseline {name} skipped: {type(exc).__name__}: {exc}")
            continue
        if not np.all(np.isfinite(prediction)):
            baselines.skipped[name] = "non-finite forecasts"
            report(f"baseline {name} skipped: non-finite forecasts")
            continue
        baselines.add(name, prediction, description, progress.elapsed)
        report(f"baseline {name}: done in {progress.elapsed:.1f}{progress.unit}")


def compute_baselines(
    data: ForecastData,
    pairs: np.ndarray,
    seasons: Sequence[int],
    *,
    statistical: bool = True,
    report: Callable[[str], None] = print,
) -> Baselines:
    """Every baseline's forecasts over `pairs` (the test origins)."""
    baselines = Baselines()
    baselines.add("naive", naive_forecast(data, pairs), "last observed value, repeated over the horizon")
    for season in sorted(set(seasons)):
        if season > 1:
            baselines.add(
                f"seasonal_naive_{season}",
                seasonal_naive_forecast(data, pairs, season),
                f"value one season ({season} steps) before each forecast step",
            )
    if statistical:
        statistical_forecasts(data, pairs, seasons, baselines, report)
    return baselines


# Series of at least this many rows have their statistical baselines computed in a worker process
# while the network trains (`start`): MSTL over a long seasonal series takes tens of seconds, as
# long as the training itself, and the two need one core each. Shorter series' baselines take a
# second or two, less than starting the worker (which imports statsforecast afresh).
BACKGROUND_MIN_ROWS = 2000


class Pending:
    """Baselines being computed: `result()` waits for them (once) and replays, through the
    caller's report, the lines the worker would have printed. A worker whose result is never
    asked for (training failed) is stopped when this object goes away."""

    def __init__(
        self,
        baselines: Baselines,
        report: Callable[[str], None],
        worker: Any = None,
        connection: Any = None,
        fallback: Callable[[], None] | None = None,
    ) -> None:
        import weakref

        self._baselines, self._report = baselines, report
        self._worker, self._connection, self._fallback = worker, connection, fallback
        if worker is not None:
            weakref.finalize(self, _stop, worker, connection)

    def result(self) -> Baselines:
        if self._worker is None:
            return self._baselines
        worker, self._worker = self._worker, None
        try:
            status, payload = self._connection.recv()
        except (EOFError, OSError) as exc:  # the worker died (killed, out of memory)
            status, payload = "error", f"{type(exc).__name__}: worker exited with code {worker.exitcode}"
        _stop(worker, self._connection)
        if status != "ok":
            self._report(f"baselines: the worker process failed ({payload}); computing them here")
            assert self._fallback is not None
            self._fallback()
            return self._baselines
        statistical, lines = payload
        for line in lines:
            self._report(line)
        for name, prediction in statistical.predictions.items():
            self._baselines.add(name, prediction, statistical.descriptions[name], statistical.seconds.get(name, 0.0))
        self._baselines.skipped.update(statistical.skipped)
        return self._baselines


def _stop(worker: Any, connection: Any) -> None:
    connection.close()
    if worker.is_alive():
        worker.terminate()
    worker.join(timeout=5)


def _statistical_in_worker(connection: Any, data: ForecastData, pairs: np.ndarray, seasons: list[int]) -> None:
    """statistical_forecasts in a worker process; sends ("ok", (baselines, the lines it
    reported)) or ("error", why) back."""
    lines: list[str] = []
    out = Baselines()
    try:
        statistical_forecasts(data, pairs, seasons, out, lines.append, clock=time.process_time)
        connection.send(("ok", (out, lines)))
    except Exception as exc:  # sent back: the parent computes them itself and says why
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        connection.close()


def start(
    data: ForecastData,
    pairs: np.ndarray,
    seasons: Sequence[int],
    *,
    statistical: bool = True,
    background: bool = True,
    report: Callable[[str], None] = print,
) -> Pending:
    """`compute_baselines`, with the statistical baselines of a long series (BACKGROUND_MIN_ROWS)
    started in a worker process when `background` and this process may use two cores: the caller
    trains meanwhile and calls `result()` when it needs them. The naive ones are computed here at
    once. Otherwise everything is computed before returning."""
    if not (statistical and background and len(data.targets) >= BACKGROUND_MIN_ROWS and _cores() >= 2):
        return Pending(compute_baselines(data, pairs, seasons, statistical=statistical, report=report), report)
    import multiprocessing

    baselines = compute_baselines(data, pairs, seasons, statistical=False, report=report)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, not a fork of torch's threads
    receive, send = context.Pipe(duplex=False)
    worker = context.Process(
        target=_statistical_in_worker,
        args=(send, data, np.asarray(pairs), [int(s) for s in seasons]),
        name="seqserve-baselines",
        daemon=True,
    )
    worker.start()
    send.close()  # the worker holds its end: recv() then sees EOF if it dies
    report("baselines: the statistical ones run in a worker process while the network trains")
    return Pending(
        baselines,
        report,
        worker,
        receive,
        fallback=lambda: statistical_forecasts(data, pairs, seasons, baselines, report),
    )


def _cores() -> int:
    """CPU cores this process may run on."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
