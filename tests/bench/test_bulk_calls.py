"""bench/bulk_calls.py measures what it says: a bulk request's engine batch on a real store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.bulk_calls import measure
from bench.servers import export_bench_model


def test_bulk_calls_reports_cpu_per_session_on_the_memory_store(tmp_path: Path) -> None:
    export_bench_model(tmp_path)
    figures = asyncio.run(measure(tmp_path, "memory", sessions=8, requests=20))
    assert figures["cpu_us_per_session"] > 0 and figures["wall_ms_per_request"] > 0
