"""Data-parallel training on torch.distributed (DDP), and the `--nproc N` local launcher.

Under `torchrun` (RANK, WORLD_SIZE and LOCAL_RANK in the environment) `seqserve train` becomes
one rank of a data-parallel job:

- the process group uses gloo on CPU and nccl when CUDA is present (each rank on the GPU of its
  LOCAL_RANK);
- the model is wrapped in DistributedDataParallel, so gradients are averaged across ranks by
  all-reduce during backward; every rank therefore holds the same weights after each step;
- the training work is sharded: `--batch-size` stays the *global* number of TBPTT streams per
  optimiser step and each rank walks its share of them (`shard_count`), with its own seeded
  random restarts; with several series (`--series-id`) each rank reads and trains on its own
  subset of the series (`load_shard`, `shard_items`);
- validation metrics are summed across ranks (`Context.mean`), so every rank sees the same
  number and early stopping and the best checkpoint are decided together, without a message;
- only rank 0 evaluates against the baselines, exports and publishes (atomically, as in a
  single-process run); the other ranks exit 0 once training ends.

A run is reproducible for a given seed *and world size*: each rank's random streams come from
(seed, rank), and the all-reduce of two ranks is order-independent. A different world size
draws different streams, so it gives a different (equally good) model.

`--nproc N` (N > 1) starts the job locally: it resolves the settings once (bad input fails
before any worker starts), writes them to a JSON config, and runs
`python -m torch.distributed.run --standalone --nproc-per-node N -m seqserve.cli train --config FILE`.
Rank 0 hands its exit code (0 promoted, 2 error, 3 written but not promoted) back through a file
named by SEQSERVE_TRAIN_STATUS, so the launcher exits as a single-process run would. Multi-node
jobs call torchrun directly (training/README.md).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATUS_ENV = "SEQSERVE_TRAIN_STATUS"
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass
class CommTimer:
    """Seconds spent in gradient all-reduce (launch to completion, including waiting for the
    slowest rank) and in the whole optimiser step, so compute = step - all-reduce."""

    allreduce: float = 0.0
    step: float = 0.0
    steps: int = 0
    calls: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, float]:
        compute = max(self.step - self.allreduce, 0.0)
        return {
            "steps": self.steps,
            "step_seconds": round(self.step, 4),
            "allreduce_seconds": round(self.allreduce, 4),
            "compute_seconds": round(compute, 4),
            "allreduce_share": round(self.allreduce / self.step, 4) if self.step > 0 else 0.0,
            "allreduce_calls": self.calls,
            "allreduce_bytes_per_step": self.bytes // max(self.steps, 1),
        }


@dataclass
class Context:
    """Where this process stands in the job; a single process is rank 0 of a world of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""
    timer: CommTimer = field(default_factory=CommTimer)
    owned: frozenset[str] | None = None  # the series keys this rank trains on (None: all)

    @property
    def enabled(self) -> bool:
        return bool(self.backend)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def label(self) -> str:
        return f"[rank {self.rank}/{self.world_size}] " if self.enabled else ""

    def say(self, message: str) -> None:
        """One log line, prefixed with the rank under torchrun, written with a single write: the
        ranks share one stdout pipe, and print's separate newline let their lines run together."""
        sys.stdout.write(f"{self.label()}{message}\n")
        sys.stdout.flush()

    def shard_count(self, total: int) -> int:
        """This rank's share of `total` interchangeable units (streams): as even as possible."""
        return total // self.world_size + (1 if self.rank < total % self.world_size else 0)

    def owns(self, key: str) -> bool:
        """Whether this rank trains on the series `key` (`load_shard` deals them out)."""
        return self.owned is None or key in self.owned

    def shard_items(self, items: list[Any]) -> list[Any]:
        """This rank's items (series) of an ordered list: every world_size-th, from its rank."""
        return items[self.rank :: self.world_size]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64 on the CPU, so every rank gets the same bits)."""
        if not self.enabled:
            return list(values)
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64)
        if self.backend == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.cpu()]

    def mean(self, total: float, count: float) -> float:
        """sum(total) / sum(count) over ranks: a metric over all ranks' shards."""
        summed, counted = self.sum([total, count])
        return summed / counted if counted else float("nan")

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (pickled): settings fitted on rank 0's shard that every
        rank must share exactly (the model config)."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value` (pickled), in rank order, on rank 0; an empty list elsewhere."""
        if not self.enabled:
            return [value]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, out, dst=0)
        return out or []

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def wrap(self, model: Any) -> Any:
        """DDP around `model` (the module itself when not distributed). Buffers (the fitted
        scales) are identical on every rank and never change in training: not re-broadcast
        on each forward. A comm hook times the all-reduce for the compute/communication split."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.local_rank] if self.backend == "nccl" else None
        # Newer torch names the flag forward_sync_buffers (buffers are still synced at init).
        newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        flag: dict[str, Any] = {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}
        # The quantile head is fitted after training (training/calibrate.py), so the point loss
        # leaves its parameters without gradients: DDP must be told, or its reducer waits for them.
        unused = getattr(model, "quantile_head", None) is not None
        ddp = DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=unused, **flag)
        # DDP inspects the hook's annotations (strings here): hand it an unannotated callable.
        ddp.register_comm_hook(self, lambda state, bucket: _timed_allreduce(state, bucket))
        return ddp

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _timed_allreduce(ctx: Context, bucket: Any) -> Any:
    """DDP's default average, with the time from launch to completion added to the timer."""
    import torch.distributed as dist

    start = time.perf_counter()
    buffer = bucket.buffer()
    ctx.timer.calls += 1
    ctx.timer.bytes += buffer.numel() * buffer.element_size()
    buffer.div_(ctx.world_size)
    future = dist.all_reduce(buffer, async_op=True).get_future()

    def done(fut: Any) -> Any:
        ctx.timer.allreduce += time.perf_counter() - start
        return fut.value()[0]

    return future.then(done)


