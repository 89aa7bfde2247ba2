"""One process vs `--nproc N` data-parallel training on the same data and step budget.

For each seed, trains once in one process and once with `--nproc N` (torchrun, DDP), into a
scratch repository, and reads back from each manifest: test MAE and MASE (streaming), the
training loop's seconds, and under DDP each rank's split of its optimiser-step time into compute
(forward, backward, optimiser) and gradient all-reduce (launch to completion, so it includes
waiting for the slower rank). The command's own wall time (process start-up, data, baselines,
export) is reported separately from the training loop's.

    python -m bench.distributed_training --preset electricity --nproc 2 --seeds 0 1 2
    python -m bench.distributed_training -- --data f.csv --target y --series-id id ...

Prints a markdown table and writes the raw records as JSON (--out). Numbers depend on how
busy the machine is: the load average at start and end is printed with them.

`--allreduce-probe BYTES` measures communication alone: N processes (gloo) all-reduce a
gradient-sized buffer again and again with nothing else to do, the floor under the all-reduce
time of a training step (which also waits for the slowest rank's compute). `--compute-probe`
times one optimiser step (forward, backward, AdamW) of the preset's forecaster in one process for
32, 16, 8 and 4 streams: how a rank's compute shrinks as the global batch is split over more
ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _run(argv: list[str], repo: Path, nproc: int, seed: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "seqserve.cli", "train", *argv, "--seed", str(seed), "--quiet"]
    command += ["--repository", str(repo), "--name", "m", "--allow-worse"]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"training failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    entry = max((repo / "m").iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1)
    manifest = json.loads((entry / "manifest.json").read_text())
    training = manifest["training"]
    return {
        "nproc": nproc,
        "seed": seed,
        "wall_seconds": round(wall, 2),
        "train_seconds": training["seconds"],
        "steps": training["steps_run"],
        "mae": manifest["metrics"]["streaming"]["mae"],
        "mase": manifest["metrics"]["streaming"]["mase"],
        "distributed": training.get("distributed"),
    }


def _summary(records: list[dict[str, Any]], nproc: int) -> list[str]:
    def stats(values: list[float]) -> str:
        if len(values) < 2:
            return f"{values[0]:.4g}"
        return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"

    lines = [
        "| processes | seeds | test MASE (mean ± sd) | per-seed MASE | training loop s | command wall s |",
        "|---|---|---|---|---|---|",
    ]
    for n in (1, nproc):
        rows = [r for r in records if r["nproc"] == n]
        lines.append(
            f"| {n} | {len(rows)} | {stats([r['mase'] for r in rows])} | "
            f"{', '.join(format(r['mase'], '.3f') for r in rows)} | {stats([r['train_seconds'] for r in rows])} | "
            f"{stats([r['wall_seconds'] for r in rows])} |"
        )
    one = statistics.mean(r["train_seconds"] for r in records if r["nproc"] == 1)
    many = statistics.mean(r["train_seconds"] for r in records if r["nproc"] == nproc)
    wall_one = statistics.mean(r["wall_seconds"] for r in records if r["nproc"] == 1)
    wall_many = statistics.mean(r["wall_seconds"] for r in records if r["nproc"] == nproc)
    lines.append("")
    lines.append(
        f"training loop time ratio ({nproc} processes / 1): {many / one:.2f}x; "
        f"command wall: {wall_many / wall_one:.2f}x"
    )
    ranks = [rank for r in records if r["distributed"] for rank in r["distributed"]["ranks"]]
    if ranks:
        step = sum(r["step_seconds"] for r in ranks)
        allreduce = sum(r["allreduce_seconds"] for r in ranks)
        steps = sum(r["steps"] for r in ranks)
        size = next(r["distributed"]["allreduce_bytes_per_step"] for r in records if r["distributed"])
        lines.append(
            f"per optimiser step and rank: {1000 * step / steps:.2f} ms, "
            f"of which all-reduce {1000 * allreduce / steps:.2f} ms "
            f"({allreduce / step:.0%}) and compute {1000 * (step - allreduce) / steps:.2f} ms; "
            f"{size} gradient bytes all-reduced per step"
        )
    return lines


def _probe(size: int, rounds: int = 500) -> None:
    """One rank of the all-reduce probe (started by torchrun): median seconds per all-reduce."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    buffer = torch.ones(max(size // 4, 1))
    times = []
    for i in range(rounds + 50):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(buffer)
        if i >= 50:
            times.append(time.perf_counter() - start)
    if dist.get_rank() == 0:
        print(
            f"all-reduce of {size} bytes on {dist.get_world_size()} processes (gloo): median "
            f"{1000 * statistics.median(times):.3f} ms, p90 {1000 * sorted(times)[int(0.9 * len(times))]:.3f} ms",
            flush=True,
        )
    dist.destroy_process_group()


