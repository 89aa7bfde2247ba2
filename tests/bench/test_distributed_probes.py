"""bench/distributed_training.py: the compute probe runs the training loop's real step on a
bundled preset, and the summary turns records into the table and ratios the docs quote."""

from __future__ import annotations

import pytest

from bench import distributed_training


def test_compute_probe_times_every_stream_count(capsys: pytest.CaptureFixture[str]) -> None:
    distributed_training._compute_probe("sunspots", rounds=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if "ms per optimiser step" in line]
    assert [line.split(": ")[1].split(" streams")[0] for line in lines] == ["32", "16", "8", "4"]
    assert all(float(line.split(": ")[-1].split(" ms")[0]) > 0 for line in lines)


def test_summary_ratios_and_split() -> None:
    ranks = [
        {"rank": r, "steps": 100, "step_seconds": 4.0, "allreduce_seconds": 1.0, "compute_seconds": 3.0} for r in (0, 1)
    ]
    records = [
        {"nproc": 1, "seed": 0, "mase": 0.5, "train_seconds": 10.0, "wall_seconds": 20.0, "distributed": None},
        {"nproc": 1, "seed": 1, "mase": 0.7, "train_seconds": 10.0, "wall_seconds": 20.0, "distributed": None},
        {
            "nproc": 2,
            "seed": 0,
            "mase": 0.6,
            "train_seconds": 13.0,
            "wall_seconds": 30.0,
            "distributed": {"ranks": ranks, "allreduce_bytes_per_step": 4000},
        },
    ]
    text = "\n".join(distributed_training._summary(records, 2))
    assert "| 1 | 2 | 0.6 ± 0.14 | 0.500, 0.700 |" in text
    assert "training loop time ratio (2 processes / 1): 1.30x; command wall: 1.50x" in text
    assert "40.00 ms, of which all-reduce 10.00 ms (25%) and compute 30.00 ms; 4000 gradient bytes" in text
