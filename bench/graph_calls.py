"""Per-call cost of the forecaster's ONNX graph against the plain 2x64 LSTM (issue #20, item 3).

    python -m bench.graph_calls --export DIR            # export the three models with this checkout
    python -m bench.graph_calls DIR [DIR ...] [--profile]

`--export` writes `plain.onnx` (the benchmark LSTM, 4 features), `forecaster.onnx` (bench/servers.py's
forecaster: 2x64 LSTM, seasons 48/336, seasonal differencing, phase clock) and
`forecaster_q.onnx` (the same with the default quantile levels, so also the anomaly rows: what
`seqserve train --task forecast` produces today) and `forecaster_hw.onnx` (the same network with the
Holt-Winters baseline, additive seasons 48/336, constants fitted on the same synthetic series:
what training picks for the default electricity model) into DIR. Export one DIR with an older checkout
(`PYTHONPATH=<old checkout> python -m bench.graph_calls --export old`) and one with this one, then
time them all in one process, interleaved in rounds, so "before" and "after" share the run's
conditions. Each call is one row, one step, on a single-threaded session with every ONNX
Runtime optimisation, as the service runs it. Each round is timed by the wall clock and by the
calling thread's CPU time (ONNX Runtime runs a single-threaded session on the caller's
thread): on a shared machine the wall clock also counts the time other processes held the
core, the CPU time does not, so the CPU column is the figure to compare there. `vs plain` is
the CPU median over the same folder's plain LSTM. `--profile` adds the share of kernel time per
op type (ONNX Runtime's profiler) for each file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

QUANTILE_LEVELS = (0.025, 0.1, 0.5, 0.9, 0.975)
FILES = ("plain.onnx", "forecaster.onnx", "forecaster_q.onnx", "forecaster_hw.onnx")


def export_all(out: Path) -> None:
    """The three models of the module docstring, exported with the code on PYTHONPATH."""
    from dataclasses import replace

    import torch

    from bench.servers import export_bench_forecaster, export_bench_model
    from models.export import export_onnx
    from models.forecaster import Forecaster, forecaster_config, spec_of

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        (out / "plain.onnx").write_bytes(export_bench_model(repo).read_bytes())
        point = export_bench_forecaster(repo)
        (out / "forecaster.onnx").write_bytes(point.read_bytes())
    import onnx

    from models.config import METADATA_KEY, ModelConfig

    proto = onnx.load(str(out / "forecaster.onnx"))
    meta = next(p.value for p in proto.metadata_props if p.key == METADATA_KEY)
    config = ModelConfig.from_json(meta)
    spec = spec_of(config)
    assert spec is not None
    quantile_config = forecaster_config(replace(config, quantiles=QUANTILE_LEVELS), spec, config.clock)
    torch.manual_seed(0)
    model = Forecaster(quantile_config).eval()
    with torch.no_grad():  # non-zero heads, so every path computes something
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    export_onnx(model, out / "forecaster_q.onnx")
    export_holt_winters(out / "forecaster_hw.onnx")


def export_holt_winters(path: Path) -> None:
    """The Holt-Winters forecaster: bench/servers.py's forecaster with transform holt_winters."""
    import torch

    from bench.servers import bench_forecaster
    from models.export import export_onnx

    torch.manual_seed(0)
    export_onnx(bench_forecaster("holt_winters"), path)


