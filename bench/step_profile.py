"""Where a server's CPU goes on the HTTP step path (issue #20, item 4).

    python -m bench.step_profile [--streams 8,64] [--duration 12] [--out DIR]

Starts `seqserve serve` with the benchmark LSTM (batching on, in-memory store), drives
`POST /v1/sessions/{id}/steps` with wrk (one stream per connection, closed loop, the load of
`make bench`), and samples the server process with py-spy while the load runs. Every sample's
innermost frame is put in one bucket (socket writes, HTTP parsing, the event loop, middleware,
validation, engine, store, batcher, ONNX Runtime, encoding, metrics), so the table says which
layer a step's time is spent in. Raw samples (py-spy's collapsed stacks) are kept in DIR for a
flame graph.

The shares are of the server's sampled CPU, not of wall time, so they survive a shared machine
better than rates do; but a loaded host inflates the system-call buckets (a send that wakes the
load generator is charged while the kernel switches), so quote shares from a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench.loadgen import LoadResult, run_load, wrk_path
from bench.servers import export_bench_model, service_server

# (bucket, pattern on the innermost frame "function (file:line)"), first match wins.
BUCKETS: tuple[tuple[str, str], ...] = (
    ("socket write (one send per reply)", r"_CoalescingTransport\.write"),
    ("HTTP parsing, uvicorn protocol", r"uvicorn/protocols|http_coalescing|httptools"),
    ("event loop, tasks", r"asyncio|Runner\.run|uvloop|_weakrefset|contextlib"),
    ("middleware, fast path, routing", r"api/middleware|api/fastpath|proxy_headers|api/sessions|core/logs"),
    ("validation", r"core/validate|api/schemas|pydantic"),
    ("engine, locks, replay records", r"core/engine|core/locks|<string>"),
    ("session store", r"service/sessions/"),
    ("batcher, model call wrapper", r"core/batching|core/registry"),
    ("ONNX Runtime", r"onnxruntime"),
    ("reply encoding", r"api/codecs|orjson"),
    ("metrics, statistics", r"prometheus|core/stats|core/metrics|core/services"),
    ("numpy", r"numpy"),
)


SPY_FORMAT = ("--nonblocking", "-f", "raw", "-o")  # collapsed stacks, without pausing the server


def bucket_of(frame: str) -> str:
    for name, pattern in BUCKETS:
        if re.search(pattern, frame):
            return name
    return "other"


def shares(collapsed: str) -> dict[str, float]:
    """Per bucket, the share (0..1) of samples whose innermost frame falls in it, from py-spy's
    collapsed ("raw") format: one stack per line, frames joined by ';', then a count."""
    counts: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        counts[bucket_of(stack.split(";")[-1])] += int(count)
    total = sum(counts.values())
    return {name: n / total for name, n in counts.most_common()} if total else {}


def profile(streams: int, duration: float, out: Path, py_spy: str) -> tuple[LoadResult, dict[str, float]]:
    repo = out / "repository"
    if not repo.exists():
        export_bench_model(repo)
    with service_server(f"profile-{streams}", repo, batching=True) as server:
        server.start(out / "logs")
        assert server.proc is not None
        result: dict[str, LoadResult] = {}
        load = threading.Thread(
            target=lambda: result.setdefault("r", run_load(server.url, "steps", streams, duration + 4.0, warmup=2.0))
        )
        load.start()
        time.sleep(4.0)  # warm-up done and the load steady before sampling
        raw = out / f"steps-{streams}.txt"
        subprocess.run(
            [py_spy, "record", "-p", str(server.proc.pid), "-d", f"{duration:.0f}", "-r", "200", *SPY_FORMAT, str(raw)],
            check=True,
            capture_output=True,
        )
        load.join()
    return result["r"], shares(raw.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="8,64", help="comma list of concurrent streams")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds sampled per load")
    parser.add_argument("--out", type=Path, default=None, help="keep raw samples here (default: a temp dir)")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy")
    if py_spy is None or wrk_path() is None:
        parser.error("needs py-spy (pip install py-spy; in the dev extras) and wrk on PATH")
    out = args.out or Path(tempfile.mkdtemp(prefix="step-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    report: dict[int, dict[str, object]] = {}
    for streams in (int(s) for s in args.streams.split(",")):
        result, table = profile(streams, args.duration, out, py_spy)
        report[streams] = {
            "steps_per_s": result.steps_per_s,
            "p50_ms": result.p50_ms,
            "p99_ms": result.p99_ms,
            "shares": table,
        }
        print(f"\n{streams} streams: {result.steps_per_s:,.0f} steps/s, p50 {result.p50_ms} ms, p99 {result.p99_ms} ms")
        print("| where the server's CPU goes | share |\n| --- | ---: |")
        for name, share in table.items():
            print(f"| {name} | {share * 100:.1f} % |")
    (out / "step_profile.json").write_text(json.dumps(report, indent=2))
    print(f"\nraw samples and step_profile.json in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