_CONTEXT = Context()


def under_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_ENV)


def context() -> Context:
    """The process-wide context (rank 0 of 1 until `init` ran under torchrun)."""
    return _CONTEXT


def init() -> Context:
    """Join the process group when started by torchrun; a no-op otherwise."""
    global _CONTEXT
    if _CONTEXT.enabled or not under_torchrun():
        return _CONTEXT
    import torch
    import torch.distributed as dist

    rank, world, local = (int(os.environ[name]) for name in TORCHRUN_ENV)
    backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend)
    _CONTEXT = Context(rank=rank, world_size=world, local_rank=local, backend=backend)
    return _CONTEXT


def shutdown() -> None:
    global _CONTEXT
    _CONTEXT.close()
    _CONTEXT = Context()


SHARD_BATCH_ROWS = 100_000


def load_shard(path: str | Path, series_id: str, max_rows: int, *, whole: bool = False) -> Any:
    """This rank's rows of a long-format CSV or Parquet file: the whole table in one process.

    Under torchrun the series-id column alone is read first (every rank, so all agree); the
    sorted series keys are dealt round-robin (key i to rank i mod world, recorded in
    `Context.owned`) and the file is then streamed in batches keeping only this rank's series,
    so a rank holds about 1/world of the table. `max_rows` limits the shard, the part that is
    held in memory. `whole` (rank 0, which evaluates every series) reads the whole table but
    trains on its share all the same."""
    import pandas as pd

    from training.data import TrainingError, load_table

    ctx = context()
    if not ctx.enabled:
        return load_table(path, max_rows)
    if whole:
        frame = load_table(path, max_rows)
        if series_id in frame.columns:  # else the data checks name the missing column
            ids = frame[series_id]
            ids = ids[ids.notna() & (ids.astype(str).str.strip() != "")]
            keys = sorted(set(ids.astype(str)))
            if len(keys) < ctx.world_size:
                raise TrainingError(
                    f"{len(keys)} series cannot be shared by {ctx.world_size} processes: use at most {len(keys)}"
                )
            ctx.owned = frozenset(ctx.shard_items(keys))
            ctx.say(f"data: reads all {len(keys)} series (evaluates them all), trains on {len(ctx.owned)}")
        return frame
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"data file not found: {path}")
    parquet = path.suffix.lower() in (".parquet", ".pq")
    try:
        if parquet:
            import pyarrow.parquet as pq  # type: ignore[import-untyped]

            reader = pq.ParquetFile(path)
            columns = list(reader.schema_arrow.names)
        else:
            columns = list(pd.read_csv(path, nrows=0).columns)
        if series_id not in columns:
            raise TrainingError(f"unknown series-id column(s) {[series_id]}; the data has columns {columns}")
        if parquet:
            ids = reader.read(columns=[series_id]).to_pandas()[series_id]
        else:
            ids = pd.read_csv(path, usecols=[series_id])[series_id]
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise TrainingError(f"cannot read {path}: {' '.join(str(exc).split())}") from exc
    blank = (ids.isna() | (ids.astype(str).str.strip() == "")).to_numpy()
    if blank.any():
        first = int(blank.argmax())
        raise TrainingError(f"series-id column {series_id!r} has missing values, first at data row {first + 1}")
    keys = sorted(set(ids.astype(str)))
    if len(keys) < ctx.world_size:
        raise TrainingError(
            f"{len(keys)} series cannot be shared by {ctx.world_size} processes: use at most {len(keys)}"
        )
    mine = set(ctx.shard_items(keys))
    ctx.owned = frozenset(mine)
    del ids
    if parquet:
        batches = (b.to_pandas() for b in reader.iter_batches(batch_size=SHARD_BATCH_ROWS))
    else:
        batches = pd.read_csv(path, chunksize=SHARD_BATCH_ROWS)
    parts, kept = [], 0
    try:
        for batch in batches:
            part = batch[batch[series_id].astype(str).isin(mine)]
            kept += len(part)
            if 0 < max_rows < kept:
                raise TrainingError(
                    f"this process's share of {path} has more than {max_rows} rows (--max-rows); "
                    "raise --max-rows or use more processes"
                )
            parts.append(part)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise TrainingError(f"cannot read {path}: {' '.join(str(exc).split())}") from exc
    frame = pd.concat(parts, ignore_index=True)
    ctx.say(f"data: reads {len(mine)} of {len(keys)} series ({len(frame)} rows) from {path.name}")
    return frame