def _session(path: Path, profile_prefix: str | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feeds(session: Any) -> dict[str, np.ndarray]:
    """One row, one step: inputs of the declared shapes with batch and time set to 1; the
    states at their zero/initial values except a mid-cycle phase and a full count (in the packed
    history's first slot too: a streamed step of a session that has read its first readings,
    the served case, which the Holt-Winters graph takes a shorter branch for); with anomaly
    levels, pending bounds around the reading (an ordinary reading: one pass of a graph with the
    robust state update, where a far-off one takes a second)."""
    from models.config import METADATA_KEY, ModelConfig
    from models.forecaster import spec_of

    config = ModelConfig.from_json(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    spec = spec_of(config) if config.extra.get("forecaster") else None
    feeds: dict[str, np.ndarray] = {}
    for arg in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in arg.shape]
        value = np.zeros(shape, np.float32)
        if arg.name == "input":
            value[:] = 1000.0
        elif arg.name == "count0":
            value[:] = 1e6  # clamped by the graph to "full"
        elif arg.name == "history0":
            value[..., 0] = 1e6  # the packed layout's count: a session past its first readings
            if spec is not None and config.anomaly and spec.layout >= 2:  # lo80, lo95, hi80, hi95
                a, b = spec.history_slots(True)["pending"]
                value[..., a:b] = (950.0, 900.0, 1050.0, 1100.0)
        elif arg.name == "smoothed0":
            value[..., 0] = 1000.0  # an initialised Holt-Winters level
        elif arg.name == "phase0":
            value[:] = 7.0
        feeds[arg.name] = value
    return feeds


def optimised_nodes(path: Path) -> int:
    """Nodes left after ONNX Runtime's optimisation (its saved optimised model)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
        options.log_severity_level = 3  # not the warning that the saved graph is host-specific
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return len(onnx.load(options.optimized_model_filepath).graph.node)


def time_calls(paths: list[Path], rounds: int, calls: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """µs per call of each file by the wall clock and by the thread's CPU time, `rounds`
    interleaved rounds of `calls` calls each."""
    sessions = {str(p): _session(p) for p in paths}
    feeds = {k: _feeds(s) for k, s in sessions.items()}
    wall: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    for key, session in sessions.items():  # warm-up
        for _ in range(200):
            session.run(None, feeds[key])
    for _ in range(rounds):
        for key, session in sessions.items():
            feed = feeds[key]
            began, began_cpu = time.perf_counter(), time.thread_time()
            for _ in range(calls):
                session.run(None, feed)
            cpu[key].append((time.thread_time() - began_cpu) / calls * 1e6)
            wall[key].append((time.perf_counter() - began) / calls * 1e6)
    return wall, cpu


def profile_ops(path: Path, calls: int = 500) -> list[tuple[str, int, float]]:
    """(op type, nodes, share of kernel time) for one file, largest share first."""
    with tempfile.TemporaryDirectory() as tmp:
        session = _session(path, os.path.join(tmp, "prof"))
        feed = _feeds(session)
        for _ in range(calls):
            session.run(None, feed)
        trace = json.loads(Path(session.end_profiling()).read_text())
    total: Counter[str] = Counter()
    nodes: dict[str, set[str]] = defaultdict(set)
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            total[op] += event["dur"]
            nodes[op].add(event["name"])
    whole = sum(total.values()) or 1
    return [(op, len(nodes[op]), dur / whole) for op, dur in total.most_common()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="*", type=Path)
    parser.add_argument("--export", type=Path, help="export the models into this folder and stop")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    if args.export:
        export_all(args.export)
        return
    import onnx

    paths = [d / f for d in args.dirs for f in FILES if (d / f).is_file()]
    wall, cpu = time_calls(paths, args.rounds, args.calls)
    print(f"load average {' / '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("| file | nodes (file -> after ORT) | wall µs per call (median, min) | CPU µs per call (median) | vs plain |")
    print("| --- | --- | ---: | ---: | ---: |")
    for p in paths:
        nodes = len(onnx.load(str(p)).graph.node)
        plain = cpu.get(str(p.parent / "plain.onnx"))
        ratio = f"{statistics.median(cpu[str(p)]) / statistics.median(plain):.2f}x" if plain else "-"
        print(
            f"| {p} | {nodes} -> {optimised_nodes(p)} | {statistics.median(wall[str(p)]):.1f}, "
            f"{min(wall[str(p)]):.1f} | {statistics.median(cpu[str(p)]):.1f} | {ratio} |"
        )
    print(f"load average {' / '.join(f'{v:.1f}' for v in os.getloadavg())}")
    if args.profile:
        for p in paths:
            ops = profile_ops(p)
            listing = ", ".join(f"{op} {n} ({share:.0%})" for op, n, share in ops)
            print(f"\n{p}: {listing}")


if __name__ == "__main__":
    main()
