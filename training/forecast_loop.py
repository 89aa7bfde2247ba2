"""Training the history-state forecaster (models/forecaster.py) the way it is served.

Truncated backpropagation through time with the state carried: `streams` parallel streams walk
the training origins `chunk` steps per optimiser step, state (h, c, ring, count, phase) detached
between chunks. A stream that reaches the end restarts at a random row with a fresh h/c and its
ring filled from the rows before that point (fewer than K when it restarts early, so warm-up is
trained too); its first `burn_in` steps are left out of the loss while h/c settle. A share of
restarts (`phase_dropout`) hides the phase, so the same weights serve sessions without a
start_time.

Loss: L1 on each lead, divided by that lead's residual scale. AdamW, cosine learning rate over
the step budget, gradient clipping. Every `eval_every` steps the whole series is streamed from a
fresh state (phase known from row 0) up to the end of the validation block, exactly as a served
session would see it; the MAE over the validation origins picks the best checkpoint; training
stops after `patience` evaluations without improvement. The budget is in optimiser steps, so a
run is reproducible on any machine.

Under torchrun (training/distributed.py) the same loop runs on every rank: `streams` is the
global batch and each rank walks its share, the model is wrapped in DDP (gradients averaged by
all-reduce), and the validation MAE and training loss are summed over ranks, so all ranks take
the same early-stopping and checkpoint decisions.

Many series (a global model, training/series.py): the loop works on a list of `Segment`s, one
per series (one in all for a single series). A restarting stream picks a series with
probability proportional to its training origins, so it never reads across two series;
validation streams every series from its own first row with a fresh state, and each series'
errors (and training loss) are divided by its `weight` (its training-block naive MAE), so every
series counts by its relative error whatever its units.
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from models.forecaster import Forecaster, history_parts, work_units
from models.holt_winters import states_before
from training import distributed
from training.data import ForecastData
from training.loop import History, bars_wanted


@dataclass
class ForecastTrainSettings:
    steps: int = 2000  # optimiser steps (upper bound; early stopping may end sooner)
    streams: int = 32
    chunk: int = 48
    lr: float = 1e-3
    weight_decay: float = 0.01
    clip: float = 1.0
    eval_every: int = 25
    patience: int = 30  # evaluations without improvement before stopping
    burn_in: int = 48
    phase_dropout: float = 0.25
    seed: int = 0
    progress: bool = True


@dataclass
class StepHistory(History):
    """History with steps: `train_loss`/`val_loss` per evaluation, `best_epoch` = best evaluation."""

    steps_run: int = 0
    best_step: int = 0
    eval_every: int = 0
    best_is_last: bool = False
    distributed: dict = field(default_factory=dict)  # type: ignore[type-arg]  # world, per-rank timings


@dataclass
class Segment:
    """One series as the loop sees it: raw readings, the targets of each origin, the last
    training origin, the validation origins, the phase of row 0 and the error divisor."""

    x: np.ndarray  # [n, F] raw readings
    y: np.ndarray  # [P, horizon] targets of origin t (t+1..t+h)
    last_train: int  # last training origin
    val: np.ndarray  # validation origins
    start_time: float | None = None  # time of row 0 (sets the phase), None: unknown
    weight: float = 1.0  # errors of this series are divided by it (1: raw units)
    key: str = ""

    @classmethod
    def of(cls, data: ForecastData, start_time: float | None, weight: float = 1.0, key: str = "") -> Segment:
        return cls(
            data.features.astype(np.float32),
            data.y,
            int(data.train[-1]),
            data.val,
            start_time,
            weight,
            key,
        )


class _Streams:
    """Where each TBPTT stream is (which series, which row) and how to restart it."""

    def __init__(self, model: Forecaster, segments: list[Segment], settings: ForecastTrainSettings) -> None:
        self.model, self.settings = model, settings
        self.spec = model.spec
        self.segments = segments
        longest = max(s.last_train for s in segments)
        chunk = min(settings.chunk, max(1, (longest + 1) // 2))
        self.chunk = chunk
        # Series that hold at least one chunk of training origins, drawn by their share of them.
        self.usable = np.array([i for i, s in enumerate(segments) if s.last_train + 2 - chunk > 0])
        sizes = np.array([segments[i].last_train + 2 - chunk for i in self.usable], dtype=np.float64)
        self.share = sizes / sizes.sum()
        ctx = distributed.context()
        # A single process keeps its historical stream (seed); ranks draw from (seed, rank).
        self.rng = np.random.default_rng([settings.seed, ctx.rank] if ctx.enabled else settings.seed)
        n = ctx.shard_count(settings.streams)
        if n < 1:
            from training.data import TrainingError

            raise TrainingError(
                f"--batch-size {settings.streams} gives rank {ctx.rank} of {ctx.world_size} no stream: "
                "use a batch size of at least the number of processes"
            )
        self.seg = np.zeros(n, dtype=np.int64)
        self.pos = np.zeros(n, dtype=np.int64)
        self.since = np.zeros(n, dtype=np.int64)
        self.state = [torch.from_numpy(s) for s in model.config.initial_state(n)]
        self.phase0 = [self._phase0(s) for s in segments]
        # A Holt-Winters baseline's state depends on every reading before a restart point:
        # computed once per series (models/holt_winters.states_before).
        smoothing = self.spec.smoothing
        self.smoothed = (
            [states_before(work_units(self.spec, s.x[:, self.spec.target_index]), smoothing) for s in segments]
            if smoothing
            else []
        )
        for i in range(n):
            self.restart(i)

    def _phase0(self, segment: Segment) -> float:
        """Phase of the segment's row 0 (-1 unknown); 0 for a single series without a clock."""
        clock = self.model.config.clock
        if clock is not None and segment.start_time is not None:
            return clock.phase(segment.start_time)
        return 0.0 if len(self.segments) == 1 else -1.0

    def restart(self, i: int) -> None:
        spec, k_ring = self.spec, self.spec.ring
        # One series: the historical stream of draws; several: pick the series first.
        k = 0 if len(self.segments) == 1 else int(self.usable[self.rng.choice(len(self.usable), p=self.share)])
        segment = self.segments[k]
        p = int(self.rng.integers(0, segment.last_train + 2 - self.chunk))
        cells = self.model.cell_states
        for s in self.state[:cells]:
            s[:, i] = 0.0
        ring = np.zeros(k_ring, np.float32)
        past = segment.x[max(0, p - k_ring) : p, spec.target_index]
        if len(past):
            ring[-len(past) :] = past
        parts = history_parts(self.model.config, self.state)  # views into the state, either layout
        parts["ring"][0, i] = torch.from_numpy(ring)
        parts["count"][0, i] = float(min(p, k_ring + 1))
        if spec.cycle:
            hidden = self.rng.random() < self.settings.phase_dropout or self.phase0[k] < 0
            parts["phase"][0, i] = -1.0 if hidden else float((self.phase0[k] + p) % spec.cycle)
        if self.smoothed:  # the Holt-Winters state a session would hold at row p
            parts["smoothed"][0, i] = torch.from_numpy(self.smoothed[k][p].astype(np.float32))
        self.seg[i], self.pos[i], self.since[i] = k, p, 0

    def batch(self) -> tuple[Tensor, Tensor, Tensor]:
        for i in range(len(self.pos)):
            if self.pos[i] + self.chunk - 1 > self.segments[self.seg[i]].last_train:
                self.restart(i)
        steps = np.arange(self.chunk)
        x = np.stack([self.segments[k].x[p + steps] for k, p in zip(self.seg, self.pos, strict=True)])
        y = np.stack([self.segments[k].y[p + steps] for k, p in zip(self.seg, self.pos, strict=True)])
        y = y.astype(np.float32)
        mask = (self.since[:, None] + steps[None, :]) >= self.settings.burn_in
        self.pos += self.chunk
        self.since += self.chunk
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(mask)

    def weights(self) -> Tensor:
        """[streams, 1, 1] error divisor of each stream's series."""
        return torch.tensor([self.segments[k].weight for k in self.seg], dtype=torch.float32)[:, None, None]


