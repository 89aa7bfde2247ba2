"""The side-by-side benchmark, in one run on one machine (`make bench`, `python -m bench.run`).

Exports the benchmark model (2-layer 64-hidden LSTM, 4 features) into a temporary repository,
then starts each server as its own process, one at a time, and runs the same closed-loop load
against each (bench/loadgen.py: wrk, one connection per stream, in-order steps):

  service-batching  `seqserve serve`, SEQSERVE_BATCHING=true    per-step sessions (+ predict, ws, bulk;
                    + the forecaster `seqserve train --task forecast` makes, same size: "forecaster")
  service-redis     the same on its own redis-server, cache on: Redis round trips, commands, bytes
                    and CPU per step (bench/redis_cost.py; "redis")
  service-nobatch   `seqserve serve`, SEQSERVE_BATCHING=false   per-step sessions (+ ws)
  naive             bench/naive_server.py, client-carried h/c
  floor             `seqserve serve`, SEQSERVE_NOOP_ROUTE=true, POST /v1/noop (no model, no state)
  floor-bare        the naive app's async /v1/noop: a bare FastAPI route, the floor without the
                    service's middleware (and the only floor when the service is not there yet)
  baseline          `seqserve serve` from a snapshot of an older commit (default fbe055e, the service
                    before the record cache of #20), same venv: the "no regression" target
  triton            raw Triton with its sequence batcher serving the same ONNX model (bench/triton.py,
                    bench/peers/), same wrk load shape: the ">= 2x Triton at 8 streams" target

service-batching, baseline and triton run at the same time in each round and their step loads are
interleaved (current, baseline, current, baseline, triton; the pair order flips every round), so
slow drifts of the shared machine hit both sides of each ratio alike. gRPC ModelStreamInfer vs
HTTP V2 sequences (bench/grpc_stream.py) run on service-batching too. Every target of issue #12
is evaluated from this one run and printed with its ratio and MET / MISSED.

Start-up time is measured for each: process start -> /v2/health/ready -> first answered request
(a session created and stepped once; one step for naive; one no-op for the floor).

Results: printed, and written to bench/results/latest.md and latest.json (gitignored).

    python -m bench.run                 # full: 64 and 8 streams, 2 s warm-up + 10 s each
    python -m bench.run --quick         # smoke: short loads
    python -m bench.run --scenarios http,ws --streams 64 --duration 20
    python -m bench.run --rounds 2 --publish   # and rewrite docs/benchmarks.md from this run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import baseline as baseline_mod
from bench import redis_cost
from bench import targets as targets_mod
from bench import triton as triton_mod
from bench.loadgen import LoadError, LoadResult, run_load, wrk_path
from bench.servers import (
    CACHE_DIR,
    FORECASTER_NAME,
    MODEL_NAME,
    ROOT,
    Server,
    export_bench_forecaster,
    export_bench_model,
    naive_server,
    service_available,
    service_server,
)

SCENARIOS = ("http", "forecaster", "predict", "ws", "bulk", "grpc", "baseline", "triton", "redis", "startup")
RESULTS_DIR = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Missing:
    """A peer that cannot run here (no baseline snapshot, no Triton venv): its loads become
    failed rows with the reason, and its targets read NOT MEASURED."""

    label: str
    reason: str


Job = tuple[Server | Missing, str, int]  # server, load mode, streams (bulk: connections)


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def current_commit() -> str:
    """The checkout's short commit; BENCH_COMMIT names it for a snapshot without .git (git archive)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return os.environ.get("BENCH_COMMIT", commit)


def _environment() -> dict:
    import onnxruntime

    commit = current_commit()
    try:
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "service", "models"], cwd=ROOT, capture_output=True, text=True
        ).stdout.split("\n")
    except OSError:
        dirty = []
    wrk = wrk_path()
    wrk_version = ""
    if wrk:
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout
        wrk_version = out.splitlines()[0] if out else ""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "commit": commit,
        "uncommitted_service_files": [line.strip() for line in dirty if line.strip()],
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "wrk": wrk_version,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _row(server: str, result: LoadResult | None, *, mode: str, streams: int, error: str = "") -> dict:
    if result is None:
        return {"server": server, "mode": mode, "streams": streams, "failed": error}
    row = {"server": server, **result.to_dict(), "mode": mode}
    row.pop("detail", None)
    row["connections"] = result.detail.get("connections", result.streams)
    return row


