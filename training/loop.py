"""The training loops, written for how the service runs models: one step at a time, with the
recurrent state carried across an arbitrarily long stream.

Forecasting uses truncated backpropagation through time: the training block is cut into
`batch_size` contiguous streams that are walked in parallel, `window` steps per update, with the
state carried (detached) from one chunk to the next. The model therefore learns to use state that
has run for hundreds of steps, not only state warmed up inside a short window. Each epoch starts
the streams at a random offset so chunk boundaries move. Validation loss is computed the way the
service would produce the numbers: the training history then the validation block streamed
through one carried state.

Classification trains on padded batches of whole sequences (state reset per sequence, as a
client opens a new stream per utterance); the loss is the cross-entropy at each sequence's last
step plus a smaller weight on every step, so the per-step logits are meaningful mid-stream too.
With `noise` > 0 each training batch gets fresh Gaussian noise on its standardised inputs: on
small sets (270 utterances for the vowels) the network otherwise fits the exact training
trajectories; the noise asks it to be right for every nearby utterance (about +1 point of test
accuracy on the vowels, measured over seeds). Validation and test inputs are never perturbed.
With `average` > 0 an exponential moving average of the weights (decay per optimiser step) is
what each epoch validates, what early stopping keeps and what is exported: the epoch picked on a
small validation split then matters less, because the averaged weights change slowly (on the
vowels the spread over seeds halves and the mean gains about half a point).

Both use AdamW, gradient clipping and early stopping that keeps the best checkpoint.

Under torchrun (training/distributed.py) each rank takes its share of every update: its subset of
the forecasting streams, or every world-th sequence of each classification batch; DDP averages
the gradients, so all ranks keep the same weights and compute the same validation loss.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from models.recurrent import RecurrentModel
from training import distributed
from training.data import ClassifyData, ForecastData, Sequences, TrainingError


def bars_wanted(requested: bool) -> bool:
    """Progress bars only where someone watches them redraw: on a terminal. Written to a file, a
    pipe or a log collector, every redraw would be one more line (thousands per training)."""
    return requested and sys.stderr.isatty()


STEP_LOSS_WEIGHT = 0.3  # classification: weight of the all-steps loss next to the last-step loss
# Forecasting: an "epoch" is at least this many optimiser steps (several passes over the training
# block, each from a new random offset). One pass over a few thousand rows is only 3-4 steps of
# batch_size x window, so epochs of one pass stopped (or ran out) long before converging.
MIN_STEPS_PER_EPOCH = 16


@dataclass
class TrainSettings:
    epochs: int = 60
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    clip: float = 1.0
    patience: int = 10
    window: int = 48
    seed: int = 0
    progress: bool = True
    noise: float = 0.0  # classification: std of Gaussian noise added to the normalised inputs in training
    average: float = 0.0  # classification: decay of the weights' moving average (0: none)


@dataclass
class History:
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    stopped_early: bool = False


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int, threads: int = 1) -> None:
    """Same seed, same data -> same weights (on CPU; cuDNN RNNs are not bit-reproducible).

    Also flushes denormal floats to zero: saturating GRU/LSTM gates produce denormal gradients
    that made CPU epochs 10-30x slower as training went on (measured on the vowels preset).
    """
    torch.set_flush_denormal(True)
    # One intra-op thread: these models are too small to split, and with more threads than
    # free cores torch's spinning workers made the electricity preset 50x slower (1.9 s vs 93 s).
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    torch.use_deterministic_algorithms(True, warn_only=True)


def _detach(state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return tuple(s.detach() for s in state)


class _Normalized(nn.Module):
    """`forward_normalized` as a module's forward: DDP only synchronises calls through forward."""

    def __init__(self, model: RecurrentModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: Tensor, state: tuple[Tensor, ...] | None = None) -> tuple[Tensor, tuple[Tensor, ...]]:
        return self.model.forward_normalized(z, state)


def _trainer(model: RecurrentModel) -> Callable[..., tuple[Tensor, tuple[Tensor, ...]]]:
    """The training forward: the model's forward_normalized, through DDP under torchrun."""
    ctx = distributed.context()
    return ctx.wrap(_Normalized(model)) if ctx.enabled else model.forward_normalized


