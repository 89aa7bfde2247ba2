"""Load generator: N concurrent in-order streams against seqserve, the naive baseline or the floor.

Every HTTP mode runs `wrk` (C, epoll) with bench/lua/stream.lua as a separate process, one wrk
thread per stream and one connection per thread (`wrk -tN -cN`): a stream sends its next step
only after the previous response arrived, so it is a closed loop of N in-order streams, and the
client costs far less CPU than any Python client would on a 2-core machine. Latency percentiles
come from wrk's own histogram (done() summary).

Modes
  steps    POST /v1/sessions/{id}/steps, one session per stream, `position` carried and incremented
  naive    the baseline (bench/naive_server.py): POST /step with client-carried h/c; the Lua script
           slices h and c out of each response and sends them back in the next request
  noop     POST a step-shaped body to /v1/noop (the floor: HTTP + JSON, no model, no state)
  predict  POST /v1/models/{m}/predict with one [1][1][F] sequence (stateless, one step)
  bulk     POST /v1/models/{m}/sessions/steps, BULK (256) sessions per request, one step each;
           stream-steps = requests * BULK - per-item errors
  v2       POST /v2/models/{m}/infer, one KServe V2 sequence per stream (`sequence_id`, JSON tensors)
  triton   the same against raw Triton (bench/triton.py): integer sequence ids, input X [1, F]
  ws       WebSocket /v1/sessions/{id}/stream: a Python asyncio client (`websockets`), N streams
           spread over --ws-procs processes, each sending one step and awaiting the reply

Warm-up runs on its own sessions (fresh ones are created for the measured run), so every
measured stream starts at position 0 and the warm-up's latencies never reach the histogram.

    python -m bench.loadgen --url http://127.0.0.1:8000 --mode steps --streams 64 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import multiprocessing as mp
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

LUA_SCRIPT = Path(__file__).resolve().parent / "lua" / "stream.lua"
HTTP_MODES = ("steps", "naive", "noop", "predict", "bulk", "v2", "triton")
MODES = (*HTTP_MODES, "ws")
DEFAULT_BULK = 256


class LoadError(RuntimeError):
    """The load could not be run at all (wrk missing, server not answering, bad output)."""


@dataclass
class LoadResult:
    mode: str
    streams: int
    duration_s: float
    requests: int = 0
    stream_steps: int = 0
    requests_per_s: float = 0.0
    steps_per_s: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    errors: int = 0
    client: str = "wrk"
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise LoadError(f"refusing to load a non-loopback address: {host!r}")


# -- sessions -------------------------------------------------------------------------------------


def create_sessions(url: str, model: str, count: int, concurrency: int = 16) -> list[str]:
    """`count` sessions via POST /v1/models/{model}/sessions (a few hundred at most here)."""
    if count <= 0:
        return []
    target = f"{url}/v1/models/{model}/sessions"

    def make(client: httpx.Client) -> str:
        resp = client.post(target, json={})
        if resp.status_code != 201 and resp.status_code != 200:
            raise LoadError(f"session create: {resp.status_code} {resp.text[:200]}")
        return resp.json()["session_id"]

    with (
        httpx.Client(timeout=30.0, limits=httpx.Limits(max_connections=concurrency)) as client,
        ThreadPoolExecutor(concurrency) as pool,
    ):
        return list(pool.map(lambda _: make(client), range(count)))


# -- wrk ------------------------------------------------------------------------------------------


def _run_wrk(
    url: str,
    mode: str,
    threads: int,
    duration: float,
    *,
    ids: list[str] | None = None,
    model: str = "bench",
    features: int = 4,
    layers: int = 2,
    hidden: int = 64,
    lstm: bool = True,
    bulk: int = DEFAULT_BULK,
    timeout_s: float = 10.0,
) -> dict:
    wrk = wrk_path()
    if wrk is None:
        raise LoadError("wrk not found on PATH (apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".ids", delete=False) as fh:
        fh.write("\n".join(ids or []))
        ids_file = fh.name
    env = {
        **os.environ,
        "BENCH_MODE": mode,
        "BENCH_IDS": ids_file,
        "BENCH_MODEL": model,
        "BENCH_FEATURES": str(features),
        "BENCH_LAYERS": str(layers),
        "BENCH_HIDDEN": str(hidden),
        "BENCH_LSTM": "1" if lstm else "0",
        "BENCH_BULK": str(bulk),
    }
    seconds = max(1, math.ceil(duration))
    cmd = [wrk, f"-t{threads}", f"-c{threads}", f"-d{seconds}s", f"--timeout={int(timeout_s)}s"]
    cmd += ["-s", str(LUA_SCRIPT), url]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
    finally:
        os.unlink(ids_file)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT ") :])
    raise LoadError(f"wrk gave no result (rc={proc.returncode}): {proc.stderr.strip()[-500:]} {proc.stdout[-500:]}")


def _http_load(
    url: str, mode: str, streams: int, duration: float, warmup: float, model: str, bulk: int, **shape
) -> LoadResult:
    threads = streams
    per_thread = {"steps": 1, "bulk": bulk}.get(mode, 0)

    def ids() -> list[str]:
        return create_sessions(url, model, threads * per_thread) if per_thread else []

    kw = {"model": model, "bulk": bulk, **shape}
    if warmup > 0:
        _run_wrk(url, mode, threads, warmup, ids=ids(), **kw)
    raw = _run_wrk(url, mode, threads, duration, ids=ids(), **kw)
    seconds = raw["duration_us"] / 1e6 or duration
    errors = (
        raw["non2xx"]
        + raw["item_errors"]
        + raw["bad_body"]
        + raw["connect_errors"]
        + raw["read_errors"]
        + raw["write_errors"]
        + raw["timeouts"]
    )
    steps = raw["ok"] * bulk - raw["item_errors"] if mode == "bulk" else raw["ok"]
    return LoadResult(
        mode=mode,
        streams=streams if mode != "bulk" else streams * bulk,
        duration_s=round(seconds, 3),
        requests=raw["requests"],
        stream_steps=steps,
        requests_per_s=raw["requests"] / seconds,
        steps_per_s=steps / seconds,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        errors=errors,
        client="wrk",
        detail={"wrk": raw, "connections": threads},
    )


# -- WebSocket ------------------------------------------------------------------------------------


def _ws_worker(
    ws_base: str, ids: list[str], features: int, start_at: float, measure_at: float, end_at: float, q, window: int = 1
):
    import orjson
    from websockets.asyncio.client import connect

    row = [round(math.sin(0.37 + i + 1), 4) for i in range(features)]
    message = orjson.dumps({"inputs": [row]}).decode()
    latencies: list[float] = []
    counts = {"steps": 0, "errors": 0}

    def account(reply: dict, t0: float, t1: float, position: int) -> tuple[int, bool]:
        """Check one reply against the stream's position and count it in the measured
        window; returns the new position and whether the stream is done."""
        ok = "outputs" in reply and "error" not in reply and reply.get("position") == position + 1
        position += ok
        if t0 < measure_at:
            return position, False
        if t1 > end_at:
            return position, True
        if ok:
            counts["steps"] += 1
            latencies.append(t1 - t0)
        else:
            counts["errors"] += 1
        return position, False

    async def stream(sid: str) -> None:
        position = 0  # the session's position, checked against every reply
        try:
            async with connect(f"{ws_base}/v1/sessions/{sid}/stream", compression=None, max_size=None) as ws:
                while True:
                    t0 = time.perf_counter()
                    if t0 >= end_at:
                        return
                    await ws.send(message)
                    reply = orjson.loads(await ws.recv())
                    position, done = account(reply, t0, time.perf_counter(), position)
                    if done:
                        return
        except Exception:
            counts["errors"] += 1

    async def pipelined(sid: str) -> None:
        """Up to `window` steps in flight: a device sending readings as they come, reading the
        replies as they arrive (in order, positions checked); latency is send -> reply."""
        position = 0
        sent: collections.deque[float] = collections.deque()
        slots = asyncio.Semaphore(window)
        try:
            async with connect(f"{ws_base}/v1/sessions/{sid}/stream", compression=None, max_size=None) as ws:

                async def send() -> None:
                    while time.perf_counter() < end_at:
                        await slots.acquire()
                        sent.append(time.perf_counter())
                        await ws.send(message)

                sender = asyncio.create_task(send())
                try:
                    while True:
                        remaining = end_at - time.perf_counter()
                        if remaining <= 0:
                            return
                        try:
                            reply = orjson.loads(await asyncio.wait_for(ws.recv(), remaining + 1))
                        except TimeoutError:
                            return
                        t1 = time.perf_counter()
                        slots.release()
                        position, done = account(reply, sent.popleft(), t1, position)
                        if done:
                            return
                finally:
                    sender.cancel()
        except Exception:
            counts["errors"] += 1

    async def main() -> None:
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
        await asyncio.gather(*((stream if window == 1 else pipelined)(s) for s in ids))

    asyncio.run(main())
    q.put((counts["steps"], counts["errors"], latencies))


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, math.ceil(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def _ws_load(
    url: str, streams: int, duration: float, warmup: float, model: str, features: int, procs: int, window: int = 1
):
    ids = create_sessions(url, model, streams)
    ws_base = "ws" + url[len("http") :]
    procs = max(1, min(procs, streams))
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    # perf_counter is CLOCK_MONOTONIC on Linux: comparable across the forked processes
    start_at = time.perf_counter() + 0.5
    measure_at = start_at + warmup
    end_at = measure_at + duration
    workers = [
        ctx.Process(target=_ws_worker, args=(ws_base, ids[i::procs], features, start_at, measure_at, end_at, q, window))
        for i in range(procs)
    ]
    for w in workers:
        w.start()
    results = [q.get(timeout=warmup + duration + 60) for _ in workers]
    for w in workers:
        w.join(10)
    steps = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    lat = sorted(x for r in results for x in r[2])
    return LoadResult(
        mode="ws",
        streams=streams,
        duration_s=duration,
        requests=steps,
        stream_steps=steps,
        requests_per_s=steps / duration,
        steps_per_s=steps / duration,
        p50_ms=_percentile(lat, 50) * 1000,
        p90_ms=_percentile(lat, 90) * 1000,
        p99_ms=_percentile(lat, 99) * 1000,
        max_ms=(lat[-1] * 1000) if lat else 0.0,
        errors=errors,
        client=f"python-websockets x{procs}" + (f", window {window}" if window > 1 else ""),
        detail={"processes": procs, "window": window},
    )


# -- entry ----------------------------------------------------------------------------------------


def run_load(
    url: str,
    mode: str,
    streams: int,
    duration: float = 10.0,
    warmup: float = 2.0,
    *,
    model: str = "bench",
    features: int = 4,
    layers: int = 2,
    hidden: int = 64,
    lstm: bool = True,
    bulk: int = DEFAULT_BULK,
    ws_procs: int = 1,
    ws_window: int = 1,
) -> LoadResult:
    """Run one load and return its result; raises LoadError when it cannot run at all."""
    url = url.rstrip("/")
    _check_loopback(url)
    if mode not in MODES:
        raise LoadError(f"unknown mode {mode!r}")
    if mode == "ws":
        return _ws_load(url, streams, duration, warmup, model, features, ws_procs, ws_window)
    return _http_load(
        url, mode, streams, duration, warmup, model, bulk, features=features, layers=layers, hidden=hidden, lstm=lstm
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="seqserve load generator (wrk + Lua; Python for ws)")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--mode", choices=MODES, default="steps")
    parser.add_argument("--streams", type=int, default=64, help="concurrent streams (bulk: wrk connections)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--model", default="bench")
    parser.add_argument("--features", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2, help="naive mode: state layers")
    parser.add_argument("--hidden", type=int, default=64, help="naive mode: state width")
    parser.add_argument("--gru", action="store_true", help="naive mode: no c state")
    parser.add_argument("--bulk", type=int, default=DEFAULT_BULK, help="sessions per bulk request")
    parser.add_argument("--ws-procs", type=int, default=1, help="client processes for ws mode")
    parser.add_argument(
        "--ws-window", type=int, default=1, help="ws mode: steps in flight per stream (1: wait for each reply)"
    )
    args = parser.parse_args(argv)
    result = run_load(
        args.url,
        args.mode,
        args.streams,
        args.duration,
        args.warmup,
        model=args.model,
        features=args.features,
        layers=args.layers,
        hidden=args.hidden,
        lstm=not args.gru,
        bulk=args.bulk,
        ws_procs=args.ws_procs,
        ws_window=args.ws_window,
    )
    print(json.dumps(result.to_dict(), indent=2))
    return 0 if result.errors == 0 and result.stream_steps > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