def _grpc_stream(server: Server, streams: int, args: argparse.Namespace) -> LoadResult:
    """gRPC ModelStreamInfer, `streams` sequences interleaved on one stream (bench/grpc_stream.py)."""
    from bench.grpc_stream import grpc_stream_load

    target = f"127.0.0.1:{server.env['SEQSERVE_GRPC_PORT']}"
    g = asyncio.run(grpc_stream_load(target, MODEL_NAME, streams, args.duration, args.warmup, window=1))
    steps = g["steps"]
    return LoadResult(
        mode="grpc-stream",
        streams=streams,
        duration_s=args.duration,
        requests=steps,
        stream_steps=steps,
        requests_per_s=g["steps_per_s"],
        steps_per_s=g["steps_per_s"],
        p50_ms=g["p50_ms"] or 0.0,
        p99_ms=g["p99_ms"] or 0.0,
        errors=g["errors"],
        client="python grpc.aio, 1 stream",
        detail={"connections": 1},
    )


def _load(server: Server, mode: str, streams: int, args: argparse.Namespace, **kw) -> dict:
    label = f"{server.label} {mode} x{streams}"
    load1 = os.getloadavg()[0]
    _log(f"{label}: {args.warmup}s warm-up + {args.duration}s")
    if mode == "ws-pipelined":  # WebSocket with args.ws_window steps in flight per stream
        kw = {**kw, "ws_window": args.ws_window}
    if mode == "triton":
        kw = {**kw, "model": triton_mod.TRITON_MODEL}
    if mode == "forecaster":  # per-step HTTP sessions on the forecaster (one feature)
        kw = {**kw, "model": FORECASTER_NAME, "features": 1}
    try:
        if mode == "grpc-stream":
            result = _grpc_stream(server, streams, args)
        else:
            load_mode = {"ws-pipelined": "ws", "forecaster": "steps"}.get(mode, mode)
            result = run_load(server.url, load_mode, streams, args.duration, args.warmup, ws_procs=args.ws_procs, **kw)
    except (LoadError, OSError, RuntimeError, KeyError, ValueError) as exc:
        _log(f"{label}: FAILED {exc}")
        return _row(server.label, None, mode=mode, streams=streams, error=str(exc)[:300])
    except Exception as exc:  # a gRPC client error is not worth losing the rest of the run for
        _log(f"{label}: FAILED {type(exc).__name__}: {exc}")
        return _row(server.label, None, mode=mode, streams=streams, error=f"{type(exc).__name__}: {exc}"[:300])
    _log(
        f"{label}: {result.steps_per_s:,.0f} steps/s, p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms, errors {result.errors}"
    )
    row = _row(server.label, result, mode=mode, streams=streams)
    row["load1_before"] = load1
    return row


PeerFactory = Callable[[], Server]


def _prepare_peers(
    args: argparse.Namespace, repo: Path, model_path: Path, notes: list[str]
) -> dict[str, PeerFactory | Missing]:
    """Once per run: the baseline snapshot and the Triton venv, as factories of fresh servers
    (new ports each round), or why a peer is missing (its rows fail and its target is unmet)."""
    peers: dict[str, PeerFactory | Missing] = {}
    if "baseline" in args.scenarios and "http" in args.scenarios:
        try:
            snap = baseline_mod.snapshot(args.baseline, CACHE_DIR / "baselines")
            args.baseline_commit = snap.short
            peers["baseline"] = lambda: service_server("baseline", repo, batching=True, root=snap.root)
        except baseline_mod.BaselineError as exc:
            peers["baseline"] = Missing("baseline", str(exc))
    if "triton" in args.scenarios:
        try:
            venv = triton_mod.ensure_peers_venv(log=_log)
            peers["triton"] = lambda: triton_mod.triton_server("triton", model_path, venv)
        except triton_mod.PeerUnavailable as exc:
            peers["triton"] = Missing("triton", str(exc))
    for name, peer in peers.items():
        if isinstance(peer, Missing):
            notes.append(f"{name} not measured: {peer.reason}")
    return peers