def _compute_probe(preset_name: str, rounds: int = 20) -> None:
    """Median milliseconds per optimiser step by number of streams (one process, one thread)."""
    import numpy as np
    import torch

    from models.forecaster import Forecaster
    from training import forecast_loop, forecaster_run, loop
    from training.cli import RunSettings
    from training.data import load_table, prepare_forecast
    from training.presets import preset

    settings = RunSettings(**preset(preset_name))
    frame = load_table(settings.data)
    data = prepare_forecast(
        frame, settings.target, settings.features or settings.target, horizon=settings.horizon,
        window=settings.window, report=lambda _: None,
    )  # fmt: skip
    axis = forecaster_run.time_axis(frame, settings.time_column, lambda _: None)
    config, _ = forecaster_run.build_config(settings, data, settings.cell, "seasonal_diff", axis)
    loop.seed_everything(0, 1)
    for streams in (32, 16, 8, 4):
        model = Forecaster(config)
        segments = [forecast_loop.Segment.of(data, None)]
        source = forecast_loop._Streams(model, segments, forecast_loop.ForecastTrainSettings(streams=streams, chunk=48))
        optimizer = torch.optim.AdamW(model.parameters())
        times = []
        for i in range(rounds + 5):
            x, y, _ = source.batch()
            start = time.perf_counter()
            out, state = model(x, tuple(source.state))
            loss = (out - y).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            source.state = [s.detach() for s in state]
            if i >= 5:
                times.append(time.perf_counter() - start)
        print(f"{preset_name}: {streams} streams x 48 steps: {1000 * np.median(times):.1f} ms per optimiser step")


def _launch_probe(size: int, nproc: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    command += ["-m", "bench.distributed_training", "--allreduce-probe", str(size)]
    subprocess.run(command, env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="electricity")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, help="write the raw records here (JSON)")
    parser.add_argument("--allreduce-probe", type=int, metavar="BYTES", help="time all-reduce alone (see above)")
    parser.add_argument("--compute-probe", action="store_true", help="step time by streams (see above)")
    parser.add_argument("train_args", nargs="*", help="after --: seqserve train flags instead of --preset")
    args = parser.parse_args(argv)
    if args.compute_probe:
        print(f"load average: {os.getloadavg()}", flush=True)
        _compute_probe(args.preset)
        return 0
    if args.allreduce_probe:
        if "RANK" in os.environ:
            _probe(args.allreduce_probe)
        else:
            print(f"load average: {os.getloadavg()}", flush=True)
            _launch_probe(args.allreduce_probe, args.nproc)
        return 0
    train_args = args.train_args or ["--preset", args.preset, "--baselines", "naive"]
    print(f"load average at start: {os.getloadavg()}", flush=True)
    records = []
    with tempfile.TemporaryDirectory(prefix="seqserve-ddp-bench-") as scratch:
        for seed in args.seeds:
            for nproc in (1, args.nproc):
                record = _run(train_args, Path(scratch) / f"{nproc}-{seed}", nproc, seed)
                print(json.dumps(record), flush=True)
                records.append(record)
    print(f"load average at end: {os.getloadavg()} on {os.cpu_count()} CPUs")
    print("\n".join(_summary(records, args.nproc)))
    if args.out:
        args.out.write_text(json.dumps(records, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
