"""What a history-state forecaster computes, as plain data: lags, seasons, transform, constants.

The spec lives in `ModelConfig.extra["forecaster"]`, so the exported file describes its own
feature construction and the NumPy reference (models/reference.py) can rebuild it without torch.
Pure Python/NumPy: the serving image may import it.

Terms (y is the target's raw reading, t the reading just received):
- ring: the last K readings before y_t; `lag(L)` is y_{t-L}, L <= K.
- count: readings seen so far, capped at K + 1; lag L is *available* when count >= L + 1.
- phase: position of the *next* reading within `cycle` (the seasons' least common multiple);
  -1 means unknown (no start_time given), and stays -1.
- state layout (`layout`, written into the manifest with the spec): how these travel as state
  tensors after h (and c).
    1  one tensor each: ring [1, B, K], count [1, B, 1], phase [1, B, 1], pending [1, B, 4]
       (models exported before layout 2; still loaded, served and rebuilt as they are)
    2  one packed "history" [1, B, 1 (+4) + K] = [count, (pending,) ring], all zeros when fresh,
       and phase [1, B, 1] on its own (the clock writes it at a session's start). Fewer graph
       inputs and outputs (each costs about as much as several small nodes per call), and the
       lag convolution reads concat(history, y) directly (zero weights on count and pending).
    3  layout 2, and a model with the anomaly levels keeps a robust state update (below): its
       history is [count, pending, run, ring], `run` the far readings in a row (capped at
       `robust_run`). Without the anomaly levels the same tensors as layout 2.
- robust state update (layout 3 with the anomaly levels): a reading far outside the interval
  forecast for it, |y - c95| > robust_margin x h95 (c95, h95 the 95 % interval's centre and
  half-width in the pending state, the anomaly score's terms; once the session has read its
  whole ring, so that the forecast had every lag), enters the state (ring, seasonal
  and smoothing baselines, RNN input) as the 80 % interval's centre instead, kept within the
  range of the K readings before it as the state took them (so the state stays within the
  range of the readings: a model with poor forecasts cannot feed on its own forecasts), unless it is the
  robust_run-th far reading in a row (or a later one of that run): a level shift is accepted
  from then on. Its anomaly flag and score are still the raw reading's. The rule depends on the
  bounds forecast one step earlier, which depend on the readings that entered the state, so a
  chunk is cleaned to a fixed point (models/forecaster.py `Forecaster.graph_outputs`).
- transform: the baseline the network corrects, per lead k (all in raw units):
    none           the training mean (the network sees levels; for series without trend)
    diff           y_t (last value)
    seasonal       y_{t+k-mS} (seasonal naive, S the longest season available)
    seasonal_diff  y_{t+k-mS} + m (y_t - y_{t-S}) ("last season's value plus this season's change")
    revin          the mean of the last K readings seen (per-window level); residual scale = their std
    smooth         l_t, simple exponential smoothing of the readings (flat over the leads):
                   l_t = sum_i w_i y_{t-i} / sum_i w_i over the readings seen among y_t and the
                   ring (i = 0..K), w_i = alpha (1 - alpha)^i, alpha fitted on the training block
                   (`smooth_alpha`). This is SES whose level is the ring's exponentially weighted
                   mean: the ring is long enough (SMOOTH_WINDOW) that the weights cut off are
                   negligible for the alphas fitted, and, being a function of the readings kept,
                   it survives any chunking and session export with no extra state. alpha = 1 is
                   the last value (naive).
    trend          l_t + (phi + ... + phi^k) b_t, exponential smoothing with a damped trend
                   (Holt, Gardner-McKenzie), alpha, beta and phi fitted on the training block:
                   l_t and b_t are the recursion's responses to the last W readings
                   (`smooth_window`; W = up to SMOOTH_WINDOW), a fixed weight per age
                   (holt_kernels), corrected so a constant gives that level and no trend and a
                   straight line gives its value and slope however few readings were seen.
    holt_winters   Holt-Winters exponential smoothing over every season (Taylor's double-seasonal
                   model with seasons 48 and 336; simple exponential smoothing without seasons)
                   plus an AR(1) adjustment of the one-step error, additive seasons
                   (`holt_winters_mult`: multiplicative). Its level and seasonal components are
                   carried in the `smoothed` state (models/holt_winters.py); until the longest
                   season has been read it answers the seasonal naive forecast.
- log: the target is forecast in logs (a season whose amplitude grows with the level becomes
  additive): every target reading r, in the ring or new, is read as ln(max(r, log_floor)), the
  baselines, columns and constants above are in those units, and the point forecasts and
  quantiles are exp() of the log ones (the ring and the replies stay raw). The forecast is then
  the median, not the mean, of a log-normal spread: the right point for absolute errors.
- local_scale (with diff, seasonal or seasonal_diff): the residual scale, the analog columns and
  the RNN's difference inputs are divided by the session's own scale, the mean absolute one-step
  change among the readings in the ring (and y_t), so one model serves series of any scale
  without per-series parameters (a global model over many series).
  While the ring is filling up, seasons whose lags are not yet available are skipped, shortest
  last, ending at the last value: the first K steps answer from what the session has seen.
- analog columns, per lead k and lag L: the lead change y_{t+k-L} - y_{t-L} (only for L >= k)
  and the gap y_t - y_{t-L}. The network outputs one weight per column and a bias per lead;
  forecast_k = base_k + scale_k * (bias_k + sum_c w_kc * column_kc / column_std_kc).
- quantiles (config.quantiles, levels tau ascending): a second linear head gives r_kj per lead
  and level; with u_k = scale_k (x the local scale) and softplus offsets accumulated outward
  from the point forecast p_k,
      tau > 0.5:  p_k + u_k * (sum over 0.5 < tau_i <= tau of softplus(r_ki) + shift_kj)
      tau < 0.5:  p_k - u_k * (sum over tau <= tau_i < 0.5 of softplus(r_ki)) + u_k * shift_kj
      tau = 0.5:  p_k + u_k * (r_kj + shift_kj)
  then a running maximum over the levels, so the quantiles are monotone whatever the shifts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from models.holt_winters import Smoothing

TRANSFORMS = (
    "none",
    "diff",
    "seasonal",
    "seasonal_diff",
    "revin",
    "smooth",
    "trend",
    "holt_winters",
    "holt_winters_mult",
)
# Transforms whose baseline is a level (not the last value): the level column and RNN input.
LEVEL_TRANSFORMS = ("none", "revin", "smooth", "trend")
# The ring a smoothing forecaster keeps (unless the series is too short for it): (1 - alpha)^48
# is under 1 % for alpha >= 0.1, so the cut-off weights hardly matter.
SMOOTH_WINDOW = 48
# The smoothing constants tried on the training block (1.0: the last value).
SMOOTH_ALPHAS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# The damped trend's grid (transform "trend"): level alpha, trend beta, damping phi.
TREND_ALPHAS = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
TREND_BETAS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
TREND_PHIS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
# Transforms whose baseline is a Holt-Winters formula carried in a state (models/holt_winters.py).
HOLT_WINTERS = ("holt_winters", "holt_winters_mult")
SHORT_LAGS = (1, 2, 3)
MAX_BLOCKS = 14  # one-hot "day of week" style blocks when long/short season ratio is this or less
HARMONICS = 2
MAX_CYCLE = 100_000
LAYOUT = 3  # the state layout new forecasters are built with (see the module docstring)
LAYOUTS = (1, 2, 3)
PENDING = 4  # values of the `pending` part (anomaly levels' bounds, forecast for the next reading)
# The robust state update of layout 3 (module docstring): a reading beyond ROBUST_MARGIN 95 %
# half-widths from the interval's centre is replaced in the state, up to ROBUST_RUN - 1 in a row.
# Only gross errors: on the electricity series no ordinary reading is more than 2.65 half-widths
# out for a trained model and 4.41 for the untrained seasonal_diff formula's band, while a reading
# ten times too large is hundreds out (docs/quality.md). A margin of 2 replaced 81 of 3428 readings
# of that formula: each a forecast in the ring, read back a week later as the seasonal lag, which
# put the same reading out again (validation MAE 120 -> 170); ordinary tail readings must stay.
ROBUST_MARGIN = 5.0
ROBUST_RUN = 3
# The most readings a robust forecaster's graph is given in one call by the service and the
# evaluations (models/chunks.py): its fixed point takes one more pass over the whole chunk for
# each far reading that moves a later one's bounds, so a chunk of T readings can cost T passes of
# T steps (1,600 readings with every third one ten times too large: 64 s in one call). In chunks
# carrying the state, the same numbers, and at most this many passes of this many steps a chunk.
ROBUST_CHUNK_STEPS = 32


def positive_reason(log: bool, transform: str) -> str | None:
    """Why a forecaster accepts only positive readings of its target, or None when it takes any.
    In logs a reading r is read as ln(max(r, log_floor)): 0 or a negative reading becomes a
    level near ln(log_floor) and wrecks the state (the next forecasts near 0, the following
    ordinary readings flagged as anomalies). Multiplicative seasons divide by the level: a
    level of 0 turns the seasonal factors into garbage (point and quantiles disagree, negative
    quantiles). The service refuses such readings instead (service/core/validate.py)."""
    reasons = []
    if log:
        reasons.append("forecasts in logs")
    if transform == "holt_winters_mult":
        reasons.append("forecasts with multiplicative seasons")
    return " and ".join(reasons) or None


class SpecError(ValueError):
    """Settings that cannot make a forecaster (the message names the problem)."""


@dataclass(frozen=True)
class ForecastSpec:
    target_index: int  # which input column is the target
    num_features: int  # input columns in all
    horizon: int
    seasons: tuple[int, ...]  # ascending, each >= 2
    transform: str
    ring: int  # K
    lags: tuple[int, ...]  # analog lags, ascending
    cycle: int  # phase wraps here; 0 = no phase state (no clock)
    blocks: int  # one-hot blocks of the longest season (0 = none)
    harmonics: int
    local_scale: bool = False  # scale by the ring's mean absolute change (see the module docstring)
    smooth_alpha: float = 1.0  # transforms "smooth" and "trend": the level's smoothing constant (fitted)
    trend_beta: float = 0.0  # transform "trend": the trend's smoothing constant (fitted)
    trend_phi: float = 1.0  # transform "trend": the damping (fitted)
    smooth_window: int = 0  # transform "trend": readings the level and trend are read from (W)
    log: bool = False  # forecast ln(target) (see the module docstring)
    log_floor: float = 1e-12  # readings below it are read as it (fitted: a share of the training minimum)
    # Holt-Winters transforms: the smoothing constants fitted on the training block (level,
    # one per season, the AR coefficient of the one-step error).
    hw_alpha: float = 1.0
    hw_gamma: tuple[float, ...] = ()
    hw_phi: float = 0.0
    # Constants fitted on the training block (1.0 until fitted).
    level_mean: float = 0.0
    level_std: float = 1.0
    dy_std: float = 1.0
    e_std: float = 1.0
    scale: tuple[float, ...] = ()  # per lead: std of the residual over the baseline
    column_std: tuple[tuple[float, ...], ...] = ()  # [horizon][columns]
    feature_mean: tuple[float, ...] = ()  # for the non-target inputs
    feature_std: tuple[float, ...] = ()
    # Per lead and quantile level (config.quantiles order): the split-conformal shift added to
    # each quantile, in units of that lead's residual scale (fitted on the validation block by
    # training/calibrate.py; () = none).
    quantile_shift: tuple[tuple[float, ...], ...] = ()
    # State layout (module docstring); 1 for manifests written before layouts were recorded.
    layout: int = 1
    # The robust state update (module docstring; layout 3, models with the anomaly levels): the
    # margin in 95 % half-widths and the far readings in a row that are accepted. 0: none (the
    # manifests written before it).
    robust_margin: float = 0.0
    robust_run: int = 0

    # ------------------------------------------------------------------ derived
    @property
    def positive_reason(self) -> str | None:
        """Why only positive target readings are accepted (None: any finite reading is)."""
        return positive_reason(self.log, self.transform)

    @property
    def other_features(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.num_features) if i != self.target_index)

    @property
    def short_season(self) -> int:
        return self.seasons[0] if self.seasons else 0

    @property
    def smoothing(self) -> Smoothing | None:
        """The Holt-Winters formula of a holt_winters transform (None for the others)."""
        if self.transform not in HOLT_WINTERS:
            return None
        gamma = self.hw_gamma or (0.0,) * len(self.seasons)
        return Smoothing(
            self.seasons, self.transform == "holt_winters_mult", self.hw_alpha, gamma, self.hw_phi, self.level_std
        )

    @property
    def columns(self) -> tuple[tuple[str, int], ...]:
        """(kind, lag) of each analog column, the same list for every lead; a lead column
        with L < k refers to the future and is held at zero (its column_std is 0)."""
        cols: list[tuple[str, int]] = [("lead", L) for L in self.lags]
        cols += [("gap", L) for L in self.lags]
        if self.transform in LEVEL_TRANSFORMS:
            cols.append(("level", 0))
        return tuple(cols)

    @property
    def rnn_inputs(self) -> int:
        n = 1  # dy
        if self.seasons:
            n += 2  # e (change against one short season ago), warm flag
        if self.transform in LEVEL_TRANSFORMS:
            n += 1  # level
        if self.cycle:
            n += 1 + 2 * self.harmonics * len(self.seasons) + self.blocks  # unknown flag, sin/cos, blocks
        return n + len(self.other_features)

    @property
    def head_outputs(self) -> int:
        return self.horizon * (len(self.columns) + 1)

    @property
    def readout_prefix(self) -> int:
        """Baseline channels the graph's head MatMul puts constant ones for (its outputs come
        after them) when the whole linear readout is one MatMul: last-value and seasonal
        baselines with a constant residual unit (models/forecaster.py); 0 otherwise."""
        if self.local_scale or self.transform not in ("diff", "seasonal", "seasonal_diff"):
            return 0
        return 1 if self.transform == "diff" else 1 + len(self.seasons) * self.horizon

    def robust(self, anomaly: bool) -> bool:
        """Whether a model with these specs (`anomaly`: it has the anomaly levels) keeps the
        robust state update (module docstring)."""
        return anomaly and self.layout >= 3 and self.robust_run > 0

    def history_slots(self, anomaly: bool) -> dict[str, tuple[int, int]]:
        """Layouts 2 and 3: where count, pending (with `anomaly`), run (robust) and ring sit
        on the packed history state's last axis, as [start, end) pairs; the width is the ring's end."""
        slots = {"count": (0, 1)}
        end = 1
        if anomaly:
            slots["pending"] = (end, end + PENDING)
            end += PENDING
        if self.robust(anomaly):
            slots["run"] = (end, end + 1)
            end += 1
        slots["ring"] = (end, end + self.ring)
        return slots

    def column_valid(self, lead: int, column: int) -> bool:
        kind, lag = self.columns[column]
        return kind != "lead" or lag >= lead

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ForecastSpec:
        data = dict(data)
        for key in ("seasons", "lags", "scale", "feature_mean", "feature_std", "hw_gamma"):
            data[key] = tuple(data.get(key, ()))
        data["column_std"] = tuple(tuple(row) for row in data.get("column_std", ()))
        data["quantile_shift"] = tuple(tuple(row) for row in data.get("quantile_shift", ()))
        if data.get("layout", 1) not in LAYOUTS:
            raise SpecError(f"forecaster state layout {data['layout']!r} is not one of {LAYOUTS} (a newer seqserve?)")
        spec = cls(**data)
        if spec.robust_run and (spec.layout < 3 or spec.robust_run < 1 or spec.robust_margin <= 0):
            raise SpecError(
                f"robust state update (margin {spec.robust_margin}, run {spec.robust_run}) needs layout 3, "
                "a positive margin and run"
            )
        return spec


def make_spec(
    *,
    target_index: int,
    num_features: int,
    horizon: int,
    seasons: tuple[int, ...] | list[int] | None,
    transform: str,
    phase: bool,
    history: int = 0,
    local_scale: bool = False,
    smooth_window: int = SMOOTH_WINDOW,
    layout: int = LAYOUT,
    log: bool = False,
) -> ForecastSpec:
    """The feature layout for the given seasons; constants are fitted later (fit_constants).
    `smooth_window`: the ring a "smooth" transform keeps at least (shorter for short series)."""
    seasons = tuple(sorted({int(s) for s in (seasons or ()) if int(s) >= 2}))
    if transform not in TRANSFORMS:
        raise SpecError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    if transform in ("seasonal", "seasonal_diff", "holt_winters_mult") and not seasons:
        raise SpecError(f"transform {transform!r} needs --season")
    if local_scale and transform in ("none", "revin"):
        raise SpecError(f"transform {transform!r} has no per-series scale from the history; use diff or a seasonal one")
    if history < 0:
        raise SpecError(f"history must be >= 0, got {history}")
    if layout not in LAYOUTS:
        raise SpecError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if seasons:
        short, long = seasons[0], seasons[-1]
        multiples = tuple(short * m for m in range(1, long // short + 1))
        # Quarter and half of the shortest season: smoother recent trends than lags 1-3.
        fractions = tuple(short // d for d in (4, 2) if short // d > max(SHORT_LAGS))
        lags = tuple(sorted({*SHORT_LAGS, *fractions, *multiples, *seasons}))
        ring = max(long, short + 1, max(lags))
        cycle = 0
        if phase:
            cycle = math.lcm(*seasons)
            if cycle > MAX_CYCLE:  # a phase that would need a huge cycle is left out
                cycle = 0
        ratio = long // short
        blocks = ratio if cycle and len(seasons) > 1 and long % short == 0 and ratio <= MAX_BLOCKS else 0
    else:
        lags = (1, 2, 3, 4)
        ring, cycle, blocks = max(lags), 0, 0
    ring = max(ring, history)
    window = 0
    if transform in ("smooth", "trend"):
        ring = max(ring, smooth_window)
    if transform == "trend":
        window = min(ring, smooth_window, SMOOTH_WINDOW) + 1  # y_t and up to SMOOTH_WINDOW before it
    return ForecastSpec(
        target_index=target_index,
        num_features=num_features,
        horizon=horizon,
        seasons=seasons,
        transform=transform,
        ring=ring,
        lags=lags,
        cycle=cycle,
        blocks=blocks,
        harmonics=HARMONICS if cycle else 0,
        local_scale=local_scale,
        smooth_window=window,
        layout=layout,
        log=log,
        robust_margin=ROBUST_MARGIN if layout >= 3 else 0.0,
        robust_run=ROBUST_RUN if layout >= 3 else 0,
    )


def holt_kernels(alpha: float, beta: float, phi: float, width: int) -> tuple[np.ndarray, np.ndarray]:
    """([width, width] level weights, [width, width] trend weights): row c - 1 for a session
    that has seen c readings of the last `width` (c = 1..width), column a for the reading of
    age a (0: y_t); zero for ages not seen.

    The damped-trend recursion (l_t = alpha y_t + (1 - alpha)(l + phi b),
    b_t = beta (l_t - l) + (1 - beta) phi b) is linear: its level and trend are sums of the
    readings weighted by its impulse response, A^a g with A = [[1 - alpha, (1 - alpha) phi],
    [-alpha beta, phi (1 - alpha beta)]] and g = [alpha, alpha beta]. Cut to the ages seen, each
    row is moved (least squares) to the nearest weights that read a constant as that level with
    no trend and a straight line as its value at t and its slope, which the full response does
    in the limit; one reading seen gives level y_t and trend 0."""
    a_matrix = np.array([[1.0 - alpha, (1.0 - alpha) * phi], [-alpha * beta, phi * (1.0 - alpha * beta)]])
    response = np.zeros((width, 2))
    v = np.array([alpha, alpha * beta])
    for age in range(width):
        response[age] = v
        v = a_matrix @ v
    level = np.zeros((width, width))
    trend = np.zeros((width, width))
    level[0, 0] = 1.0
    for c in range(2, width + 1):
        ages = np.arange(c, dtype=np.float64)
        basis = np.stack([np.ones(c), -ages], axis=1)  # a reading of age a on the line x = -a
        gram = basis.T @ basis
        for out, column, want in ((level, 0, (1.0, 0.0)), (trend, 1, (0.0, 1.0))):
            weights = response[:c, column]
            fix = np.linalg.solve(gram, np.asarray(want) - basis.T @ weights)
            out[c - 1, :c] = weights + basis @ fix
    return level, trend


def trend_damping(phi: float, horizon: int) -> np.ndarray:
    """[horizon] phi + phi^2 + ... + phi^k: how much of the trend lead k adds."""
    return np.cumsum(phi ** np.arange(1, horizon + 1, dtype=np.float64))