def _plan(
    args: argparse.Namespace, repo: Path, model_path: Path, round_no: int, peers: dict[str, PeerFactory | Missing]
) -> list[tuple[list[Server | Missing], list[Job]]]:
    """Groups of servers started together, each with its loads in order. The first group is the
    comparison: the current service, the baseline snapshot and Triton, step loads interleaved."""
    scen = set(args.scenarios)
    plan: list[tuple[list[Server | Missing], list[Job]]] = []
    have_service = service_available() and not args.no_service
    http = "http" in scen
    if have_service:
        current = service_server("service-batching", repo, batching=True)
        made = {name: (peer if isinstance(peer, Missing) else peer()) for name, peer in peers.items()}
        base, triton = made.get("baseline"), made.get("triton")
        jobs: list[Job] = []
        for n in args.streams if http else []:
            pair: list[Job] = [(current, "steps", n)]
            if base is not None:
                pair.append((base, "steps", n))
            jobs += pair if round_no % 2 else pair[::-1]
            if "forecaster" in scen:  # next to the plain LSTM's load, same server, same streams
                jobs.append((current, "forecaster", n))
        if triton is not None:
            jobs.append((triton, "triton", args.triton_streams))
        if "predict" in scen:
            jobs += [(current, "predict", n) for n in args.streams]
        if "ws" in scen:
            jobs += [(current, "ws", n) for n in args.streams]
            jobs += [(current, "ws-pipelined", n) for n in args.streams]
        if "bulk" in scen:
            jobs += [(current, "bulk", c) for c in args.bulk_connections]
        if "grpc" in scen:
            jobs += [(current, "v2", args.grpc_sequences), (current, "grpc-stream", args.grpc_sequences)]
        group: list[Server | Missing] = [current, *(p for p in (base, triton) if p is not None)]
        plan.append((group, jobs))
        nobatch = service_server("service-nobatch", repo, batching=False)
        plan.append(([nobatch], [(nobatch, "steps", n) for n in args.streams] if http else []))
    else:
        _log("service.server not found: measuring the naive baseline and the bench floor app only")
    naive = naive_server("naive", model_path)
    plan.append(([naive], [(naive, "naive", n) for n in args.streams] if http else []))
    if have_service and http:
        floor = service_server("floor", repo, batching=True, noop=True)
        plan.append(([floor], [(floor, "noop", n) for n in args.streams]))
    if http:
        # a bare FastAPI async route (the naive app's /v1/noop): what the service's own stack adds over it
        bare = naive_server("floor-bare", model_path, floor=True)
        plan.append(([bare], [(bare, "noop", n) for n in args.streams]))
    if "startup" not in scen:
        plan = [(servers, jobs) for servers, jobs in plan if jobs]
    return plan


def _ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return a / b


def _annotate(rows: list[dict]) -> None:
    naive = {r["streams"]: r["steps_per_s"] for r in rows if r.get("mode") == "naive" and "steps_per_s" in r}
    floor_label = "floor" if any(r["server"] == "floor" for r in rows) else "floor-bare"
    floor = {r["streams"]: r["requests_per_s"] for r in rows if r["server"] == floor_label and "requests_per_s" in r}
    ref = max(naive) if naive else None
    for r in rows:
        if "steps_per_s" not in r:
            continue
        key = r["streams"] if r["mode"] != "bulk" else ref
        r["vs_naive"] = _ratio(r["steps_per_s"], naive.get(key))
        fkey = r["streams"] if r["mode"] != "bulk" else (max(floor) if floor else None)
        r["vs_floor"] = _ratio(r["steps_per_s"], floor.get(fkey))


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _load_text(values: list[float] | None) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "?"


def _overload_warning(env: dict) -> list[str]:
    """A run that started or ended with more runnable work than cores measured the neighbours too."""
    loads = [*(env.get("load_start") or [0.0])[:1], *(env.get("load_end") or [0.0])[:1]]
    if not env.get("cpus") or max(loads) <= env["cpus"]:
        return []
    return [
        "",
        f"**Overloaded machine**: the 1-minute load average ({max(loads):.1f}) exceeded the {env['cpus']} CPUs, "
        "so other work shared the cores with every server here: absolute figures are far below a quiet "
        "machine's and ratios move between rounds (see `per round`). Rerun on a quiet machine before quoting.",
    ]


