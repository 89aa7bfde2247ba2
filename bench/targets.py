"""The benchmark targets of the issues, evaluated from the rows of ONE run (bench/run.py).

Each target compares two rows of the same run (or one row with a fixed figure) and reads MET,
MISSED, or NOT MEASURED when a row is missing or failed (a peer that could not run, a scenario
left out). Ratios use each row's best round; for the side-by-side pairs the per-round ratios are
kept too, as the rounds ran next to each other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

CURRENT = "service-batching"


@dataclass
class Target:
    issue: int
    text: str
    threshold: float
    unit: str  # "x" (ratio, higher is better), "steps/s" (higher), "ms" (lower), "max" (a count: lower)
    value: float | None = None
    measured: str = ""
    per_round: list[float] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.value is None:
            return "NOT MEASURED"
        ok = self.value <= self.threshold if self.unit in ("ms", "max") else self.value >= self.threshold
        return "MET" if ok else "MISSED"

    def to_dict(self) -> dict:
        return {**asdict(self), "status": self.status}


def _find(rows: list[dict], server: str, mode: str, streams: int) -> dict | None:
    for r in rows:
        if r.get("server") == server and r.get("mode") == mode and r.get("streams") == streams and "steps_per_s" in r:
            return r
    return None


def _per_round(every_round: list[dict], a: tuple[str, str, int], b: tuple[str, str, int]) -> list[float]:
    """a/b within each round where both ran."""
    out = []
    for n in sorted({r.get("round", 1) for r in every_round}):
        ra = _find([r for r in every_round if r.get("round", 1) == n], *a)
        rb = _find([r for r in every_round if r.get("round", 1) == n], *b)
        if ra and rb and rb["steps_per_s"]:
            out.append(round(ra["steps_per_s"] / rb["steps_per_s"], 3))
    return out


def _ratio_target(
    rows: list[dict],
    every_round: list[dict],
    issue: int,
    text: str,
    threshold: float,
    a: tuple[str, str, int],
    b: tuple[str, str, int],
    names: tuple[str, str],
) -> Target:
    t = Target(issue, text, threshold, "x")
    ra, rb = _find(rows, *a), _find(rows, *b)
    if ra and rb and rb["steps_per_s"]:
        t.value = ra["steps_per_s"] / rb["steps_per_s"]
        t.measured = f"{names[0]} {ra['steps_per_s']:,.0f} vs {names[1]} {rb['steps_per_s']:,.0f} steps/s"
        t.per_round = _per_round(every_round, a, b)
    else:
        missing = [n for n, r in zip(names, (ra, rb), strict=True) if not r]
        t.measured = f"no {' / '.join(missing)} figure in this run"
    return t


def evaluate(
    rows: list[dict], every_round: list[dict] | None = None, redis_rows: list[dict] | None = None
) -> list[dict]:
    """All targets, in the order of the issues' text."""
    every_round = every_round or rows
    targets: list[Target] = []
    for n in (64, 8):
        targets.append(
            _ratio_target(
                rows,
                every_round,
                12,
                f"No regression: {n} HTTP streams within 5% of the baseline commit",
                0.95,
                (CURRENT, "steps", n),
                ("baseline", "steps", n),
                ("current", "baseline"),
            )
        )
    targets.append(
        _ratio_target(
            rows,
            every_round,
            12,
            "8 HTTP streams, one step per request: >= 2x raw Triton's sequence batcher (same wrk load)",
            2.0,
            (CURRENT, "steps", 8),
            ("triton", "triton", 8),
            ("seqserve", "Triton"),
        )
    )
    bulk = Target(12, "Bulk steps (256 sessions per request): >= 100,000 stream-steps/s", 100_000, "steps/s")
    bulk_rows = [r for r in rows if r.get("server") == CURRENT and r.get("mode") == "bulk" and "steps_per_s" in r]
    if bulk_rows:
        best = max(bulk_rows, key=lambda r: r["steps_per_s"])
        bulk.value = best["steps_per_s"]
        bulk.measured = f"{best['steps_per_s']:,.0f} stream-steps/s ({best.get('connections', '?')} connection(s))"
    else:
        bulk.measured = "no bulk figure in this run"
    targets.append(bulk)
    targets.append(
        _ratio_target(
            rows,
            every_round,
            12,
            "WebSocket pipelined (16 in flight): >= 5x the HTTP per-step rate at 8 streams",
            5.0,
            (CURRENT, "ws-pipelined", 8),
            (CURRENT, "steps", 8),
            ("WebSocket", "HTTP"),
        )
    )
    targets.append(
        _ratio_target(
            rows,
            every_round,
            12,
            "gRPC ModelStreamInfer, 8 sequences: >= 2x the HTTP V2 step rate",
            2.0,
            (CURRENT, "grpc-stream", 8),
            (CURRENT, "v2", 8),
            ("gRPC stream", "HTTP V2"),
        )
    )
    targets.append(
        _ratio_target(
            rows,
            every_round,
            6,
            "64 HTTP streams: >= 3x the naive baseline",
            3.0,
            (CURRENT, "steps", 64),
            ("naive", "naive", 64),
            ("seqserve", "naive"),
        )
    )
    floor = _ratio_target(
        rows,
        every_round,
        6,
        "64 HTTP streams: >= 60% of the FastAPI no-op floor",
        0.6,
        (CURRENT, "steps", 64),
        ("floor", "noop", 64),
        ("seqserve", "floor"),
    )
    targets.append(floor)
    for n, limit in ((64, 50.0), (8, 5.0)):
        t = Target(6, f"{n} HTTP streams: p99 <= {limit:g} ms", limit, "ms")
        r = _find(rows, CURRENT, "steps", n)
        if r:
            t.value = r["p99_ms"]
            t.measured = f"p99 {r['p99_ms']:.2f} ms"
        else:
            t.measured = f"no {n}-stream figure in this run"
        targets.append(t)
    targets.append(
        _ratio_target(
            rows,
            every_round,
            20,
            "The forecaster: >= 0.95x the plain 2x64 LSTM over HTTP at 8 streams (same server)",
            0.95,
            (CURRENT, "forecaster", 8),
            (CURRENT, "steps", 8),
            ("forecaster", "LSTM"),
        )
    )
    targets += _redis_targets(redis_rows or [])
    return [t.to_dict() for t in targets]