STREAM_BATCH_ELEMENTS = 8_000_000  # series x steps x ring per batched call (the graph's lag table)


def stream_many(model: Forecaster, segments: list[Segment], ends: list[int]) -> list[np.ndarray]:
    """[end_i, horizon] forecasts at origins 0..end_i-1 of every segment, each from a fresh state
    with its own phase, as one session per series would produce them. Series of similar length
    are batched together (the shorter ones padded at the end, which cannot change their earlier
    outputs), in groups small enough for the graph's [series, steps, ring] lag table."""
    out: list[np.ndarray | None] = [None] * len(segments)
    order = sorted(range(len(segments)), key=lambda i: ends[i])
    width = model.spec.ring + 1
    group: list[int] = []

    def flush() -> None:
        longest = max(ends[i] for i in group)
        x = np.stack(
            [
                np.concatenate(
                    [segments[i].x[: ends[i]], np.repeat(segments[i].x[ends[i] - 1 : ends[i]], longest - ends[i], 0)]
                )
                for i in group
            ]
        )
        states = [model.init_state(1, start_time=segments[i].start_time) for i in group]
        state = tuple(torch.cat([st[j] for st in states], dim=1) for j in range(len(states[0])))
        with torch.no_grad():
            y, _ = model(torch.from_numpy(x.astype(np.float32)), state)
        made = y.numpy().astype(np.float64)
        for row, i in enumerate(group):
            out[i] = made[row, : ends[i]]
        group.clear()

    for i in order:  # ascending length: the group's longest is the one just added
        if group and (len(group) + 1) * ends[i] * width > STREAM_BATCH_ELEMENTS:
            flush()
        group.append(i)
    if group:
        flush()
    return [o for o in out if o is not None]


