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


def test_default_flags_section_replaces_its_previous_version(tmp_path: Path) -> None:
    doc = tmp_path / "quality.md"
    doc.write_text("# Quality\n\nkept\n")
    quality.write_section(doc, f"{quality.START}\nfirst\n{quality.END}")
    quality.write_section(doc, f"{quality.START}\nsecond\n{quality.END}")
    text = doc.read_text()
    assert text.count(quality.START) == 1 and "second" in text and "first" not in text and "kept" in text


@pytest.mark.slow
def test_default_flags_row_trains_with_only_data_and_target(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    t = np.arange(48)
    months = pd.period_range("2000-01", periods=48, freq="M").strftime("%Y-%m")
    path = tmp_path / "sales.csv"
    noise = np.random.default_rng(0).normal(0, 1, 48)
    pd.DataFrame({"month": months, "sales": 50 + t + 8 * np.sin(2 * np.pi * t / 12) + noise}).to_csv(path, index=False)
    row = quality._default_row("sales", str(path), "sales", tmp_path)
    assert row[:4] == ["sales", "48", "monthly", "[12]"]
    assert row[4].startswith("**") and not row[4].startswith("refused")
    assert row[-1].split(";")[0] in ("network", "formula")
