"""RSS growth of holding idle streaming sessions, against their raw recurrent-state size.

Benchmark model: 2-layer 64-hidden LSTM, so h + c = 2 states * 2 layers * 64 * 4 bytes = 1 KiB
per session. Two measurements:

* in-process (default: 100,000 and 1,000,000): a fresh interpreter per count imports the
  service's in-memory store (service.sessions.memory.MemorySessionStore, the one the server
  uses by default), reads its RSS after imports and a warm-up session, creates N sessions
  through the store's `create` (the same call the HTTP route ends in), runs gc and reads RSS
  again. The difference is the cost of the records: ids, per-session entry objects, the LRU
  dict, the expiry heap and the pooled state slots. Creating 1M sessions over HTTP one by one
  would take minutes, hence in-process.
* over HTTP (`--http 100000`, needs the server): `seqserve serve` with SEQSERVE_MAX_SESSIONS
  raised, RSS of the server process before and after creating N sessions with
  POST /v1/models/bench/sessions from wrk (4 connections); includes everything the route keeps.

    python -m bench.memory                      # in-process 100k and 1M
    python -m bench.memory --http 100000        # plus the server process over HTTP
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.servers import ROOT, export_bench_model, rss_of, service_available, service_server

LAYERS, HIDDEN, STATES = 2, 64, 2
RAW_BYTES = STATES * LAYERS * HIDDEN * 4  # 1 KiB


def _child(count: int) -> dict:
    """Runs in a fresh interpreter: RSS growth of `count` sessions in the memory store."""
    import asyncio

    import numpy as np

    from service.sessions.base import SessionRecord, new_session_id
    from service.sessions.memory import MemorySessionStore

    store = MemorySessionStore(max_sessions=count + 1)
    state = (np.zeros((LAYERS, HIDDEN), np.float32), np.zeros((LAYERS, HIDDEN), np.float32))

    async def fill(n: int) -> None:
        now = time.time()
        for _ in range(n):
            record = SessionRecord(new_session_id(), "bench", 1, 0, state, 3600.0, now + 3600.0, now)
            await store.create(record)

    asyncio.run(fill(1))  # first-use allocations (event loop, one pool block) outside the measurement
    gc.collect()
    before = rss_of(os.getpid())
    t0 = time.perf_counter()
    asyncio.run(fill(count))
    elapsed = time.perf_counter() - t0
    gc.collect()
    after = rss_of(os.getpid())
    held = asyncio.run(store.count())
    return _summary("in-process MemorySessionStore", count, before, after, held, elapsed)


def _summary(how: str, count: int, before: int, after: int, held: int, elapsed: float) -> dict:
    growth = after - before
    per = growth / count
    return {
        "how": how,
        "sessions": count,
        "held": held,
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
        "growth_mb": growth / 2**20,
        "bytes_per_session": per,
        "raw_state_bytes": RAW_BYTES,
        "raw_total_mb": count * RAW_BYTES / 2**20,
        "ratio_vs_raw": per / RAW_BYTES,
        "create_seconds": elapsed,
    }


def in_process(count: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--child", str(count)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if out.returncode != 0:
        raise RuntimeError(f"child failed: {out.stderr[-1000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def create_with_wrk(url: str, count: int, connections: int = 4, model: str = "bench") -> dict:
    """Create about `count` sessions on a running server with wrk (`create` mode of the Lua
    script, `connections` threads); returns {"created", "errors", "seconds"}."""
    from bench.loadgen import LUA_SCRIPT, wrk_path

    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError("wrk not found")
    per_thread = -(-count // connections)
    wrk_env = {**os.environ, "BENCH_MODE": "create", "BENCH_MODEL": model, "BENCH_CREATE": str(per_thread)}
    cmd = [wrk, f"-t{connections}", f"-c{connections}", "-d3600s", "--timeout=30s", "-s", str(LUA_SCRIPT)]
    t0 = time.perf_counter()
    proc = subprocess.Popen([*cmd, url], env=wrk_env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    done = 0
    result = None
    for line in proc.stdout:  # each thread prints CREATE_DONE when it reached its share
        if line.startswith("CREATE_DONE"):
            done += 1
            if done == connections:
                proc.send_signal(signal.SIGINT)  # wrk stops and runs done()
        elif line.startswith("BENCH_RESULT "):
            result = json.loads(line[len("BENCH_RESULT ") :])
    proc.wait(60)
    return {
        "created": result["ok"] if result else per_thread * connections,
        "errors": (result or {}).get("non2xx", -1),
        "seconds": time.perf_counter() - t0,
    }


def over_http(count: int, connections: int = 4) -> dict:
    """Create `count` sessions on a real server with wrk and read the server's RSS growth."""
    with tempfile.TemporaryDirectory(prefix="seqserve-mem-") as tmp:
        repo = Path(tmp) / "repository"
        export_bench_model(repo)
        env = {"SEQSERVE_MAX_SESSIONS": str(count + 1000), "SEQSERVE_SESSION_TTL_SECONDS": "86400"}
        with service_server("memory", repo, env=env) as server:
            server.start(Path(tmp) / "logs")
            time.sleep(1.0)
            before = server.rss_bytes()
            made = create_with_wrk(server.url, count, connections)
            time.sleep(1.0)
            after = server.rss_bytes()
            created = made["created"]
            summary = _summary("HTTP POST /sessions, server RSS", created, before, after, created, made["seconds"])
            summary["errors"] = made["errors"]
            return summary


def render(rows: list[dict]) -> str:
    lines = [
        "| how | sessions | RSS before MiB | RSS after MiB | growth MiB | bytes/session | raw state | ratio "
        "| create s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['how']} | {r['sessions']:,} | {r['rss_before_mb']:.1f} | {r['rss_after_mb']:.1f} "
            f"| {r['growth_mb']:.1f} | {r['bytes_per_session']:,.0f} | {r['raw_state_bytes']} B "
            f"| {r['ratio_vs_raw']:.2f}x | {r['create_seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="RSS of idle sessions vs raw state size")
    parser.add_argument("--counts", default="100000,1000000", help="in-process session counts")
    parser.add_argument("--http", type=int, default=0, help="also create this many over HTTP (0: skip)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child)))
        return 0
    rows = []
    for count in [int(c) for c in args.counts.split(",") if c]:
        print(f"[memory] in-process {count:,} sessions", file=sys.stderr, flush=True)
        rows.append(in_process(count))
    if args.http:
        if not service_available():
            print("[memory] service.server not found: skipping the HTTP measurement", file=sys.stderr)
        else:
            print(f"[memory] over HTTP {args.http:,} sessions", file=sys.stderr, flush=True)
            rows.append(over_http(args.http))
    table = render(rows)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory.md").write_text(table)
    (args.out / "memory.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
