"""gRPC `ModelStreamInfer` with N Triton-style sequences vs HTTP V2 sequence steps, one server,
one run (the issue's target: gRPC streaming at 8 sequences >= 2x the HTTP V2 step rate).

  HTTP V2   wrk, one connection per sequence, one step per request, closed loop
            (bench/lua/stream.lua, BENCH_MODE=v2: `sequence_id`, `sequence_start` on the first)
  gRPC      one bidirectional stream carrying all N sequences interleaved (how tritonclient's
            start_stream/async_stream_infer streams), each sequence with `--window` steps in
            flight (1: closed loop, like the HTTP load), raw tensor contents; grpc.aio client

Both use the benchmark model (2-layer 64-hidden LSTM, 4 features) and the same server process.
The gRPC client is Python and shares the machine's cores with the server, so its figure is a
lower bound; rounds alternate the two loads.

    python -m bench.grpc_stream                      # 8 sequences, 10 s each, 2 rounds
    python -m bench.grpc_stream --sequences 8 --duration 5 --rounds 3 --window 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.loadgen import run_load
from bench.servers import MODEL_NAME, export_bench_model, service_server

FEATURES = 4


async def grpc_stream_load(
    target: str, model: str, sequences: int, duration: float, warmup: float, window: int = 1, features: int = FEATURES
) -> dict:
    """Steps per second over one ModelStreamInfer stream, measured after `warmup` seconds."""
    import grpc

    from service.grpc import grpc_service_pb2 as pb
    from service.grpc import grpc_service_pb2_grpc as pb_grpc

    row = np.sin(np.arange(features, dtype=np.float32) * 0.37 + 1).astype("<f4").reshape(1, 1, features).tobytes()
    base = int(time.time() * 1000) % 10**9 * 1000
    outgoing: asyncio.Queue[pb.ModelInferRequest | None] = asyncio.Queue()
    positions = [0] * sequences  # steps sent per sequence
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    counted = errors = 0

    def request(k: int) -> pb.ModelInferRequest:
        position = positions[k]
        positions[k] += 1
        req = pb.ModelInferRequest(model_name=model, id=f"{k}/{position}")
        req.parameters["sequence_id"].int64_param = base + k + 1
        if position == 0:
            req.parameters["sequence_start"].bool_param = True
        req.inputs.add(name="input", datatype="FP32", shape=[1, 1, features])
        req.raw_input_contents.append(row)
        sent_at[req.id] = time.perf_counter()
        return req

    async def requests():
        while (req := await outgoing.get()) is not None:
            yield req

    async with grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(requests())
        start = time.perf_counter()
        measure_from, stop_at = start + warmup, start + warmup + duration
        for k in range(sequences):
            for _ in range(window):
                outgoing.put_nowait(request(k))
        in_flight = sequences * window
        async for reply in call:
            now = time.perf_counter()
            in_flight -= 1
            rid = reply.infer_response.id
            if reply.error_message:
                errors += 1
            elif now >= measure_from:
                counted += 1
                latencies.append(now - sent_at.get(rid, now))
            sent_at.pop(rid, None)
            if now < stop_at:
                outgoing.put_nowait(request(int(rid.split("/", 1)[0])))
                in_flight += 1
            elif in_flight == 0:
                break
        outgoing.put_nowait(None)
        elapsed = max(time.perf_counter() - measure_from, 1e-9)
    latencies.sort()
    pct = (lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000) if latencies else None
    return {
        "mode": "grpc-stream",
        "sequences": sequences,
        "window": window,
        "steps": counted,
        "steps_per_s": counted / elapsed,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--window", type=int, default=1, help="gRPC: steps in flight per sequence")
    args = parser.parse_args(argv)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repository"
        export_bench_model(repo)
        server = service_server("service-batching", repo)
        with server.start(Path(tmp)):
            grpc_target = f"127.0.0.1:{server.env['SEQSERVE_GRPC_PORT']}"
            for round_no in range(1, args.rounds + 1):
                http = run_load(server.url, "v2", args.sequences, args.duration, args.warmup, model=MODEL_NAME)
                rows.append(
                    {
                        "round": round_no,
                        "mode": "http-v2",
                        "steps_per_s": http.steps_per_s,
                        "p50_ms": http.p50_ms,
                        "p99_ms": http.p99_ms,
                        "errors": http.errors,
                    }
                )
                g = asyncio.run(
                    grpc_stream_load(grpc_target, MODEL_NAME, args.sequences, args.duration, args.warmup, args.window)
                )
                rows.append({"round": round_no, **g})
    best = {m: max(r["steps_per_s"] for r in rows if r["mode"] == m) for m in ("http-v2", "grpc-stream")}
    for r in rows:
        print(json.dumps(r))
    ratio = best["grpc-stream"] / best["http-v2"] if best["http-v2"] else float("nan")
    print(
        f"best of {args.rounds}: HTTP V2 {best['http-v2']:.0f} steps/s, gRPC stream {best['grpc-stream']:.0f} steps/s "
        f"({args.sequences} sequences, window {args.window}): {ratio:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
