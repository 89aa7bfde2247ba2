"""Forecast quality on the bundled datasets, seqserve against every baseline, in one run.

`make quality` (`python -m bench.quality`) trains each case below exactly as a user would with
`seqserve train` (the same settings resolution, split, evaluation and quality gate), into a
temporary repository, and writes docs/quality.md: one table per dataset with the model next to
naive, every seasonal naive and the statsforecast models, all measured in this run on the same
test origins, with the commit measured.

    python -m bench.quality                       # every case -> docs/quality.md
    python -m bench.quality --cases co2,sunspots --output /tmp/q.md
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT / "training" / "datasets"
ELECTRICITY = str(DATASETS / "electricity_halfhourly" / "electricity_halfhourly.csv")
CO2 = str(DATASETS / "co2_weekly" / "co2_weekly.csv")
US_MACRO = str(DATASETS / "us_macro_quarterly" / "us_macro_quarterly.csv")


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    argv: tuple[str, ...]
    note: str = ""


CASES: tuple[Case, ...] = (
    Case("electricity", "electricity, 1 step ahead", ("--preset", "electricity")),
    Case(
        "electricity-day-ahead",
        "electricity, day ahead (48 half-hours), Taylor's design",
        ("--preset", "electricity", "--horizon", "48", "--val-fraction", "0.08334", "--test-fraction", "0.33333"),
        "Taylor (2003): fit on the first 8 weeks, test on the last 4; here 7 weeks train, 1 week validation "
        "(early stopping, transform choice), and every origin of the last 4 weeks forecasts leads 1-48. "
        "Headline: mean MAPE over leads 1-48 (the MAPE column).",
    ),
    Case(
        "electricity-default",
        "electricity, 1 step ahead, default flags",
        ("--data", ELECTRICITY, "--target", "demand_mw", "--season", "48,336", "--name", "electricity-default"),
        "Only --data, --target and --season, as a new user would start.",
    ),
    Case("co2", "co2 (weekly, trend + yearly season), 4 steps ahead", ("--preset", "co2")),
    Case(
        "co2-default",
        "co2, 1 step ahead, default flags",
        ("--data", CO2, "--target", "co2_ppm", "--season", "52", "--name", "co2-default"),
        "Only --data, --target and --season.",
    ),
    Case("sunspots", "sunspots (yearly), 1 step ahead", ("--preset", "sunspots")),
    Case(
        "us-gdp",
        "US real GDP (quarterly, trend), 1 step ahead, default flags",
        ("--data", US_MACRO, "--target", "realgdp", "--season", "4", "--name", "us-gdp"),
        "Only --data, --target and --season (4 quarters).",
    ),
    Case(
        "world-fertility",
        "world fertility (194 yearly series, one global model), 1 year ahead",
        ("--preset", "world_fertility"),
        "One model across every country (`--series-id country_code`), split within each series; every "
        "baseline is fitted per series on that series' training block. Headline: mean MASE over series; "
        "`model better on` is the share of series where the model's MASE is lower.",
    ),
    Case(
        "world-fertility-5",
        "world fertility, one global model, 5 years ahead",
        ("--preset", "world_fertility", "--horizon", "5", "--name", "world_fertility-5"),
        "As above, leads 1-5 (MASE over the five leads). SGP is left out: its gaps leave no fully observed "
        "5-year test origin. The statistical fits are reused from the 1-year case when both run in one process "
        "(same training blocks), so their `fit s` is then only the roll over the test origins.",
    ),
    Case("vowels", "Japanese vowels, speaker classification", ("--preset", "vowels")),
)


def _log(message: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def commit_measured() -> str:
    """Short hash of HEAD, marked `+local changes` when training/ or models/ differ from it."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "training", "models"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("QUALITY_COMMIT", "unknown")
    sha = os.environ.get("QUALITY_COMMIT", sha) or "unknown"
    return f"{sha} +local changes" if dirty else sha


_BASELINE_CACHE: dict[tuple[Any, ...], Any] = {}


