"""bench/intervals.py end to end on the shortest series: the served quantiles, conformal around
the point and statsforecast's intervals are scored on the same test origins; and `make quality`
keeps the section bench/intervals.py writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import intervals, quality


@pytest.mark.slow  # trains a model and fits AutoETS
def test_interval_report_for_one_case(tmp_path: Path) -> None:
    out = tmp_path / "intervals.md"
    assert intervals.main(["--cases", "sunspots", "--output", str(out)]) == 0
    text = out.read_text()
    assert "### sunspots (yearly), 1 step ahead" in text
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert {"| **seqserve**", "| conformal around the point", "| statsforecast AutoETS"} <= set(rows)
    for row in rows.values():
        cells = row.strip("| ").split(" | ")
        if cells[0] in ("method", "---"):
            continue
        assert 0 <= float(cells[1]) <= 100 and 0 <= float(cells[2]) <= 100 and float(cells[3]) > 0
    assert str(intervals.ROOT) not in text


def test_quality_keeps_the_probabilistic_section(tmp_path: Path) -> None:
    doc = tmp_path / "quality.md"
    assert quality.kept_sections(doc) == ""
    section = "<!-- intervals -->\n## Probabilistic forecasts\nkept\n<!-- /intervals -->"
    doc.write_text(f"# old tables\n\n{section}\n")
    assert quality.kept_sections(doc) == f"\n{section}\n"
    quality.write_section(doc, section.replace("kept", "new"), *quality.KEPT[1])
    assert "new" in doc.read_text() and "kept" not in doc.read_text()
    doc.write_text("# no such section\n")
    assert quality.kept_sections(doc) == ""


def test_cases_show_data_files_without_machine_paths(tmp_path: Path) -> None:
    shown = {c.key: c.shown() for c in (*intervals.CASES, *intervals.DEFAULT_FLAGS)}
    assert "--data training/datasets/us_macro_quarterly/us_macro_quarterly.csv" in shown["us-gdp"]
    public = intervals.Case("x", "x", ("--data", str(tmp_path / "nile.csv"), "--target", "volume"), "ets")
    assert public.shown() == "--data nile.csv --target volume"
    assert all(str(intervals.ROOT) not in text for text in shown.values())
