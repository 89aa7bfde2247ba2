"""The capacity model's measured inputs (issue #14, docs/scaling.md), and the projections made
from them.

Measured on this machine, each with the load average at the time:

* **Server CPU per step, per transport**: the service (batching on) runs alone; each transport's
  load (bench/loadgen.py, bench/grpc_stream.py) runs against it while the server process's CPU
  time (/proc/PID/stat, all its threads) and its own step counter (`seqserve_steps_total` on the
  admin port's /metrics) are read before and after. steps / server CPU-second is what one core
  of a replica sustains when the replica is the bottleneck; the load generator's CPU is not in it.
  Measured with the in-memory store and with Redis.
* **Redis per step**: the same loads with SEQSERVE_SESSION_STORE=redis://...; deltas of
  `INFO commandstats` (calls per command), `INFO stats` (network bytes in and out) and the
  redis-server process's CPU time, divided by the service's step count. No MONITOR.
* **Bytes per idle session**: in the server's memory (bench/memory.py, a fresh interpreter
  filling the in-memory store) and in Redis (`INFO memory` used_memory growth after N
  creates, and `MEMORY USAGE` of a sample of the session's keys).
* **Training throughput per process**: `seqserve train` (one torch thread) on a small fixed
  budget; optimizer steps/s and timesteps/s from its manifest.

Then the projections (on paper, from those inputs): replicas, Redis Cluster shards and memory for
1 million live sessions stepping once a second, and for 100 million idle sessions.

    python -m bench.capacity                 # ~3 minutes: bench/results/capacity.{json,md}
    python -m bench.capacity --quick         # ~1 minute, short loads, small counts (smoke)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench import memory
from bench.loadgen import run_load, wrk_path
from bench.servers import MODEL_NAME, ROOT, Server, export_bench_model, free_port, service_server

RESULTS_DIR = ROOT / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Sizing assumptions of the projections (stated in the output, changeable here).
TARGET_CPU_UTILISATION = 0.6  # plan cores and Redis shards to run at 60% busy: headroom for spikes and failover
REDIS_DATA_PER_SHARD_GIB = 25.0  # dataset per Redis shard: keeps fork/AOF-rewrite and failover resync manageable
REPLICAS_PER_SHARD = 1  # one replica per master (wait_replicas=1 needs it)
LIVE_SESSIONS = 1_000_000
LIVE_STEPS_PER_S = 1.0
IDLE_SESSIONS = 100_000_000

# (label, loadgen mode, streams, extra kwargs) per transport; "grpc-stream" is bench/grpc_stream.py
TRANSPORTS: list[tuple[str, str, int, dict]] = [
    ("HTTP step, 8 streams", "steps", 8, {}),
    ("HTTP step, 64 streams", "steps", 64, {}),
    ("WebSocket pipelined (16 in flight), 8 streams", "ws", 8, {"ws_window": 16}),
    ("bulk, 256 sessions/request, 1 connection", "bulk", 1, {}),
    ("KServe V2 HTTP sequence, 8 sequences", "v2", 8, {}),
    ("gRPC ModelStreamInfer, 8 sequences", "grpc-stream", 8, {}),
]
REDIS_TRANSPORTS = ("steps", "ws", "bulk")  # the step engines (single, merged stream, bulk) against Redis
REDIS_POOL = 1024  # redis-py connection pool of the service under test (URL max_connections)


def _log(msg: str) -> None:
    print(f"[capacity {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15 of stat)


def service_steps(admin_url: str) -> float:
    """The service's own count of applied steps (sum of seqserve_steps_total over models)."""
    text = httpx.get(f"{admin_url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("seqserve_steps_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- redis-server -------------------------------------------------------------------------------


class Redis:
    """A throwaway redis-server on loopback, persistence as the deployment's (AOF everysec)."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise RuntimeError("redis-server not found (apt-get install redis-server)")
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(directory)]
        cmd += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--protected-mode", "no"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis as redis_py

        self.client = redis_py.Redis(port=self.port, socket_timeout=30)
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(Exception):
                if self.client.ping():
                    break
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("redis-server did not answer PING")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def snapshot(self) -> dict:
        """Command calls, network bytes, CPU and memory, to subtract two of."""
        calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in self.client.info("commandstats").items()}
        stats = self.client.info("stats")
        return {
            "calls": calls,
            "net_in": stats["total_net_input_bytes"],
            "net_out": stats["total_net_output_bytes"],
            "cpu_s": cpu_seconds(self.proc.pid),
            "used_memory": self.client.info("memory")["used_memory"],
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# our own INFO / CONFIG / MEMORY / SCAN calls are not the service's work
_OWN_COMMANDS = {"info", "config|resetstat", "config", "memory|usage", "memory", "scan", "ping", "dbsize"}


def _redis_delta(before: dict, after: dict) -> dict:
    calls = {
        k: after["calls"].get(k, 0) - before["calls"].get(k, 0)
        for k in after["calls"]
        if k not in _OWN_COMMANDS and after["calls"].get(k, 0) - before["calls"].get(k, 0) > 0
    }
    return {
        "calls": calls,
        "ops": sum(calls.values()),
        "net_bytes": (after["net_in"] - before["net_in"]) + (after["net_out"] - before["net_out"]),
        "net_in": after["net_in"] - before["net_in"],
        "net_out": after["net_out"] - before["net_out"],
        "cpu_s": after["cpu_s"] - before["cpu_s"],
    }


def _inside_scripts(calls: dict[str, int]) -> int:
    """Calls that ran inside scripts: every command but the script calls themselves and the
    connection handshakes (the step path sends nothing but scripts)."""
    return sum(v for k, v in calls.items() if k not in ("evalsha", "eval", "hello", "client|setinfo", "select"))


# -- measurements ---------------------------------------------------------------------------------


def _one_load(server: Server, admin: str, mode: str, streams: int, extra: dict, duration: float, warmup: float):
    if mode == "grpc-stream":
        from bench.grpc_stream import grpc_stream_load

        target = f"127.0.0.1:{server.env['SEQSERVE_GRPC_PORT']}"
        g = asyncio.run(grpc_stream_load(target, MODEL_NAME, streams, duration, warmup, window=1))
        return g["steps_per_s"], g["errors"]
    result = run_load(server.url, mode, streams, duration, warmup, model=MODEL_NAME, **extra)
    return result.steps_per_s, result.errors


def idle_cpu_rates(server: Server, redis: Redis | None, seconds: float) -> tuple[float, float]:
    """CPU-seconds per second the server (and redis-server) burn with no load: timers, health
    checks, AOF flushes. Subtracted from each load's CPU so short loads are not charged for them."""
    assert server.proc is not None
    s0, r0, t0 = cpu_seconds(server.proc.pid), cpu_seconds(redis.proc.pid) if redis else 0.0, time.perf_counter()
    time.sleep(seconds)
    wall = time.perf_counter() - t0
    s1, r1 = cpu_seconds(server.proc.pid), cpu_seconds(redis.proc.pid) if redis else 0.0
    return (s1 - s0) / wall, (r1 - r0) / wall


def transport_costs(
    server: Server,
    transports: list[tuple[str, str, int, dict]],
    duration: float,
    warmup: float,
    redis: Redis | None,
    idle_seconds: float = 2.0,
) -> list[dict]:
    """Server CPU (and Redis work) per applied step, one load per transport, idle CPU subtracted."""
    assert server.proc is not None
    admin = f"http://127.0.0.1:{server.env['SEQSERVE_ADMIN_PORT']}"
    idle_server, idle_redis = idle_cpu_rates(server, redis, idle_seconds)
    rows = []
    for label, mode, streams, extra in transports:
        load1 = os.getloadavg()[0]
        steps0, cpu0 = service_steps(admin), cpu_seconds(server.proc.pid)
        r0 = redis.snapshot() if redis else None
        t0 = time.perf_counter()
        try:
            rate, errors = _one_load(server, admin, mode, streams, extra, duration, warmup)
        except Exception as exc:  # one transport failing must not lose the others
            _log(f"{label}: FAILED {type(exc).__name__}: {exc}")
            rows.append({"transport": label, "mode": mode, "failed": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        wall = time.perf_counter() - t0
        cpu = max(0.0, cpu_seconds(server.proc.pid) - cpu0 - idle_server * wall)
        steps = service_steps(admin) - steps0
        row = {
            "transport": label,
            "mode": mode,
            "streams": streams,
            "store": "redis" if redis else "memory",
            "steps_counted_by_service": steps,
            "server_cpu_s": round(cpu, 3),
            "server_idle_cpu_per_s": round(idle_server, 4),
            "wall_s": round(wall, 3),
            "steps_per_server_cpu_s": steps / cpu if cpu > 0 else None,
            "server_cpu_share": cpu / wall,
            "measured_steps_per_s": rate,
            "errors": errors,
            "load1_before": load1,
        }
        if redis and r0:
            d = _redis_delta(r0, redis.snapshot())
            d["cpu_s"] = max(0.0, d["cpu_s"] - idle_redis * wall)
            row["redis"] = {
                # round trips: what the service sent (load and save are one script call each, plus
                # connection handshakes); commands: what Redis executed, inside those scripts included
                "round_trips_per_step": (d["ops"] - _inside_scripts(d["calls"])) / steps if steps else None,
                "ops_per_step": d["ops"] / steps if steps else None,
                "bytes_per_step": d["net_bytes"] / steps if steps else None,
                "bytes_in_per_step": d["net_in"] / steps if steps else None,
                "bytes_out_per_step": d["net_out"] / steps if steps else None,
                "cpu_us_per_step": d["cpu_s"] / steps * 1e6 if steps else None,
                "idle_cpu_per_s": round(idle_redis, 4),
                "calls": d["calls"],
            }
        _log(
            f"{label} ({row['store']}): {steps:,.0f} steps, {row['steps_per_server_cpu_s'] or 0:,.0f} steps "
            f"per server CPU-s, errors {errors}"
        )
        rows.append(row)
    return rows


def redis_idle_sessions(server: Server, redis: Redis, count: int) -> dict:
    """Bytes per idle session in Redis: used_memory growth and MEMORY USAGE of sampled keys."""
    before = redis.client.info("memory")["used_memory"]
    keys_before = redis.client.dbsize()
    made = memory.create_with_wrk(server.url, count, connections=4)
    time.sleep(0.5)
    after = redis.client.info("memory")["used_memory"]
    keys_after = redis.client.dbsize()
    created = made["created"]
    usage: dict[str, list[int]] = {}
    for key in redis.client.scan_iter(count=1000):
        kind = re.sub(r"\{[^}]*\}", "{id}", key.decode(errors="replace"))
        sizes = usage.setdefault(kind, [])
        if len(sizes) < 200:
            sizes.append(int(redis.client.memory_usage(key, samples=0) or 0))
        if sum(len(v) for v in usage.values()) >= 600:
            break
    per_kind = {k: sum(v) / len(v) for k, v in usage.items() if v}
    session_kinds = {k: v for k, v in per_kind.items() if "{id}" in k}
    by_usage = sum(session_kinds.values())
    by_growth = (after - before) / created if created else 0.0
    return {
        "sessions": created,
        "create_errors": made["errors"],
        "keys_per_session": (keys_after - keys_before) / created if created else None,
        "used_memory_growth_bytes": after - before,
        "bytes_per_session_used_memory": (after - before) / created if created else None,
        "memory_usage_by_key_kind": per_kind,
        "bytes_per_session_memory_usage": by_usage,
        # for sizing: the larger of the two (growth includes the keyspace's own tables; it is noisy
        # for small counts, when client buffers come and go)
        "bytes_per_session": max(by_usage, by_growth),
    }


def training_throughput(epochs: int, tmp: Path) -> dict:
    """`seqserve train` on the sunspots preset, 2-layer 64-hidden LSTM, one torch thread. The
    baseline formula is given (seasonal_diff, what --transform auto picks on sunspots): comparing
    the candidate formulas on validation takes longer than the training measured here and is not
    part of it."""
    repo = tmp / "train-repo"
    cmd = [sys.executable, "-m", "seqserve.cli", "train", "--preset", "sunspots", "--cell", "lstm"]
    cmd += ["--transform", "seasonal_diff"]
    cmd += ["--layers", "2", "--hidden", "64", "--epochs", str(epochs), "--patience", str(epochs + 1)]
    cmd += ["--baselines", "naive", "--quiet", "--allow-worse", "--threads", "1", "--repository", str(repo)]
    load1 = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    manifests = sorted(repo.glob("*/*/manifest.json"))
    if proc.returncode not in (0, 3) or not manifests:
        raise RuntimeError(f"seqserve train failed ({proc.returncode}): {proc.stderr[-800:]}")
    manifest = json.loads(manifests[-1].read_text())
    training, targs = manifest["training"], manifest["training_args"]
    seconds = training["seconds"]
    steps = training["steps_run"]
    timesteps = steps * targs["batch_size"] * targs["window"]
    return {
        "command": "seqserve train --preset sunspots --cell lstm --transform seasonal_diff --layers 2 --hidden 64 "
        f"--epochs {epochs} --threads 1 --baselines naive",
        "optimizer_steps": steps,
        "train_seconds": seconds,
        "process_wall_s": round(wall, 2),
        "optimizer_steps_per_s": steps / seconds,
        "batch_size": targs["batch_size"],
        "window": targs["window"],
        "timesteps_per_s": timesteps / seconds,
        "parameters": training.get("parameters"),
        "load1_before": load1,
    }


# -- projections ------------------------------------------------------------------------------------


def _best(rows: list[dict], mode: str, store: str) -> dict | None:
    ok = [r for r in rows if r.get("mode") == mode and r.get("store") == store and r.get("steps_per_server_cpu_s")]
    return max(ok, key=lambda r: r["steps_per_server_cpu_s"]) if ok else None


def project(report: dict) -> dict:
    """Replicas, shards and memory for the two fleets, per transport, from the measured inputs."""
    rows = report["transports"]
    steps_per_s = LIVE_SESSIONS * LIVE_STEPS_PER_S
    live = []
    for mode in REDIS_TRANSPORTS:
        with_redis = _best(rows, mode, "redis")
        if not with_redis or not with_redis.get("redis"):
            continue
        rd = with_redis["redis"]
        cores = steps_per_s / with_redis["steps_per_server_cpu_s"] / TARGET_CPU_UTILISATION
        shards_cpu = steps_per_s * rd["cpu_us_per_step"] / 1e6 / TARGET_CPU_UTILISATION
        live.append(
            {
                "transport": with_redis["transport"],
                "service_cores": math.ceil(cores),
                "replicas_one_core_each": math.ceil(cores),
                "redis_round_trips_per_s": steps_per_s * rd["round_trips_per_step"],
                "redis_ops_per_s": steps_per_s * rd["ops_per_step"],
                "redis_network_gbit_per_s": steps_per_s * rd["bytes_per_step"] * 8 / 1e9,
                "redis_shards_for_cpu": math.ceil(shards_cpu),
            }
        )
    idle = report["idle_sessions"]
    redis_b = idle["redis"]["bytes_per_session"]
    mem_b = idle["memory"]["bytes_per_session"]
    per_shard = REDIS_DATA_PER_SHARD_GIB * 2**30
    live_data = LIVE_SESSIONS * redis_b
    idle_data = IDLE_SESSIONS * redis_b
    return {
        "assumptions": {
            "target_cpu_utilisation": TARGET_CPU_UTILISATION,
            "redis_data_per_shard_gib": REDIS_DATA_PER_SHARD_GIB,
            "replicas_per_shard": REPLICAS_PER_SHARD,
            "one_replica_process_per_core": True,
        },
        "live": {
            "sessions": LIVE_SESSIONS,
            "steps_per_s": steps_per_s,
            "per_transport": live,
            "redis_data_gib": live_data / 2**30,
            "redis_memory_gib_with_replicas": live_data * (1 + REPLICAS_PER_SHARD) / 2**30,
            "redis_shards_for_memory": max(1, math.ceil(live_data / per_shard)),
        },
        "idle": {
            "sessions": IDLE_SESSIONS,
            "redis_data_gib": idle_data / 2**30,
            "redis_memory_gib_with_replicas": idle_data * (1 + REPLICAS_PER_SHARD) / 2**30,
            "redis_shards_for_memory": math.ceil(idle_data / per_shard),
            "in_process_memory_gib": IDLE_SESSIONS * mem_b / 2**30,
        },
    }


# -- report ---------------------------------------------------------------------------------------


def _f(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _loads(values: list[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in values)


def render(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# seqserve capacity inputs",
        "",
        f"{env['date']}, commit `{env['commit']}`, {env['cpus']} CPUs ({env['cpu_model']}); load average at start "
        f"{_loads(env['load_start'])}, at end {_loads(env['load_end'])}. "
        f"Command: `{report['command']}`. Model: 2-layer 64-hidden LSTM, 4 features.",
        "",
        "## Server CPU per step, per transport",
        "",
        "`steps per server CPU-s`: steps the service counted (`seqserve_steps_total`) over the CPU time the "
        "server process used during the load (warm-up included on both sides); the load generator is not in it.",
        "",
        "`Redis round trips/step`: script calls (EVALSHA/EVAL) and other commands sent by the service; "
        "`commands/step`: what Redis executed, the commands inside those scripts included. Session "
        "creation by the load generator is amortised into both. Idle CPU (timers, AOF flushes) is subtracted.",
        "",
        "| transport | store | steps per server CPU-s | server CPU share | measured steps/s | Redis round trips/step "
        "| Redis commands/step | Redis bytes/step | Redis CPU µs/step | errors | load1 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["transports"]:
        if "failed" in r:
            lines.append(f"| {r['transport']} | | FAILED: {r['failed']} | | | | | | | | |")
            continue
        rd = r.get("redis") or {}
        lines.append(
            f"| {r['transport']} | {r['store']} | {_f(r['steps_per_server_cpu_s'])} | {r['server_cpu_share']:.2f} "
            f"| {_f(r['measured_steps_per_s'])} | {_f(rd.get('round_trips_per_step'), 2)} "
            f"| {_f(rd.get('ops_per_step'), 2)} | {_f(rd.get('bytes_per_step'))} "
            f"| {_f(rd.get('cpu_us_per_step'), 1)} | {r['errors']} | {r['load1_before']:.2f} |"
        )
    calls = [r for r in report["transports"] if r.get("redis")]
    if calls:
        lines += ["", "Redis commands per step (the service's own calls only):", ""]
        for r in calls:
            steps = r["steps_counted_by_service"] or 1
            per = ", ".join(f"{k} {v / steps:.2f}" for k, v in sorted(r["redis"]["calls"].items()))
            lines.append(f"- {r['transport']}: {per}")
    idle = report["idle_sessions"]
    rd, mem = idle["redis"], idle["memory"]
    kinds = ", ".join(f"`{k}` {v:,.0f} B" for k, v in rd["memory_usage_by_key_kind"].items())
    lines += [
        "",
        "## Bytes per idle session",
        "",
        "| where | sessions | bytes/session | how |",
        "| --- | ---: | ---: | --- |",
        f"| server memory (in-memory store) | {mem['sessions']:,} | {_f(mem['bytes_per_session'])} "
        "| RSS growth of a fresh interpreter filling the store (bench/memory.py) |",
        f"| Redis, `used_memory` growth | {rd['sessions']:,} | {_f(rd['bytes_per_session_used_memory'])} "
        f"| {_f(rd['keys_per_session'], 2)} keys per session |",
        f"| Redis, `MEMORY USAGE` of the session's keys | sample | {_f(rd['bytes_per_session_memory_usage'])} "
        f"| {kinds} |",
        "",
        "Raw state (h + c): 1,024 bytes.",
        "",
        f"The Redis-store service ran with `?max_connections={report.get('redis_pool', REDIS_POOL)}` on its URL: with "
        "redis-py's default pool of 100, bulk requests of 256 sessions fail per item with 503 (the single-Redis "
        "store loads and saves each session of a bulk request on its own connection, concurrently).",
    ]
    tr = report.get("training")
    if tr:
        lines += [
            "",
            "## Training throughput per process",
            "",
            f"`{tr['command']}`: {tr['optimizer_steps']} optimizer steps in {tr['train_seconds']:.1f} s of training "
            f"= **{tr['optimizer_steps_per_s']:.1f} steps/s**, {tr['timesteps_per_s']:,.0f} timesteps/s "
            f"(batch {tr['batch_size']} x window {tr['window']}), {tr['parameters']:,} parameters; "
            f"the process took {tr['process_wall_s']:.1f} s with imports, data and export "
            f"(load1 {tr['load1_before']:.2f}).",
        ]
    p = report["projection"]
    a = p["assumptions"]
    lines += [
        "",
        "## Projections (on paper, from the figures above)",
        "",
        f"Assumptions: cores and Redis shards planned at {a['target_cpu_utilisation']:.0%} busy; one replica "
        f"process per core (one event loop); at most {a['redis_data_per_shard_gib']:g} GiB of data per Redis "
        f"shard; {a['replicas_per_shard']} replica per shard.",
        "",
        f"**{p['live']['sessions']:,} live sessions, one step a second each** "
        f"({p['live']['steps_per_s']:,.0f} steps/s), sessions in Redis:",
        "",
        "| transport | service cores (= replicas) | Redis round trips/s | Redis commands/s | Redis network Gbit/s "
        "| Redis shards for CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in p["live"]["per_transport"]:
        lines.append(
            f"| {t['transport']} | {t['service_cores']:,} | {t['redis_round_trips_per_s']:,.0f} "
            f"| {t['redis_ops_per_s']:,.0f} "
            f"| {t['redis_network_gbit_per_s']:.2f} | {t['redis_shards_for_cpu']:,} |"
        )
    lines += [
        "",
        f"Session data in Redis: {p['live']['redis_data_gib']:.1f} GiB "
        f"({p['live']['redis_memory_gib_with_replicas']:.1f} GiB with replicas; "
        f"{p['live']['redis_shards_for_memory']} shard(s) by memory).",
        "",
        f"**{p['idle']['sessions']:,} idle sessions**: {p['idle']['redis_data_gib']:,.0f} GiB in Redis "
        f"({p['idle']['redis_memory_gib_with_replicas']:,.0f} GiB with replicas), "
        f"**{p['idle']['redis_shards_for_memory']} shards** by memory; in replicas' own memory instead: "
        f"{p['idle']['in_process_memory_gib']:,.0f} GiB.",
    ]
    return "\n".join(lines) + "\n"


def _environment() -> dict:
    from bench.run import _cpu_model, current_commit

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "commit": current_commit(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "load_start": list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="capacity model inputs (docs/scaling.md)")
    parser.add_argument("--quick", action="store_true", help="smoke: 1 s loads, small counts, 1 training epoch")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds per load (default 8)")
    parser.add_argument("--idle-sessions", type=int, default=None, help="sessions created for bytes/session")
    parser.add_argument("--epochs", type=int, default=None, help="training budget in epochs (default 10)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    duration = args.duration or (1.0 if args.quick else 8.0)
    warmup = 0.2 if args.quick else 1.0
    idle_count = args.idle_sessions or (2_000 if args.quick else 20_000)
    epochs = args.epochs or (1 if args.quick else 10)
    if wrk_path() is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    report: dict = {
        "environment": _environment(),
        "redis_pool": REDIS_POOL,
        "command": " ".join(["python -m bench.capacity", *(argv if argv is not None else sys.argv[1:])]),
    }
    with tempfile.TemporaryDirectory(prefix="seqserve-capacity-") as tmp_s:
        tmp = Path(tmp_s)
        repo = tmp / "repository"
        export_bench_model(repo)
        rows: list[dict] = []
        idle_s = 0.5 if args.quick else 3.0
        _log("service, in-memory store")
        with service_server("capacity-memory", repo) as server:
            server.start(tmp / "logs")
            rows += transport_costs(server, TRANSPORTS, duration, warmup, None, idle_s)
        _log("service, Redis store")
        redis = Redis(tmp / "redis")
        try:
            env = {
                # redis-py's default pool is 100 connections and the single-Redis store's bulk path
                # loads and saves each session of a request concurrently: a 256-session bulk request
                # gets per-item 503s ("Too many connections") without a larger pool
                "SEQSERVE_SESSION_STORE": f"{redis.url}?max_connections={REDIS_POOL}",
                "SEQSERVE_SESSION_TTL_SECONDS": "86400",
                "SEQSERVE_MAX_SESSIONS": str(idle_count + 10_000),
            }
            with service_server("capacity-redis", repo, env=env) as server:
                server.start(tmp / "logs")
                redis_transports = [t for t in TRANSPORTS if t[1] in REDIS_TRANSPORTS]
                rows += transport_costs(server, redis_transports, duration, warmup, redis, idle_s)
                redis.client.flushall()
                time.sleep(0.5)
                _log(f"{idle_count:,} idle sessions in Redis")
                redis_idle = redis_idle_sessions(server, redis, idle_count)
        finally:
            redis.stop()
        report["transports"] = rows
        _log(f"{idle_count:,} idle sessions in memory")
        report["idle_sessions"] = {"redis": redis_idle, "memory": memory.in_process(max(idle_count, 5_000))}
        _log(f"training, {epochs} epoch(s)")
        report["training"] = training_throughput(epochs, tmp)
    report["environment"]["load_end"] = list(os.getloadavg())
    report["projection"] = project(report)
    markdown = render(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "capacity.json").write_text(json.dumps(report, indent=2))
    (args.out / "capacity.md").write_text(markdown)
    print(markdown)
    _log(f"written {args.out / 'capacity.md'} and capacity.json")
    failed = [r for r in rows if "failed" in r or r.get("errors")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