def write_status(code: int) -> int:
    """Rank 0 under the `--nproc` launcher: record the exit code for the launcher and return
    0 for a finished run (so torchrun reports success); errors keep their code."""
    path = os.environ.get(STATUS_ENV)
    ctx = context()
    if not path or not ctx.enabled:
        return code
    if ctx.is_main:
        Path(path).write_text(str(code))
        return 0 if code in (0, 3) else code
    return code


def launch(settings: Any, nproc: int) -> int:
    """Run the resolved `settings` on `nproc` local processes under torchrun; the exit code of
    rank 0 (as a single-process run would give it), or 2 when a worker failed without one."""
    from training.data import TrainingError

    # Found, not imported: importing torch here would cost seconds the workers pay again.
    if importlib.util.find_spec("torch") is None:
        raise TrainingError("--nproc needs torch (the [train] extra)")
    with tempfile.TemporaryDirectory(prefix="seqserve-train-") as scratch:
        config = Path(scratch) / "settings.json"
        config.write_text(json.dumps(settings.to_dict()))
        status = Path(scratch) / "status"
        env = dict(os.environ)
        env[STATUS_ENV] = str(status)
        env.setdefault("OMP_NUM_THREADS", str(settings.threads))
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            "-m",
            "seqserve.cli",
            "train",
            "--config",
            str(config),
        ]
        returncode = subprocess.call(command, env=env)
        code = int(status.read_text()) if status.exists() else None
    if returncode == 0 and code is not None:
        return code
    if code not in (None, 0):
        return code
    print(f"seqserve train: error: a training worker failed (torchrun exit {returncode})", file=sys.stderr)
    return 2