def validation_errors(model: Forecaster, segments: list[Segment]) -> np.ndarray:
    """|forecast - actual| / weight at every validation origin of every segment (flattened)."""
    ends = [int(s.val[-1]) + 1 for s in segments]
    if len(segments) == 1:  # the historical single-series path
        s = segments[0]
        x = torch.from_numpy(s.x[: ends[0]])[None]
        with torch.no_grad():
            y, _ = model(x, model.init_state(1, start_time=s.start_time))
        preds = [y[0].numpy().astype(np.float64)]
    else:
        preds = stream_many(model, segments, ends)
    return np.concatenate(
        [(np.abs(p[s.val] - s.y[s.val]) / s.weight).ravel() for p, s in zip(preds, segments, strict=True)]
    )


def stream_forecasts(model: Forecaster, data: ForecastData, end: int, start_time: float | None) -> np.ndarray:
    """[end, horizon] forecasts at origins 0..end-1 from one fresh state, as a session would
    produce them reading the series from its first row (phase from `start_time` when known)."""
    x = torch.from_numpy(data.features[:end].astype(np.float32))[None]
    with torch.no_grad():
        y, _ = model(x, model.init_state(1, start_time=start_time))
    return y[0].numpy().astype(np.float64)


def train_forecaster(
    model: Forecaster,
    data: ForecastData | list[Segment],
    settings: ForecastTrainSettings,
    start_time: float | None = None,
) -> StepHistory:
    """Train on one series (`data` a ForecastData, phase of row 0 from `start_time`) or on many
    (`data` a list of Segments, each with its own start time and weight)."""
    ctx = distributed.context()
    segments = [Segment.of(data, start_time)] if isinstance(data, ForecastData) else data
    streams = _Streams(model, segments, settings)
    net = ctx.wrap(model)  # DDP under torchrun: backward all-reduces the gradients
    if ctx.enabled:  # dropout masks differ across ranks (as their streams do), reproducibly
        torch.manual_seed(int(np.random.SeedSequence([settings.seed, ctx.rank]).generate_state(1)[0]))
    scale = model.scale.clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    total = max(1, settings.steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    )

    def validate() -> float:
        """Validation MAE over every rank's validation origins (identical on all ranks)."""
        model.eval()
        errors = validation_errors(model, segments)
        model.train()
        return ctx.mean(float(errors.sum()), float(errors.size))

    history = StepHistory(eval_every=settings.eval_every)
    best = validate()
    history.val_loss.append(best)
    history.train_loss.append(float("nan"))
    best_state = copy.deepcopy(model.state_dict())
    stale, running, counted = 0, 0.0, 0
    ctx.barrier()  # ranks start together: the timings below are training, not set-up skew
    ctx.timer = distributed.CommTimer()
    start = time.perf_counter()
    model.train()
    show = settings.progress and not ctx.enabled  # interleaved bars of several ranks are unreadable
    bar = tqdm(range(1, total + 1), desc=f"train {model.config.cell}", unit="step", disable=not bars_wanted(show))
    for step in bar:
        x, y, mask = streams.batch()
        began = time.perf_counter()
        out, new_state = net(x, tuple(streams.state))
        # in the units the residual scale is in (logs for a log spec: a relative error)
        err = ((model.work(out) - model.work(y)).abs() / scale / streams.weights()).mean(-1)
        weight = mask.to(err.dtype)
        loss = (err * weight).sum() / weight.sum().clamp(min=1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
        optimizer.step()
        ctx.timer.step += time.perf_counter() - began
        ctx.timer.steps += 1
        schedule.step()
        streams.state = [s.detach() for s in new_state]
        running += loss.item()
        counted += 1
        history.steps_run = step
        if step % settings.eval_every == 0 or step == total:
            local = running / max(counted, 1)
            train_loss = ctx.mean(running, counted)
            val = validate()
            history.train_loss.append(train_loss)
            history.val_loss.append(val)
            if ctx.enabled:
                ctx.say(
                    f"step {step}/{total}: {len(streams.pos)} streams, local train loss {local:.4g}, "
                    f"global train loss {train_loss:.4g}, validation MAE {val:.4g}"
                )
            running, counted = 0.0, 0
            if not math.isfinite(val):
                break
            if val < best - 1e-9:
                best, stale = val, 0
                history.best_step = step
                history.best_epoch = len(history.val_loss) - 1
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
            bar.set_postfix(val=f"{val:.4g}", best=f"{best:.4g}@{history.best_step}")
            if stale >= settings.patience:
                history.stopped_early = True
                break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    history.seconds = time.perf_counter() - start
    history.best_is_last = history.best_step == history.steps_run and history.steps_run > 0
    if ctx.enabled:
        history.distributed = _job_record(ctx, history.seconds)
    if history.best_is_last:
        warnings.warn(
            f"the best checkpoint is the last one (step {history.best_step}): the model was still improving; "
            "a larger budget (--epochs) would likely help",
            stacklevel=2,
        )
    return history


def _job_record(ctx: distributed.Context, seconds: float) -> dict:  # type: ignore[type-arg]
    """Every rank's timings (gathered by a sum of one slot per rank) for the manifest and logs."""
    fields = 4
    slots = [0.0] * (fields * ctx.world_size)
    timer = ctx.timer
    slots[ctx.rank * fields : (ctx.rank + 1) * fields] = [seconds, timer.step, timer.allreduce, float(timer.steps)]
    gathered = ctx.sum(slots)
    ranks = []
    for rank in range(ctx.world_size):
        wall, step, allreduce, steps = gathered[rank * fields : (rank + 1) * fields]
        ranks.append(
            {
                "rank": rank,
                "seconds": round(wall, 3),
                "steps": int(steps),
                "step_seconds": round(step, 3),
                "allreduce_seconds": round(allreduce, 3),
                "compute_seconds": round(max(step - allreduce, 0.0), 3),
                "allreduce_share": round(allreduce / step, 4) if step > 0 else 0.0,
            }
        )
    ctx.say(f"timings: {json.dumps(timer.to_dict())}")
    return {
        "world_size": ctx.world_size,
        "backend": ctx.backend,
        "allreduce_bytes_per_step": timer.to_dict()["allreduce_bytes_per_step"],
        "ranks": ranks,
    }
