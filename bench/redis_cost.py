"""What a step costs Redis (`make bench`'s "redis" scenario; `python -m bench.redis_cost`).

The service runs against its own redis-server (AOF everysec, as deployed); each transport's load
runs while Redis's `INFO commandstats` (calls per command, the commands inside scripts included),
`INFO stats` (network bytes) and the redis-server process's CPU time are read before and after,
divided by the steps the service counted (bench/capacity.py's transport_costs):

  round trips per step   what the service sent: script calls (EVALSHA/EVAL) and other top-level
                         commands, i.e. requests that each wait for Redis's answer
  commands per step      what Redis executed, inside the scripts included
  bytes per step         network bytes in + out
  Redis CPU per step     the redis-server process's CPU time (idle subtracted)

Round trips, commands and bytes per step depend on the code, not on the machine's load; CPU
does. Single steps from 8 streams show the cache at work (each stream's session is served by
one replica: after the first step, one save per step, and the saves of steps that finish
together, one model batch, go as one script call).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.capacity import REDIS_POOL, Redis, transport_costs
from bench.servers import ROOT, export_bench_model, service_server

# (label, loadgen mode, streams, extra kwargs)
TRANSPORTS: list[tuple[str, str, int, dict]] = [
    ("HTTP step, 8 streams", "steps", 8, {}),
    ("WebSocket pipelined (16 in flight), 8 streams", "ws", 8, {"ws_window": 16}),
    ("bulk, 256 sessions/request, 1 connection", "bulk", 1, {}),
]


def _log(msg: str) -> None:
    print(f"[redis-cost {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def measure(repository: Path, work: Path, duration: float, warmup: float, cache_mb: float = 64.0) -> list[dict]:
    """One service process on its own Redis; a row per transport (transport_costs' rows)."""
    redis = Redis(work / "redis")
    try:
        env = {
            "SEQSERVE_SESSION_STORE": f"{redis.url}?max_connections={REDIS_POOL}",
            "SEQSERVE_SESSION_TTL_SECONDS": "86400",
            "SEQSERVE_SESSION_CACHE_MB": str(cache_mb),
        }
        with service_server("service-redis", repository, env=env) as server:
            server.start(work / "logs")
            rows = transport_costs(server, TRANSPORTS, duration, warmup, redis, idle_seconds=1.0)
    finally:
        redis.stop()
    for row in rows:
        row["cache_mb"] = cache_mb
    return rows


def render(rows: list[dict]) -> list[str]:
    """Markdown lines: the Redis cost per step table."""
    lines = [
        "| transport | record cache | round trips/step | commands/step | bytes/step (in + out) | Redis CPU µs/step "
        "| steps/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['transport']} | – | failed: {r['failed'][:80]} | | | | |")
            continue
        rd = r.get("redis") or {}
        cache = f"{r['cache_mb']:g} MiB" if r.get("cache_mb") else "off"

        def f(x: float | None, digits: int = 2) -> str:
            return "–" if x is None else f"{x:,.{digits}f}"

        lines.append(
            f"| {r['transport']} | {cache} | {f(rd.get('round_trips_per_step'))} | {f(rd.get('ops_per_step'))} "
            f"| {f(rd.get('bytes_per_step'), 0)} | {f(rd.get('cpu_us_per_step'), 0)} "
            f"| {f(r.get('measured_steps_per_s'), 0)} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Redis cost per step, cache on and off")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="seqserve-redis-cost-") as tmp_s:
        tmp = Path(tmp_s)
        repo = tmp / "repository"
        export_bench_model(repo)
        rows = []
        for cache_mb in (64.0, 0.0):
            _log(f"record cache {cache_mb:g} MiB")
            rows += measure(repo, tmp / f"c{cache_mb:g}", args.duration, args.warmup, cache_mb)
    text = "\n".join(render(rows))
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "redis_cost.json").write_text(json.dumps(rows, indent=2))
    return 1 if any("failed" in r or r.get("errors") for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