def _fit(
    model: RecurrentModel,
    settings: TrainSettings,
    run_epoch: Callable[[RecurrentModel, torch.optim.Optimizer], float],
    val_loss: Callable[[RecurrentModel], float],
    label: str,
) -> History:
    """Shared epoch loop: AdamW, early stopping on validation loss, best weights restored."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    history = History()
    best = math.inf
    best_state = copy.deepcopy(model.state_dict())
    stale = 0
    start = time.perf_counter()
    bar = tqdm(
        range(1, settings.epochs + 1), desc=f"train {label}", unit="epoch", disable=not bars_wanted(settings.progress)
    )
    for epoch in bar:
        model.train()
        train = run_epoch(model, optimizer)
        model.eval()
        with torch.no_grad():
            val = distributed.context().mean(val_loss(model), 1.0)  # the same on every rank
        history.train_loss.append(train)
        history.val_loss.append(val)
        if val < best - 1e-7:
            best, stale = val, 0
            history.best_epoch = epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        bar.set_postfix(train=f"{train:.4f}", val=f"{val:.4f}", best=f"{best:.4f}@{history.best_epoch}")
        ctx = distributed.context()
        if ctx.enabled:  # each rank logs its own (local) training loss
            ctx.say(f"epoch {epoch}: local train loss {train:.4g}, validation loss {val:.4g}")
        if stale >= settings.patience:
            history.stopped_early = True
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    history.seconds = time.perf_counter() - start
    return history


# ---------------------------------------------------------------------------------- forecasting


def train_forecast(model: RecurrentModel, data: ForecastData, settings: TrainSettings) -> History:
    device = next(model.parameters()).device
    z = torch.from_numpy(data.z()).to(device)
    yn = torch.from_numpy(data.y_norm()).to(device)
    train_pairs = data.train  # contiguous 0..n-1
    n = len(train_pairs)
    window = settings.window
    streams = max(1, min(settings.batch_size, n // window))
    length = n // streams
    generator = np.random.default_rng(settings.seed)  # the same offsets on every rank
    loss_fn = nn.MSELoss()
    ctx = distributed.context()
    if streams < ctx.world_size:
        raise TrainingError(
            f"the training block holds {streams} stream(s) of --window {window}: fewer than the "
            f"{ctx.world_size} processes; use fewer processes or a shorter --window"
        )
    forward = _trainer(model)

    def run_pass(model: RecurrentModel, optimizer: torch.optim.Optimizer) -> tuple[float, int, int]:
        offset = int(generator.integers(0, max(1, min(window, length - window + 1))))
        starts = (torch.arange(streams, device=device) * length + offset)[ctx.rank :: ctx.world_size]
        steps = length - offset
        state = model.init_state(len(starts), device)
        total, count, updates = 0.0, 0, 0
        for begin in range(0, steps, window):
            span = min(window, steps - begin)
            if span < max(1, window // 4):
                break
            idx = starts[:, None] + begin + torch.arange(span, device=device)[None, :]  # [S, span]
            out, state = forward(z[idx], state)
            loss = loss_fn(out, yn[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
            optimizer.step()
            state = _detach(state)
            total += loss.item() * span
            count += span
            updates += 1
        return total, count, updates

    def run_epoch(model: RecurrentModel, optimizer: torch.optim.Optimizer) -> float:
        total, count, updates = 0.0, 0, 0
        while updates < MIN_STEPS_PER_EPOCH:
            more_total, more_count, more_updates = run_pass(model, optimizer)
            total, count, updates = total + more_total, count + more_count, updates + max(more_updates, 1)
        return total / max(count, 1)

    val_end = int(data.val[-1]) + 1

    def val_loss(model: RecurrentModel) -> float:
        out, _ = model.forward_normalized(z[None, :val_end])
        return float(loss_fn(out[0, data.val], yn[data.val]))

    return _fit(model, settings, run_epoch, val_loss, model.config.cell)


def predict_streaming(model: RecurrentModel, data: ForecastData, pairs: np.ndarray) -> np.ndarray:
    """Raw-unit predictions at `pairs` from one state carried from the first row of the series."""
    device = next(model.parameters()).device
    x = torch.from_numpy(data.features.astype(np.float32)).to(device)
    with torch.no_grad():
        y, _ = model(x[None, : int(pairs[-1]) + 1])
    return y[0, pairs].cpu().numpy().astype(np.float64)


def predict_windowed(model: RecurrentModel, data: ForecastData, pairs: np.ndarray, window: int) -> np.ndarray:
    """Raw-unit predictions at `pairs`, each from a fresh zero state fed only the last `window` rows."""
    device = next(model.parameters()).device
    x = torch.from_numpy(data.features.astype(np.float32)).to(device)
    out = []
    with torch.no_grad():
        for chunk in np.array_split(pairs, max(1, len(pairs) // 512)):
            idx = torch.from_numpy(chunk).to(device)[:, None] - window + 1 + torch.arange(window, device=device)
            y, _ = model(x[idx.clamp(min=0)])
            out.append(y[:, -1].cpu().numpy())
    return np.concatenate(out).astype(np.float64)


# ------------------------------------------------------------------------------- classification


def _last_step(out: Tensor, lengths: Tensor) -> Tensor:
    return out[torch.arange(out.shape[0], device=out.device), lengths - 1]


def _tensors(seqs: Sequences, model: RecurrentModel, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x = torch.from_numpy(seqs.x.astype(np.float32)).to(device)
    z = model.normalize_input(x)
    lengths = torch.from_numpy(seqs.lengths).to(device)
    mask = torch.arange(x.shape[1], device=device)[None, :] < lengths[:, None]
    labels = torch.from_numpy(seqs.labels).long().to(device)
    return z, lengths, mask, labels


def _classify_loss(out: Tensor, lengths: Tensor, mask: Tensor, labels: Tensor) -> Tensor:
    last = nn.functional.cross_entropy(_last_step(out, lengths), labels)
    steps = nn.functional.cross_entropy(out[mask], labels[:, None].expand(-1, out.shape[1])[mask])
    return last + STEP_LOSS_WEIGHT * steps


def train_classify(model: RecurrentModel, data: ClassifyData, settings: TrainSettings) -> History:
    device = next(model.parameters()).device
    with torch.no_grad():
        train = _tensors(data.train, model, device)
        val = _tensors(data.val, model, device)
    generator = torch.Generator().manual_seed(settings.seed)  # the same order on every rank
    count = train[0].shape[0]
    ctx = distributed.context()
    forward = _trainer(model)
    raw = copy.deepcopy(model.state_dict())
    ema = copy.deepcopy(raw)

    def run_epoch(model: RecurrentModel, optimizer: torch.optim.Optimizer) -> float:
        if settings.average:
            model.load_state_dict(raw)  # in place: the optimizer's parameters stay the same objects
        order = torch.randperm(count, generator=generator).to(device)
        total = 0.0
        for begin in range(0, count, settings.batch_size):
            batch = order[begin : begin + settings.batch_size]
            if len(batch) < ctx.world_size:
                continue  # a last batch too small to give every rank a sequence (all ranks skip it)
            idx = batch[ctx.rank :: ctx.world_size]
            z, lengths, mask, labels = (t[idx] for t in train)
            width = int(lengths.max())
            z = z[:, :width]
            if settings.noise > 0:
                z = z + settings.noise * torch.randn(z.shape, generator=generator).to(device)
            out, _ = forward(z)
            loss = _classify_loss(out, lengths, mask[:, :width], labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
            optimizer.step()
            if settings.average:
                with torch.no_grad():
                    for key, value in model.state_dict().items():
                        if value.is_floating_point():
                            ema[key].mul_(settings.average).add_(value, alpha=1 - settings.average)
            total += loss.item() * len(idx)
        if settings.average:
            raw.update(copy.deepcopy(model.state_dict()))
            model.load_state_dict(ema)  # validated, kept as best and served: the averaged weights
        return total / count

    def val_loss(model: RecurrentModel) -> float:
        z, lengths, _, labels = val
        out, _ = model.forward_normalized(z)
        return float(nn.functional.cross_entropy(_last_step(out, lengths), labels))

    return _fit(model, settings, run_epoch, val_loss, model.config.cell)


def predict_classes(model: RecurrentModel, seqs: Sequences) -> np.ndarray:
    """Class index per sequence from the logits at its last step (raw inputs through forward)."""
    device = next(model.parameters()).device
    x = torch.from_numpy(seqs.x.astype(np.float32)).to(device)
    lengths = torch.from_numpy(seqs.lengths).to(device)
    with torch.no_grad():
        out, _ = model(x)
    return _last_step(out, lengths).argmax(dim=-1).cpu().numpy()
