"""Data-parallel training on torch.distributed (DDP), and the `--nproc N` local launcher.

Under `torchrun` (RANK, WORLD_SIZE and LOCAL_RANK in the environment) `seqserve train` becomes
one rank of a data-parallel job:

- the process group uses gloo on CPU and nccl when CUDA is present (each rank on the GPU of its
  LOCAL_RANK);
- the model is wrapped in DistributedDataParallel, so gradients are averaged across ranks by
  all-reduce during backward; every rank therefore holds the same weights after each step;
- the training work is sharded: `--batch-size` stays the *global* number of TBPTT streams per
  optimiser step and each rank walks its share of them (`shard_count`), with its own seeded
  random restarts; with several series each rank owns a subset of the series (`shard_items`);
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

    @property
    def enabled(self) -> bool:
        return bool(self.backend)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def label(self) -> str:
        return f"[rank {self.rank}/{self.world_size}] " if self.enabled else ""

    def shard_count(self, total: int) -> int:
        """This rank's share of `total` interchangeable units (streams): as even as possible."""
        return total // self.world_size + (1 if self.rank < total % self.world_size else 0)

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
        ddp = DistributedDataParallel(model, device_ids=device_ids, **flag)
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
