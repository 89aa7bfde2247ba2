"""The side-by-side benchmark, in one run on one machine (`make bench`, `python -m bench.run`).

Exports the benchmark model (2-layer 64-hidden LSTM, 4 features) into a temporary repository,
then starts each server as its own process, one at a time, and runs the same closed-loop load
against each (bench/loadgen.py: wrk, one connection per stream, in-order steps):

  service-batching  `seqserve serve`, SEQSERVE_BATCHING=true    per-step sessions (+ predict, ws, bulk)
  service-nobatch   `seqserve serve`, SEQSERVE_BATCHING=false   per-step sessions (+ ws)
  naive             bench/naive_server.py, client-carried h/c
  floor             `seqserve serve`, SEQSERVE_NOOP_ROUTE=true, POST /v1/noop (no model, no state)
  floor-bare        the naive app's async /v1/noop: a bare FastAPI route, the floor without the
                    service's middleware (and the only floor when the service is not there yet)

Start-up time is measured for each: process start -> /v2/health/ready -> first answered request
(a session created and stepped once; one step for naive; one no-op for the floor).

Results: printed, and written to bench/results/latest.md and latest.json (gitignored).

    python -m bench.run                 # full: 64 and 8 streams, 2 s warm-up + 10 s each
    python -m bench.run --quick         # smoke: short loads
    python -m bench.run --scenarios http,ws --streams 64 --duration 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.loadgen import LoadError, LoadResult, run_load, wrk_path
from bench.servers import ROOT, Server, export_bench_model, naive_server, service_available, service_server

SCENARIOS = ("http", "predict", "ws", "bulk", "startup")
RESULTS_DIR = ROOT / "bench" / "results"


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _environment() -> dict:
    import onnxruntime

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    commit = os.environ.get("BENCH_COMMIT", commit)  # a snapshot without .git (git archive) names its commit
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


def _load(server: Server, mode: str, streams: int, args: argparse.Namespace, **kw) -> dict:
    label = f"{server.label} {mode} x{streams}"
    load1 = os.getloadavg()[0]
    _log(f"{label}: {args.warmup}s warm-up + {args.duration}s")
    if mode == "ws-pipelined":  # WebSocket with args.ws_window steps in flight per stream
        kw = {**kw, "ws_window": args.ws_window}
    try:
        load_mode = "ws" if mode == "ws-pipelined" else mode
        result = run_load(server.url, load_mode, streams, args.duration, args.warmup, ws_procs=args.ws_procs, **kw)
    except (LoadError, OSError, RuntimeError, KeyError, ValueError) as exc:
        _log(f"{label}: FAILED {exc}")
        return _row(server.label, None, mode=mode, streams=streams, error=str(exc)[:300])
    _log(
        f"{label}: {result.steps_per_s:,.0f} steps/s, p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms, errors {result.errors}"
    )
    row = _row(server.label, result, mode=mode, streams=streams)
    row["load1_before"] = load1
    return row


def _plan(args: argparse.Namespace, repo: Path, model_path: Path) -> list[tuple[Server, list[tuple[str, int]]]]:
    scen = set(args.scenarios)
    plan: list[tuple[Server, list[tuple[str, int]]]] = []
    have_service = service_available() and not args.no_service
    http = "http" in scen
    if have_service:
        jobs = []
        if http:
            jobs += [("steps", n) for n in args.streams]
        if "predict" in scen:
            jobs += [("predict", n) for n in args.streams]
        if "ws" in scen:
            jobs += [("ws", n) for n in args.streams]
            jobs += [("ws-pipelined", n) for n in args.streams]
        if "bulk" in scen:
            jobs += [("bulk", c) for c in args.bulk_connections]
        plan.append((service_server("service-batching", repo, batching=True), jobs))
        jobs = [("steps", n) for n in args.streams] if http else []
        if "ws" in scen:
            jobs += [("ws", n) for n in args.streams]
        plan.append((service_server("service-nobatch", repo, batching=False), jobs))
    else:
        _log("service.server not found: measuring the naive baseline and the bench floor app only")
    plan.append((naive_server("naive", model_path), [("naive", n) for n in args.streams] if http else []))
    if have_service:
        plan.append((service_server("floor", repo, batching=True, noop=True), [("noop", n) for n in args.streams]))
    # a bare FastAPI async route (the naive app's /v1/noop): what the service's own stack adds over it
    plan.append((naive_server("floor-bare", model_path, floor=True), [("noop", n) for n in args.streams]))
    if not http:
        plan = [(s, [j for j in jobs if j[0] != "noop"]) for s, jobs in plan]
    if "startup" not in scen:
        plan = [(s, jobs) for s, jobs in plan if jobs]
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


def render_markdown(report: dict) -> str:
    env = report["environment"]
    dirty = " + uncommitted service/models changes" if env.get("uncommitted_service_files") else ""
    lines = [
        "# seqserve benchmark",
        "",
        f"{env['date']}, commit `{env['commit']}`{dirty}, {env['cpus']} CPUs ({env['cpu_model']}), "
        f"Python {env['python']}, ONNX Runtime {env['onnxruntime']}, {env['wrk']}.",
        f"Model: 2-layer 64-hidden LSTM, 4 features. Each load: {report['warmup_s']} s warm-up "
        f"(own sessions) + {report['duration_s']} s measured, closed loop, one step per request in order; "
        f"best of {report['rounds']} round(s) (servers interleaved per round).",
        f"Command: `{report['command']}`",
        "",
        "## Throughput and latency",
        "",
        "`vs naive`: stream-steps/s over the naive baseline's at the same stream count (bulk: vs its "
        "highest). `vs floor`: stream-steps/s over the service's no-op route's requests/s at the same "
        "stream count (bulk: vs its highest). `load1`: the 1-minute load average just before the load "
        "(noise check; wrk's runnable threads count in it too).",
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
    if report["startup"]:
        lines += ["", "## Start-up", "", "| server | ready s | first answered request s |", "| --- | ---: | ---: |"]
        for s in report["startup"]:
            lines.append(f"| {s['server']} | {_fmt(s.get('ready_s'))} | {_fmt(s.get('first_answer_s'))} |")
    if report.get("notes"):
        lines += ["", "## Notes", "", *[f"- {n}" for n in report["notes"]]]
    return "\n".join(lines) + "\n"


def _run_server(
    server: Server,
    jobs: list[tuple[str, int]],
    args: argparse.Namespace,
    log_dir: Path,
    rows: list[dict],
    startup: list[dict],
    notes: list[str],
    round_no: int,
) -> None:
    _log(f"starting {server.label}")
    try:
        server.start(log_dir)
    except RuntimeError as exc:
        _log(f"{server.label}: did not start: {exc}")
        startup.append({"server": server.label, "failed": str(exc)[:300], "round": round_no})
        for mode, n in jobs:
            row = _row(server.label, None, mode=mode, streams=n, error="server did not start")
            rows.append({**row, "round": round_no})
        return
    try:
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
        for mode, n in jobs:
            rows.append({**_load(server, mode, n, args), "round": round_no})
        if server.proc and server.proc.poll() is not None:
            notes.append(f"{server.label} exited during the run: {server.tail_log(300)}")
    finally:
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
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    args.streams = [int(s) for s in args.streams.split(",") if s]
    args.bulk_connections = [int(s) for s in args.bulk_connections.split(",") if s]
    if args.duration is None:
        args.duration = 2.0 if args.quick else 10.0
    if args.warmup is None:
        args.warmup = 0.5 if args.quick else 2.0
    if wrk_path() is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2

    environment = _environment()  # at the start: the code that was measured
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
        for round_no in range(1, args.rounds + 1):
            if args.rounds > 1:
                _log(f"round {round_no}/{args.rounds}")
            for server, jobs in _plan(args, repo, model_path):
                _run_server(server, jobs, args, Path(tmp) / "logs", rows, startup, notes, round_no)
    rows = _merge_rounds(rows)
    startup = _merge_startup(startup)
    _annotate(rows)
    report = {
        "environment": environment,
        "command": " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])]),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "rows": rows,
        "startup": startup,
        "notes": notes,
    }
    markdown = render_markdown(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text(markdown)
    (args.out / "latest.json").write_text(json.dumps(report, indent=2))
    print(markdown)
    _log(f"written {args.out / 'latest.md'} and latest.json")
    failed = [r for r in rows if "failed" in r or r.get("errors")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