def _cached_baselines() -> None:
    """Cases on the same series, split and seasons (electricity preset and default flags) share
    their baselines: the statsforecast ones take minutes on a busy machine, and are identical."""
    import hashlib

    from training import baselines

    if getattr(baselines.compute_baselines, "cached", False):
        return
    compute = baselines.compute_baselines

    def cached(data: Any, pairs: Any, seasons: Any, **kwargs: Any) -> Any:
        digest = hashlib.sha256(data.targets.tobytes()).hexdigest()
        key = (digest, data.train_rows, data.horizon, pairs.tobytes(), tuple(seasons), kwargs.get("statistical"))
        if key not in _BASELINE_CACHE:
            _BASELINE_CACHE[key] = compute(data, pairs, seasons, **kwargs)
        return _BASELINE_CACHE[key]

    cached.cached = True  # type: ignore[attr-defined]
    baselines.compute_baselines = cached  # type: ignore[assignment]
    start = baselines.start

    def start_here(*args: Any, **kwargs: Any) -> Any:
        """The pipeline's entry, kept in this process so the cache above serves it."""
        return start(*args, **{**kwargs, "background": False})

    baselines.start = start_here  # type: ignore[assignment]


def run_case(case: Case, repository: Path, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train one case as `seqserve train` would; returns what the tables need."""
    from training.cli import add_arguments, resolve
    from training.pipeline import train_and_publish

    _cached_baselines()
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([*case.argv, *extra, "--repository", str(repository / case.key), "--quiet"])
    settings = resolve(args)
    start = time.perf_counter()
    outcomes = train_and_publish(settings)
    seconds = time.perf_counter() - start
    return {
        "case": case,
        "settings": settings,
        "seconds": seconds,
        "outcomes": [
            {
                "cell": o.cell,
                "metrics": o.metrics,
                "gate": o.gate,
                "train_seconds": o.history.seconds,
                "parameters": o.model.num_parameters(),
                "error": o.error,
                "record": o.record,
            }
            for o in outcomes
        ],
    }


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


def _forecast_table(result: dict[str, Any]) -> list[str]:
    first = result["outcomes"][0]["metrics"]
    h = result["settings"].horizon
    lines = [
        f"Test origins {first['test_origins'][0]}–{first['test_origins'][1]} ({first['test_pairs']}), "
        f"horizon {h}; best baseline: `{first['best_baseline']}`.",
        "",
        "| model | MAE | RMSE | MASE | MAPE % | fit s | notes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for outcome in result["outcomes"]:
        m = outcome["metrics"]
        s = m["streaming"]
        transform = (m.get("transform") or {}).get("chosen", "-")
        verdict = "promoted" if outcome["gate"].get("promoted") else "**not promoted**"
        notes = f"transform {transform}; {outcome['parameters']} parameters; gate: {verdict}"
        lines.append(
            f"| **seqserve {outcome['cell'].upper()}** (streaming) | **{_num(s['mae'])}** | {_num(s['rmse'])} | "
            f"{_num(s['mase'], 3)} | {_num(s['mape'], 3)} | {outcome['train_seconds']:.0f} | {notes} |"
        )
    for name, info in first["baselines"].items():
        m = first[name]
        lines.append(
            f"| {name} | {_num(m['mae'])} | {_num(m['rmse'])} | {_num(m['mase'], 3)} | {_num(m['mape'], 3)} | "
            f"{info['seconds']:.0f} | {info['description']} |"
        )
    for name, why in first.get("baselines_skipped", {}).items():
        lines.append(f"| {name} | - | - | - | - | - | not run: {why} |")
    if h > 1:
        leads = sorted({1, max(1, h // 4), max(1, h // 2), h})
        lines += [
            "",
            "MAPE % by lead time:",
            "",
            "| model | " + " | ".join(f"lead {k}" for k in leads) + " | mean |",
            "| --- | " + " | ".join("---:" for _ in leads) + " | ---: |",
        ]
        rows = [(f"seqserve {o['cell'].upper()}", o["metrics"]["streaming"]) for o in result["outcomes"]]
        rows += [(name, first[name]) for name in first["baselines"]]
        for name, m in rows:
            by = m["by_lead"]["mape"]
            lines.append(f"| {name} | " + " | ".join(_num(by[k - 1], 3) for k in leads) + f" | {_num(m['mape'], 3)} |")
    return lines


def _global_table(result: dict[str, Any]) -> list[str]:
    """A global model over many series: mean (and median) per-series MASE, pooled MAE, and the
    share of series where the model beats each baseline."""
    first = result["outcomes"][0]["metrics"]
    lines = [
        f"{first['series']} series, {first['test_pairs']} test origins in all, horizon "
        f"{result['settings'].horizon}; best baseline on mean MASE: `{first['best_baseline']}`.",
        "",
        "| model | mean MASE | median MASE | MAE (pooled) | model better on | fit s | notes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for outcome in result["outcomes"]:
        m = outcome["metrics"]
        s = m["streaming"]
        verdict = "promoted" if outcome["gate"].get("promoted") else "**not promoted**"
        transform = (m.get("transform") or {}).get("chosen", "-")
        lines.append(
            f"| **seqserve {outcome['cell'].upper()}** (streaming, one session per series) | **{s['mase']:.3f}** | "
            f"{s['median_mase']:.3f} | {_num(s['mae'])} | - | {outcome['train_seconds']:.0f} | transform "
            f"{transform}; {outcome['parameters']} parameters; gate: {verdict} |"
        )
    for name, info in first["baselines"].items():
        m = first[name]
        lines.append(
            f"| {name} (per series) | {m['mase']:.3f} | {m['median_mase']:.3f} | {_num(m['mae'])} | "
            f"{first['beats'][name]:.0%} of {m['series']} | {info['seconds']:.0f} | {info['description']} |"
        )
    for name, why in first.get("baselines_skipped", {}).items():
        lines.append(f"| {name} | - | - | - | - | - | failed on some series: {why} |")
    return lines


def _classify_table(result: dict[str, Any]) -> list[str]:
    lines = ["| model | accuracy | macro-F1 | fit s | notes |", "| --- | ---: | ---: | ---: | --- |"]
    for outcome in result["outcomes"]:
        m = outcome["metrics"]["model"]
        verdict = "promoted" if outcome["gate"].get("promoted") else "**not promoted**"
        lines.append(
            f"| **seqserve {outcome['cell'].upper()}** | **{m['accuracy']:.4f}** | {m['macro_f1']:.4f} | "
            f"{outcome['train_seconds']:.0f} | {outcome['parameters']} parameters; gate: {verdict} |"
        )
    majority = result["outcomes"][0]["metrics"]["majority"]
    lines.append(
        f"| majority class ({majority['class']}) | {majority['accuracy']:.4f} | {majority['macro_f1']:.4f} | 0 | |"
    )
    return lines


def _summary(results: list[dict[str, Any]]) -> list[str]:
    """One line per case: seqserve's headline error next to the best baseline's."""
    lines = [
        "## Summary",
        "",
        "| case | seqserve | best baseline | seqserve / best | gate |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for result in results:
        case: Case = result["case"]
        if result.get("error"):
            lines.append(f"| {case.title} | failed | | | |")
            continue
        for outcome in result["outcomes"]:
            m = outcome["metrics"]
            verdict = "promoted" if outcome["gate"].get("promoted") else "**not promoted**"
            if result["settings"].task != "forecast":
                model, majority = m["model"]["accuracy"], m["majority"]["accuracy"]
                lines.append(f"| {case.title} | accuracy {model:.4f} | majority {majority:.4f} | - | {verdict} |")
                continue
            if result["settings"].series_id:
                best = m["best_baseline"]
                ours, theirs = m["streaming"]["mase"], m[best]["mase"]
                lines.append(
                    f"| {case.title} | mean MASE {ours:.3f} | {best} {theirs:.3f} | {ours / theirs:.3f} | {verdict} |"
                )
                continue
            metric = "mape" if result["settings"].horizon > 1 else "mae"
            best = min(m["baselines"], key=lambda n: m[n][metric] if m[n][metric] is not None else float("inf"))
            ours, theirs = m["streaming"][metric], m[best][metric]
            label = "mean MAPE %" if metric == "mape" else "MAE"
            lines.append(
                f"| {case.title} | {label} {_num(ours)} | {best} {_num(theirs)} | {ours / theirs:.3f} | {verdict} |"
            )
    return [*lines, ""]


def render(results: list[dict[str, Any]], commit: str, started: datetime, load: str) -> str:
    lines = [
        "# Forecast quality: seqserve against honest baselines",
        "",
        f"Produced by `make quality` (`python -m bench.quality`) at commit `{commit}`, "
        f"{started.strftime('%Y-%m-%d %H:%M UTC')}, Python {platform.python_version()} on "
        f"{os.cpu_count()} CPU cores. The machine was shared with other work while this ran "
        f"(load average {load} at the start), so the seconds are noisy; the errors are not (seeded, CPU).",
        "",
        "How to read the tables:",
        "",
        "- Every row of a table is measured in this run on the same chronological split (70/15/15 unless "
        "stated) and the same test origins. The seqserve row is what the service would answer: one "
        "session streamed from the first row (`streaming`).",
        "- Baselines are fitted on the training block only (training/baselines.py): `naive` (last value), "
        "`seasonal_naive_<s>` for every season given, and statsforecast's MSTL + AutoETS (seasonal "
        "series), AutoETS and AutoARIMA (short series), rolled over the test origins with their fitted "
        "parameters (no refit).",
        "- MASE divides by the in-sample MAE of the one-step naive forecast on the training block; "
        "MAPE is over non-zero actual values. `fit s` is training time (baselines: fit and roll).",
        "- Gate: a version that does not beat the best of naive and the seasonal naives on test is "
        "written but not promoted (the service keeps serving the previous version by default).",
        "",
    ]
    lines += _summary(results)
    for result in results:
        case: Case = result["case"]
        lines += [f"## {case.title}", "", f"`seqserve train {' '.join(_shown(case.argv))}`", ""]
        if case.note:
            lines += [case.note, ""]
        if result.get("error"):
            lines += [f"Failed: {result['error']}", ""]
            continue
        task = result["settings"].task
        if result["settings"].series_id:
            lines += _global_table(result)
        else:
            lines += _forecast_table(result) if task == "forecast" else _classify_table(result)
        lines.append("")
    return "\n".join(lines)


def _shown(argv: tuple[str, ...]) -> list[str]:
    """Flags as a user would type them (bundled paths relative to the repository)."""
    return [str(Path(a).relative_to(ROOT)) if a.startswith(str(ROOT)) else a for a in argv]


# ------------------------------------------------------------------------- default flags

SUNSPOTS = str(DATASETS / "sunspots_yearly" / "sunspots_yearly.csv")
WORLD_FERTILITY = str(DATASETS / "world_fertility" / "world_fertility.csv")
# Bundled forecasting series, each trained with only --data and --target.
DEFAULT_BUNDLED: tuple[tuple[str, str, str], ...] = (
    ("electricity (half-hourly)", ELECTRICITY, "demand_mw"),
    ("co2 (weekly)", CO2, "co2_ppm"),
    ("sunspots (yearly)", SUNSPOTS, "sunactivity"),
    ("US real GDP (quarterly)", US_MACRO, "realgdp"),
    ("US unemployment (quarterly)", US_MACRO, "unemp"),
    ("world fertility (long format, 194 series)", WORLD_FERTILITY, "fertility"),
)
START = "<!-- default-flags -->"
END = "<!-- /default-flags -->"


def external_series(directory: Path) -> list[tuple[str, str, str]]:
    """Public series that are not in this repository, written as CSV files the way a user would
    have them (a time column and a value): statsforecast's AirPassengers (whole and its first 36
    months) and statsmodels' El Nino (monthly), Nile (yearly), Danish money demand and
    interest/inflation (quarterly), Mauna Loa CO2 as monthly means. Missing packages: fewer series."""
    import pandas as pd

    out: list[tuple[str, str, str]] = []

    def write(name: str, frame: Any, target: str) -> None:
        slug = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")[:48]
        path = directory / f"{slug}.csv"
        frame.to_csv(path, index=False)
        out.append((name, str(path), target))

    try:
        from statsforecast.utils import AirPassengersDF

        air = pd.DataFrame({"month": AirPassengersDF["ds"].dt.strftime("%Y-%m"), "passengers": AirPassengersDF["y"]})
        write("AirPassengers (monthly, 144)", air, "passengers")
        write("AirPassengers, first 36 months", air.iloc[:36], "passengers")
    except ImportError:
        pass
    try:
        import statsmodels.api as sm  # type: ignore[import-untyped]
    except ImportError:
        return out
    nino = sm.datasets.elnino.load_pandas().data
    months = nino.columns[1:]
    values = nino[months].to_numpy().ravel()
    stamps = [f"{int(year)}-{m + 1:02d}" for year in nino["YEAR"] for m in range(len(months))]
    write("El Nino sea temperature (monthly)", pd.DataFrame({"month": stamps, "temperature": values}), "temperature")
    nile = sm.datasets.nile.load_pandas().data
    write("Nile flow (yearly)", pd.DataFrame({"year": nile["year"].astype(int), "volume": nile["volume"]}), "volume")
    danish = sm.datasets.danish_data.load_pandas().data
    quarters = pd.PeriodIndex(pd.to_datetime(danish.index), freq="Q").strftime("%YQ%q")
    write(
        "Danish log money demand (quarterly)",
        pd.DataFrame({"quarter": quarters, "lrm": danish["lrm"].to_numpy()}),
        "lrm",
    )
    rates = sm.datasets.interest_inflation.load_pandas().data
    stamps = [f"{int(y)}Q{int(q)}" for y, q in zip(rates["year"], rates["quarter"], strict=True)]
    write("German interest rate (quarterly)", pd.DataFrame({"quarter": stamps, "rate": rates["R"]}), "rate")
    co2 = sm.datasets.co2.load_pandas().data["co2"].resample("MS").mean().interpolate()
    monthly_co2 = pd.DataFrame({"month": co2.index.strftime("%Y-%m"), "co2": co2.to_numpy()})
    write("Mauna Loa CO2, monthly means", monthly_co2, "co2")
    return out


def _default_row(title: str, path: str, target: str, repository: Path) -> list[str]:
    import pandas as pd

    rows = len(pd.read_csv(path))
    case = Case(f"default-{len(title)}-{abs(hash(title)) % 10_000}", title, ("--data", path, "--target", target))
    start = time.perf_counter()
    try:
        result = run_case(case, repository)
    except Exception as exc:  # a refusal is a result too: shown with its message
        message = " ".join(str(exc).split())
        return [title, str(rows), "-", "-", f"refused: {message[:160]}", *["-"] * 8]
    seconds = time.perf_counter() - start
    outcome = result["outcomes"][0]
    m, record = outcome["metrics"], outcome["record"]
    seasons = (record.get("seasons") or {}).get("seasons", [])
    frequency = ((record.get("time") or {}) or {}).get("frequency") or "-"
    verdict = record.get("verdict") or {}
    metric = "mase" if result["settings"].series_id else "mae"

    def cell(name: str) -> str:
        return _num(m[name][metric]) if name in m and isinstance(m[name], dict) and metric in m[name] else "-"

    seasonal = [n for n in m.get("baselines", {}) if n.startswith("seasonal_naive_")]
    best_seasonal = min(seasonal, key=lambda n: m[n][metric]) if seasonal else None
    ets = m.get("autoets", {}).get(metric)
    ours = m["streaming"][metric]
    gate = "promoted" if outcome["gate"].get("promoted") else "**not promoted**"
    said = "formula" if verdict.get("serves_formula") else ("network" if verdict.get("learned") else "-")
    return [
        title,
        str(rows),
        frequency,
        str(seasons or "none"),
        f"**{_num(ours)}**" + (" (mean MASE)" if metric == "mase" else ""),
        cell("naive"),
        cell(best_seasonal) if best_seasonal else "-",
        cell("autoets"),
        cell("autoarima"),
        cell("mstl_autoets"),
        f"{ours / ets:.3f}" if ets else "-",
        f"{verdict.get('ratio_to_best_baseline', float('nan')):.3f}" if verdict else "-",
        f"{said}; {gate}; {outcome['train_seconds']:.0f} s train, {seconds:.0f} s in all",
    ]


def default_flags_section(repository: Path, external: bool = True) -> str:
    """The "default flags" tables: every bundled series, then public series not in this
    repository, each trained with only --data and --target."""
    header = [
        "| series | rows | frequency | seasons found | seqserve | naive | seasonal naive | AutoETS | AutoARIMA | "
        "MSTL+ETS | / AutoETS | / best | what is served; gate; time |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    lines = [
        START,
        "## Default flags: only --data and --target",
        "",
        "Each series trained as a new user would, `seqserve train --data FILE --target COL`: the time column, "
        "frequency and seasons are found in the data (training/seasons.py), sizes adapt to the length "
        "(training/sizing.py), and every baseline uses the seasons found. Test MAE at one step (MASE for a "
        "many-series file), streamed as the service answers; `/ AutoETS` and `/ best` are seqserve's error over "
        "AutoETS's (where it is fitted: series of at most 1000 training rows or without a usable season) and over "
        "the best baseline's. `what is served`: `network` when the network beat its formula on validation, "
        "`formula` when the version serves its baseline formula (training/verdict.py). Times include the "
        "statistical baselines; the machine was shared.",
        "",
        "### Bundled series",
        "",
        *header,
    ]
    for title, path, target in DEFAULT_BUNDLED:
        _log(f"default flags: {title}")
        lines.append("| " + " | ".join(_default_row(title, path, target, repository)) + " |")
    if external:
        with tempfile.TemporaryDirectory(prefix="external-") as tmp:
            found = external_series(Path(tmp))
            lines += ["", "### Public series not in this repository", "", *header]
            for title, path, target in found:
                _log(f"default flags: {title}")
                lines.append("| " + " | ".join(_default_row(title, path, target, repository)) + " |")
    return "\n".join([*lines, "", END])


def write_section(output: Path, section: str, start: str = START, end: str = END) -> None:
    """Put a marked section (default flags; bench/intervals.py's probabilistic forecasts) into
    `output`, replacing the previous one (or appending)."""
    text = output.read_text() if output.exists() else ""
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    output.write_text(text)


# Sections other runs write into quality.md, kept when the main tables are written again.
KEPT = ((START, END), ("<!-- intervals -->", "<!-- /intervals -->"))


def kept_sections(path: Path) -> str:
    """Every marked section of an existing quality.md (see KEPT), to append after a rerun."""
    if not path.exists():
        return ""
    text = path.read_text()
    parts = [text[text.index(a) : text.index(b) + len(b)] for a, b in KEPT if a in text and b in text]
    return "".join("\n" + part + "\n" for part in parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", help=f"comma-separated subset of {[c.key for c in CASES]}")
    parser.add_argument("--output", default=str(ROOT / "docs" / "quality.md"))
    parser.add_argument("--extra", default="", help="flags added to every case (e.g. '--epochs 1' for a smoke run)")
    parser.add_argument(
        "--default-flags",
        action="store_true",
        help="only the default-flags tables (bundled and public series), written into --output's section",
    )
    args = parser.parse_args(argv)
    if args.default_flags:
        with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
            write_section(Path(args.output), default_flags_section(Path(tmp)))
        _log(f"wrote the default-flags section of {args.output}")
        return 0
    chosen = [c for c in CASES if not args.cases or c.key in args.cases.split(",")]
    unknown = set(args.cases.split(",")) - {c.key for c in CASES} if args.cases else set()
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}")
    started = datetime.now(UTC)
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    commit = commit_measured()
    results = []
    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        for case in chosen:
            _log(f"{case.key}: training")
            try:
                result = run_case(case, Path(tmp), tuple(args.extra.split()))
            except Exception as exc:  # one failing case must not lose the others' numbers
                _log(f"{case.key}: FAILED {type(exc).__name__}: {exc}")
                result = {"case": case, "error": f"{type(exc).__name__}: {exc}"}
            else:
                _log(f"{case.key}: done in {result['seconds']:.0f}s")
            results.append(result)
    output = Path(args.output)
    output.write_text(render(results, commit, started, load) + kept_sections(output))
    _log(f"wrote {args.output}")
    return 1 if any(r.get("error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