def render_markdown(report: dict) -> str:
    env = report["environment"]
    dirty = " + uncommitted service/models changes" if env.get("uncommitted_service_files") else ""
    baseline = f", baseline commit `{env['baseline_commit']}`" if env.get("baseline_commit") else ""
    lines = [
        "# seqserve benchmark",
        "",
        f"{env['date']}, commit `{env['commit']}`{dirty}{baseline}; {env['cpus']} CPUs ({env['cpu_model']}), "
        f"Python {env['python']}, ONNX Runtime {env['onnxruntime']}, {env['wrk']}.",
        f"Load average (1/5/15 min) at start {_load_text(env.get('load_start'))}, at end "
        f"{_load_text(env.get('load_end'))}; the run took {env.get('wall_s', 0):.0f} s.",
        f"Model: 2-layer 64-hidden LSTM, 4 features. Each load: {report['warmup_s']} s warm-up "
        f"(own sessions) + {report['duration_s']} s measured, closed loop, one step per request in order; "
        f"best of {report['rounds']} round(s) (servers interleaved per round).",
        f"Command: `{report['command']}`",
        *_overload_warning(env),
        "",
        "## Targets",
        "",
        "Every figure below comes from this run. `per round`: the ratio within each round (the two "
        "loads ran back to back in that round); `value` uses each side's best round.",
        "",
        *targets_mod.render(report.get("targets") or targets_mod.evaluate(report["rows"])),
        "",
        "## Throughput and latency",
        "",
        "`vs naive`: stream-steps/s over the naive baseline's at the same stream count (bulk: vs its "
        "highest). `vs floor`: stream-steps/s over the service's no-op route's requests/s at the same "
        "stream count (bulk: vs its highest). `load1`: the 1-minute load average just before the load "
        "(noise check; wrk's runnable threads count in it too). `baseline`: the service at the baseline "
        "commit; `triton`: raw Triton, sequence batcher, Python backend running the same ONNX model.",
        "",
        "| server | mode | streams | conns | client | requests/s | stream-steps/s | p50 ms | p99 ms | errors "
        "| vs naive | vs floor | load1 |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["rows"]:
        if "failed" in r:
            lines.append(f"| {r['server']} | {r['mode']} | {r['streams']} | | | FAILED: {r['failed']} | | | | | | | |")
            continue
        lines.append(
            f"| {r['server']} | {r['mode']} | {r['streams']} | {r['connections']} | {r['client']} "
            f"| {_fmt(r['requests_per_s'], 0)} | {_fmt(r['steps_per_s'], 0)} | {_fmt(r['p50_ms'])} "
            f"| {_fmt(r['p99_ms'])} | {r['errors']} | {_fmt(r.get('vs_naive'))}x | {_fmt(r.get('vs_floor'))}x "
            f"| {r.get('load1_before', 0):.2f} |"
        )
    ws = [r for r in report["rows"] if r.get("mode") in ("ws", "ws-pipelined") and "steps_per_s" in r]
    if ws:
        lines += ["", "## WebSocket vs HTTP per-step, same streams", ""]
        lines += ["| server | WS mode | streams | HTTP steps/s | WS steps/s | WS/HTTP | HTTP p99 ms | WS p99 ms |"]
        lines += ["| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for w in ws:
            h = next(
                (
                    r
                    for r in report["rows"]
                    if r.get("mode") == "steps" and r["server"] == w["server"] and r["streams"] == w["streams"]
                ),
                None,
            )
            if h is None or "steps_per_s" not in h:
                continue
            lines.append(
                f"| {w['server']} | {w['mode']} | {w['streams']} | {_fmt(h['steps_per_s'], 0)} "
                f"| {_fmt(w['steps_per_s'], 0)} "
                f"| {_fmt(_ratio(w['steps_per_s'], h['steps_per_s']))}x | {_fmt(h['p99_ms'])} | {_fmt(w['p99_ms'])} |"
            )
        lines += [
            "",
            "HTTP load is wrk (C); WebSocket load is a Python asyncio client (`websockets`) sharing the same "
            "2 cores, so the WS figure includes a heavier client.",
        ]
    if report.get("redis"):
        lines += [
            "",
            "## Redis per step",
            "",
            "The service on its own redis-server (AOF everysec), record cache on. Round trips: what the service "
            "sent (script calls and other commands); commands: what Redis executed, inside the scripts "
            "included (`INFO commandstats`); bytes: `INFO stats` network in + out; CPU: the redis-server "
            "process, idle subtracted. All per step the service counted. Round trips, commands and bytes do "
            "not depend on the machine's load; CPU and steps/s do.",
            "",
            *redis_cost.render(report["redis"]),
        ]
    if report["startup"]:
        lines += ["", "## Start-up", "", "| server | ready s | first answered request s |", "| --- | ---: | ---: |"]
        for s in report["startup"]:
            lines.append(f"| {s['server']} | {_fmt(s.get('ready_s'))} | {_fmt(s.get('first_answer_s'))} |")
    if report.get("notes"):
        lines += ["", "## Notes", "", *[f"- {n}" for n in report["notes"]]]
    return "\n".join(lines) + "\n"


def _start(server: Server, log_dir: Path, startup: list[dict], round_no: int) -> str:
    """Start one server and record its start-up; returns why it failed ("" when up)."""
    _log(f"starting {server.label}")
    try:
        server.start(log_dir, ready_timeout=180.0 if server.kind == "triton" else 120.0)
    except RuntimeError as exc:
        _log(f"{server.label}: did not start: {exc}")
        startup.append({"server": server.label, "failed": str(exc)[:300], "round": round_no})
        return f"server did not start: {str(exc)[:200]}"
    startup.append(
        {
            "server": server.label,
            "ready_s": server.ready_s,
            "first_answer_s": server.first_answer_s,
            "rss_after_start_mb": server.rss_bytes() / 2**20,
            "round": round_no,
        }
    )
    _log(f"{server.label}: ready {server.ready_s:.2f}s, first answer {server.first_answer_s:.2f}s")
    return ""


def _run_group(
    servers: list[Server | Missing],
    jobs: list[Job],
    args: argparse.Namespace,
    log_dir: Path,
    rows: list[dict],
    startup: list[dict],
    notes: list[str],
    round_no: int,
) -> None:
    """Start the group's servers together, run its loads in order (each server is stopped after
    its last load), stop them all."""
    failed: dict[str, str] = {}
    running: list[Server] = []
    try:
        for server in servers:
            if isinstance(server, Missing):
                failed[server.label] = f"not measured: {server.reason[:200]}"
                continue
            why = _start(server, log_dir, startup, round_no)
            if why:
                failed[server.label] = why
            else:
                running.append(server)
        last = {id(server): k for k, (server, _, _) in enumerate(jobs)}
        for k, (server, mode, n) in enumerate(jobs):
            if server.label in failed:
                rows.append(
                    {**_row(server.label, None, mode=mode, streams=n, error=failed[server.label]), "round": round_no}
                )
                continue
            assert isinstance(server, Server)
            rows.append({**_load(server, mode, n, args), "round": round_no})
            if last[id(server)] == k:
                if server.proc and server.proc.poll() is not None:
                    notes.append(f"{server.label} exited during the run: {server.tail_log(300)}")
                server.stop()
    finally:
        for server in running:
            server.stop()


def _merge_rounds(rows: list[dict]) -> list[dict]:
    """One row per (server, mode, streams): the best round by stream-steps/s (with its own
    latencies, so each row's figures were measured together), errors summed over every round.
    Best, not median: on a shared machine other work only ever slows a round down."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["server"], r["mode"], r["streams"]), []).append(r)
    merged = []
    for group in groups.values():
        ok = sorted((r for r in group if "failed" not in r), key=lambda r: r["steps_per_s"])
        if not ok:
            merged.append(group[0])
            continue
        row = dict(ok[-1])
        row["errors"] = sum(r["errors"] for r in ok)
        row["rounds_steps_per_s"] = [round(r["steps_per_s"], 1) for r in group if "failed" not in r]
        row["failed_rounds"] = len(group) - len(ok)
        merged.append(row)
    return merged


def _merge_startup(entries: list[dict]) -> list[dict]:
    groups: dict[str, list[dict]] = {}
    for e in entries:
        groups.setdefault(e["server"], []).append(e)
    merged = []
    for server, group in groups.items():
        ok = sorted((e for e in group if "failed" not in e), key=lambda e: e["first_answer_s"])
        merged.append(dict(ok[0]) if ok else group[0])
        merged[-1]["server"] = server
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="seqserve side-by-side benchmark")
    parser.add_argument("--quick", action="store_true", help="short smoke run (2 s loads, 0.5 s warm-up)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma list of {','.join(SCENARIOS)}")
    parser.add_argument("--streams", default="64,8", help="comma list of concurrent stream counts")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds per load (default 10)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per load (default 2)")
    parser.add_argument("--bulk-connections", default="1,2", help="bulk: concurrent connections, 256 sessions each")
    parser.add_argument("--ws-procs", type=int, default=1, help="WebSocket client processes")
    parser.add_argument(
        "--ws-window", type=int, default=16, help="ws-pipelined: steps in flight per stream (replies read as they come)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole plan; report the best round")
    parser.add_argument("--no-service", action="store_true", help="naive baseline and bench floor only")
    parser.add_argument(
        "--baseline",
        default=baseline_mod.DEFAULT_BASELINE,
        help="commit measured side by side for the no-regression target (default %(default)s)",
    )
    parser.add_argument("--triton-streams", type=int, default=8, help="streams for the Triton peer (default 8)")
    parser.add_argument("--grpc-sequences", type=int, default=8, help="sequences for gRPC stream vs HTTP V2")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--publish", action="store_true", help="also rewrite docs/benchmarks.md from this run (bench/publish.py)"
    )
    args = parser.parse_args(argv)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    args.streams = [int(s) for s in args.streams.split(",") if s]
    args.bulk_connections = [int(s) for s in args.bulk_connections.split(",") if s]
    if args.duration is None:
        args.duration = 2.0 if args.quick else 8.0
    if args.warmup is None:
        args.warmup = 0.5 if args.quick else 2.0
    args.baseline_commit = ""
    if wrk_path() is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2

    environment = _environment()  # at the start: the code that was measured
    load_start = os.getloadavg()
    started = time.perf_counter()
    rows: list[dict] = []
    startup: list[dict] = []
    notes: list[str] = [
        "naive: the Lua client slices h/c out of each JSON response and sends them back verbatim "
        "with the next step (no float parsing on the client; the server parses and re-encodes them).",
    ]
    with tempfile.TemporaryDirectory(prefix="seqserve-bench-") as tmp:
        repo = Path(tmp) / "repository"
        _log("exporting the benchmark model")
        model_path = export_bench_model(repo)
        if "forecaster" in args.scenarios:
            _log("exporting the benchmark forecaster")
            export_bench_forecaster(repo)
        peers = _prepare_peers(args, repo, model_path, notes) if service_available() and not args.no_service else {}
        for round_no in range(1, args.rounds + 1):
            if args.rounds > 1:
                _log(f"round {round_no}/{args.rounds}")
            for servers, jobs in _plan(args, repo, model_path, round_no, peers):
                _run_group(servers, jobs, args, Path(tmp) / "logs", rows, startup, notes, round_no)
        redis_rows: list[dict] = []
        if "redis" in args.scenarios and service_available() and not args.no_service:
            _log("Redis cost per step (service on its own redis-server)")
            try:
                redis_rows = redis_cost.measure(repo, Path(tmp) / "redis-cost", args.duration, args.warmup)
            except (RuntimeError, OSError) as exc:
                notes.append(f"Redis cost not measured: {exc}")
    every_round = [dict(r) for r in rows]
    rows = _merge_rounds(rows)
    startup = _merge_startup(startup)
    _annotate(rows)
    environment["baseline_commit"] = args.baseline_commit
    environment["load_start"] = [round(x, 2) for x in load_start]
    environment["load_end"] = [round(x, 2) for x in os.getloadavg()]
    environment["wall_s"] = round(time.perf_counter() - started, 1)
    report = {
        "environment": environment,
        "command": " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])]),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "rows": rows,
        "startup": startup,
        "notes": notes,
        "redis": redis_rows,
        "targets": targets_mod.evaluate(rows, every_round, redis_rows),
        "every_round": every_round,
    }
    markdown = render_markdown(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text(markdown)
    (args.out / "latest.json").write_text(json.dumps(report, indent=2))
    print(markdown)
    _log(f"written {args.out / 'latest.md'} and latest.json ({environment['wall_s']:.0f} s)")
    if args.publish:
        from bench import publish

        publish.publish(args.out / "latest.md")
        _log(f"rewrote {publish.DOC.relative_to(ROOT)}")
    failed = [r for r in rows if "failed" in r or r.get("errors")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
