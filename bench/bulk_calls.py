"""What a bulk step costs the service per session, without HTTP (`python -m bench.bulk_calls`).

One process builds the service's parts (registry, store, engine: service.core.services) around
the benchmark model (2-layer 64-hidden LSTM, 4 features), creates `--sessions` sessions and
sends the same body as `bench/loadgen.py`'s bulk load (one reading per session, no position)
through what the bulk route does with it: decode (service.api.sessions._decode_bulk), one
engine batch, encode (codecs.bulk_body). It reports the process CPU time per session (the
model call's worker thread included) and the wall time per request, each the best of
`--requests / 20` chunks of 20 requests, so other work on a shared machine shows in neither as
much as in a load test. `--store redis` runs the same against its own redis-server (record
cache on, as deployed: after the first request a step is one save per session).

Before/after a change: run this file with PYTHONPATH set to each checkout (`git archive`), in
turns (the figures in docs/benchmarks.md were made so).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from bench.servers import MODEL_NAME, export_bench_model

CHUNK = 20


async def measure(repository: Path, store_url: str, sessions: int, requests: int) -> dict[str, float]:
    from service.api import codecs
    from service.api.sessions import _decode_bulk
    from service.core.engine import StepRequest
    from service.core.metrics import Metrics
    from service.core.registry import ModelRegistry
    from service.core.services import Services, make_store
    from service.core.settings import Settings

    settings = Settings(model_repository=repository, session_store=store_url)
    registry = ModelRegistry(settings)
    registry.load_all()
    store = make_store(settings)
    await store.start()
    svc = Services(settings, Metrics(), registry, store, ThreadPoolExecutor(2), codecs.STEP_REPLY)
    try:
        ids = [(await svc.sessions.create(MODEL_NAME)).session_id for _ in range(sessions)]
        steps = [{"session_id": sid, "inputs": [[0.1, 0.2, 0.3, 0.4]]} for sid in ids]
        body = orjson.dumps({"steps": steps})
        limits = (settings.max_bulk_sessions, settings.max_steps_per_request)

        async def one() -> None:
            items = _decode_bulk(body, *limits)
            outcomes = await svc.engine.apply([i for i in items if isinstance(i, StepRequest)], model=MODEL_NAME)
            codecs.bulk_body(items, outcomes)

        for _ in range(5):
            await one()
        gc.collect()
        gc.freeze()  # as the server does after start-up (service/server.py)
        cpu = wall = float("inf")
        for _ in range(max(1, requests // CHUNK)):
            c, w = time.process_time(), time.perf_counter()
            for _ in range(CHUNK):
                await one()
            cpu = min(cpu, (time.process_time() - c) / CHUNK)
            wall = min(wall, (time.perf_counter() - w) / CHUNK)
        return {"cpu_us_per_session": cpu / sessions * 1e6, "wall_ms_per_request": wall * 1e3}
    finally:
        await store.close()
        svc.executor.shutdown(wait=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("memory", "redis"), default="memory")
    parser.add_argument("--sessions", type=int, default=256, help="sessions per bulk request (default 256)")
    parser.add_argument("--requests", type=int, default=200, help="requests measured, in chunks of 20")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bulk-calls-") as tmp:
        repository = Path(tmp) / "repository"
        export_bench_model(repository)
        if args.store == "redis":
            from bench.capacity import Redis

            redis = Redis(Path(tmp) / "redis")
            try:
                figures = asyncio.run(measure(repository, redis.url, args.sessions, args.requests))
            finally:
                redis.stop()
        else:
            figures = asyncio.run(measure(repository, "memory", args.sessions, args.requests))
    print(
        f"{args.store}: {args.sessions} sessions per request: {figures['cpu_us_per_session']:.1f} us CPU per session, "
        f"{figures['wall_ms_per_request']:.2f} ms wall per request (best of {max(1, args.requests // CHUNK)} chunks)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