def _redis_targets(redis_rows: list[dict]) -> list[Target]:
    """Redis per step, 8 HTTP streams through one replica, steady state (issue #20)."""
    row = next((r for r in redis_rows if r.get("mode") == "steps" and "redis" in r), None)
    out = []
    for key, text, limit in (
        ("round_trips_per_step", "Redis round trips per step (8 HTTP streams): <= 1.1", 1.1),
        ("ops_per_step", "Redis commands per step (8 HTTP streams): <= 5", 5.0),
        ("bytes_per_step", "Redis network bytes per step (8 HTTP streams): <= 2,000", 2000.0),
        # the redis-server process's CPU time, idle subtracted: depends on the machine's load
        ("cpu_us_per_step", "Redis CPU per step (8 HTTP streams): <= 50 µs", 50.0),
    ):
        t = Target(20, text, limit, "max")
        value = row["redis"].get(key) if row else None
        if row is not None and value is not None:
            t.value = value
            t.measured = f"{value:,.2f}"
        else:
            t.measured = "no Redis figure in this run"
        out.append(t)
    return out


def render(targets: list[dict]) -> list[str]:
    """Markdown lines: one row per target with its measured figures, value and status."""
    lines = [
        "| issue | target | measured | value | per round | status |",
        "| ---: | --- | --- | ---: | --- | --- |",
    ]
    for t in targets:
        if t["value"] is None:
            value = "–"
        elif t["unit"] == "x":
            value = f"{t['value']:.2f}x"
        elif t["unit"] == "ms":
            value = f"{t['value']:.2f} ms"
        elif t["unit"] == "max":
            value = f"{t['value']:,.2f}"
        else:
            value = f"{t['value']:,.0f}"
        rounds = ", ".join(f"{x:.2f}x" for x in t["per_round"]) if len(t["per_round"]) > 1 else ""
        status = f"**{t['status']}**" if t["status"] != "MET" else "MET"
        lines.append(f"| #{t['issue']} | {t['text']} | {t['measured']} | {value} | {rounds} | {status} |")
    return lines
