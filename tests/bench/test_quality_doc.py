"""`make quality` end to end on one small case: it trains as `seqserve train` would and writes a
markdown table with the model, the baselines, the gate and the commit measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import quality


def test_quality_report_for_one_case(tmp_path: Path) -> None:
    out = tmp_path / "quality.md"
    code = quality.main(["--cases", "sunspots,vowels", "--output", str(out), "--extra", "--epochs 1 --baselines naive"])
    assert code == 0
    text = out.read_text()
    assert f"at commit `{quality.commit_measured()}`" in text
    assert "## sunspots (yearly), 1 step ahead" in text and "`seqserve train --preset sunspots`" in text
    assert "## Japanese vowels, speaker classification" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert any(r.startswith("| **seqserve GRU** (streaming) |") and "gate: " in r for r in rows)
    assert any(r.startswith("| naive |") for r in rows) and any(r.startswith("| seasonal_naive_11 |") for r in rows)
    assert any(r.startswith("| majority class") for r in rows)
    assert str(quality.ROOT) not in text  # no machine paths in the doc


def test_unknown_case_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        quality.main(["--cases", "nope", "--output", str(tmp_path / "q.md")])
