"""Probabilistic forecasts on the bundled series: seqserve's calibrated quantiles against
split-conformal intervals around its own point forecast and statsforecast's intervals, on the
same test origins.

Each case trains as `seqserve train` would (default quantile levels, calibrated on the
validation block; small budgets: the machine is shared) into a temporary repository, then
streams the exported ONNX file through ONNX Runtime from row 0, one session as served, and
scores the test origins. statsforecast is fitted on the training block only and rolled over the
same origins without looking ahead: MSTL + AutoETS (seasonal series; the decomposition is
refit on the history up to each block of origins, as training/baselines.py does) or AutoETS
(short series), with their own 80 % and 95 % intervals.

The last cases train with only `--data` and `--target` (seasons, sizes and transform found in
the data): US unemployment (bundled, no preset) and public series not in this repository
(statsmodels' El Nino, Nile, Mauna Loa CO2 as monthly means; statsforecast's AirPassengers),
written as CSV files by bench.quality.external_series; statsforecast's AutoETS for them.

Scores, at one step (lead 1) and over the horizon (every lead): coverage of the central 80 %
and 95 % intervals, MSIS (95 %, M4's mean scaled interval score), and the mean pinball loss over
the four levels every method has (2.5, 10, 90, 97.5 %), both divided by the in-sample one-step
naive MAE of the training block (the MASE scale).

    python -m bench.intervals                    # every case -> stdout (markdown)
    python -m bench.intervals --cases co2,nile --output /tmp/intervals.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LEVELS = (0.025, 0.1, 0.9, 0.975)
US_MACRO = ROOT / "training" / "datasets" / "us_macro_quarterly" / "us_macro_quarterly.csv"


INTRO = """## Probabilistic forecasts: calibrated quantiles against conformal and statsforecast intervals

Every forecaster trains with quantile levels 2.5, 10, 50, 90 and 97.5 % by default: a quantile
head on the frozen network, fitted with the pinball loss on the training block, then a
split-conformal shift per lead and level (training/calibrate.py) from the validation origins'
scores pooled with every training origin's in-sample score, whose residual around the point is
first multiplied by validation's mean |residual| over training's (validation sets the level;
the training block adds origins to the tails). Where the state's widths do not beat constant
ones on validation (cross-fitted pinball, validation alone), constant widths are kept. The rows
below are the exported file streamed from row 0 through ONNX Runtime, as served, on the test
origins of the tables above (small training budgets, stated per case); the last ones are
trained with only `--data` and `--target`, among them public series not in this repository.
Nothing is computed from the test block but the scores.

- **conformal around the point**: split-conformal 80 % and 95 % intervals around the same
  model's point forecast (validation |error| order statistics per lead): what the quantiles must
  beat to add information beyond width.
- **statsforecast**: MSTL + AutoETS (seasonal series) or AutoETS (short ones) with their own
  80 % / 95 % intervals, fitted on the training block and rolled over the same origins; MSTL's
  decomposition is refit on the history up to each block of origins only (no look-ahead).
- Coverage in %, nominal 80 and 95. MSIS: M4's mean scaled interval score of the 95 % interval
  (width plus 40 x the miss), divided by the in-sample one-step naive MAE of the training block;
  pinball: the mean pinball loss over the four levels every method has (2.5, 10, 90, 97.5 %),
  same scale. Lower is better for both. 1 step: lead 1 only; all leads: every lead pooled."""


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    argv: tuple[str, ...]
    statistical: str  # "mstl" or "ets"

    def shown(self) -> str:
        """The command line as the docs show it: data files by their repository path or name."""
        words = []
        for word in self.argv:
            path = Path(word)
            if path.is_absolute():
                word = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
            words.append(word)
        return " ".join(words)


CASES = (
    Case("electricity", "electricity, 1 step ahead", ("--preset", "electricity", "--epochs", "8"), "mstl"),
    Case(
        "electricity-day-ahead",
        "electricity, day ahead (48 half-hours), Taylor's design",
        (
            "--preset",
            "electricity",
            "--horizon",
            "48",
            "--val-fraction",
            "0.08334",
            "--test-fraction",
            "0.33333",
            "--epochs",
            "8",
        ),
        "mstl",
    ),
    Case("co2", "co2 (weekly), 4 steps ahead", ("--preset", "co2", "--epochs", "8"), "mstl"),
    Case("sunspots", "sunspots (yearly), 1 step ahead", ("--preset", "sunspots", "--epochs", "20"), "ets"),
    Case(
        "us-gdp",
        "US real GDP (quarterly), 1 step ahead",
        (
            "--data",
            str(US_MACRO),
            "--target",
            "realgdp",
            "--season",
            "4",
            "--epochs",
            "20",
        ),
        "ets",
    ),
)


# Series trained with only --data and --target (seasons, sizes and transform found in the data):
# a bundled one no preset covers, and public series that are not in this repository, written
# as CSV files by bench.quality.external_series (title there, key here).
DEFAULT_FLAGS = (
    Case(
        "us-unemployment",
        "US unemployment (quarterly), 1 step ahead",
        ("--data", str(US_MACRO), "--target", "unemp"),
        "ets",
    ),
)
PUBLIC = {
    "El Nino sea temperature (monthly)": "el-nino",
    "Nile flow (yearly)": "nile",
    "Mauna Loa CO2, monthly means": "mauna-loa-co2",
    "AirPassengers (monthly, 144)": "air-passengers",
}


def public_cases(directory: Path) -> list[Case]:
    """The public series of PUBLIC written into `directory`, each trained with only --data and
    --target (missing packages: fewer cases)."""
    from bench.quality import external_series

    return [
        Case(
            PUBLIC[title], f"{title}, 1 step ahead, not in this repository", ("--data", path, "--target", target), "ets"
        )
        for title, path, target in external_series(directory)
        if title in PUBLIC
    ]


def _settings(argv: list[str]) -> Any:
    from training.cli import add_arguments, resolve

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return resolve(parser.parse_args(argv))


def served_quantiles(entry: Path, data: Any, start_time: float | None) -> tuple[np.ndarray, tuple[float, ...]]:
    """[test, H, Q] quantiles from the exported file, one session from row 0 (as served)."""
    import onnxruntime as ort

    from models.chunks import run_in_time_chunks
    from models.config import ModelConfig
    from models.export import graph_output_names, input_names

    config = ModelConfig.from_dict(json.loads((entry / "manifest.json").read_text())["config"])
    session = ort.InferenceSession(str(entry / "model.onnx"), providers=["CPUExecutionProvider"])
    end = int(data.test[-1]) + 1
    x = data.features[:end].astype(np.float32)[None]
    names = graph_output_names(config)
    at = names.index("quantiles")

    def call(inputs: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        got = session.run(names, dict(zip(input_names(config), [inputs, *state], strict=True)))
        return got[at], tuple(got[1:at])

    # in the chunks the service feeds it (a robust forecaster's fixed point is bounded by its chunk)
    quantiles, _ = run_in_time_chunks(call, x, config.initial_state(1, start_time), 0, config.max_chunk_steps)
    return quantiles[0][data.test].astype(np.float64), config.quantiles


def statsforecast_quantiles(data: Any, seasons: list[int], kind: str) -> np.ndarray:
    """[test, H, 4] the 2.5/10/90/97.5 % bounds of statsforecast's 95 % and 80 % intervals."""
    from statsforecast.models import AutoETS

    from training.baselines import _usable_seasons, mstl_origins

    y = data.targets[:, 0].astype(np.float64)
    pairs, h, train_rows = data.test, data.horizon, data.train_rows
    out = np.empty((len(pairs), h, 4))

    def bounds(answer: dict[str, np.ndarray], shift: np.ndarray | float = 0.0) -> np.ndarray:
        keys = ("lo-95", "lo-80", "hi-80", "hi-95")
        return np.stack([np.asarray(answer[k]) + shift for k in keys], axis=-1)

    usable = _usable_seasons(seasons, train_rows)
    if kind == "mstl" and usable:
        for row, ets, history, future in mstl_origins(y, train_rows, usable, pairs, h):
            out[row] = bounds(ets.forward(y=history, h=h, level=[80, 95]), future)
        return out
    season = next((s for s in sorted(seasons) if 1 < s <= 24 and 2 * s < train_rows), 1)
    model = AutoETS(season_length=season).fit(y[:train_rows])
    for row, t in enumerate(pairs):
        out[row] = bounds(model.forward(y=y[: t + 1], h=h, level=[80, 95]))
    return out


def scores(q: np.ndarray, target: np.ndarray, levels: tuple[float, ...], scale: float) -> dict[str, Any]:
    """One step (lead 1) and every lead: coverage 80/95, MSIS, pinball on the common levels."""
    from training.calibrate import interval_scores

    pick = [levels.index(level) for level in LEVELS]
    q = q[..., pick]
    return {
        "one_step": interval_scores(q[:, :1], target[:, :1], LEVELS, scale),
        "horizon": interval_scores(q, target, LEVELS, scale),
    }


def run_case(case: Case, repository: Path) -> dict[str, Any]:
    from training.calibrate import point_conformal_quantiles
    from training.evaluate import mase_scale
    from training.pipeline import train_and_publish

    name = case.key
    settings = _settings([*case.argv, "--repository", str(repository), "--name", name, "--quiet"])
    settings.baselines = "naive"  # the statistical intervals are computed below, with intervals
    began = time.perf_counter()
    outcome = train_and_publish(settings)[0]
    seconds = time.perf_counter() - began
    # the split the model was trained and evaluated on (sorted, gaps filled, sizes adapted)
    data = outcome.data
    if data is None:
        raise RuntimeError(f"{name}: the interval report needs a single-series forecaster")
    entry = repository / name / "1"
    model = outcome.model
    quantiles, levels = served_quantiles(entry, data, model.start_time)
    target = data.y[data.test]
    scale = float(mase_scale(data)[0])
    made = {"seqserve": scores(quantiles, target, levels, scale)}
    # split-conformal around the point forecast (the same validation block, per lead)
    from training.calibrate import stream_extras

    extras = stream_extras(model, data, int(data.test[-1]) + 1, model.start_time)
    bounds = point_conformal_quantiles(
        extras["point"][data.test], extras["unit"][data.test], model.calibration, model.spec.log
    )
    made["conformal around the point"] = scores(bounds, target, LEVELS, scale)
    began_sf = time.perf_counter()
    found = (outcome.record.get("seasons") or {}).get("seasons")  # default flags: found in the data
    seasons = list(found if found is not None else settings.season)
    made[f"statsforecast {'MSTL+AutoETS' if case.statistical == 'mstl' else 'AutoETS'}"] = scores(
        statsforecast_quantiles(data, seasons, case.statistical), target, LEVELS, scale
    )
    return {
        "case": case,
        "made": made,
        "origins": len(data.test),
        "horizon": data.horizon,
        "seconds": seconds,
        "statsforecast_seconds": time.perf_counter() - began_sf,
        "validation": model.calibration.get("validation_origins"),
        "pooled": model.calibration.get("calibration_origins", 0) - model.calibration.get("validation_origins", 0),
        "ratio": model.calibration.get("residual_ratio"),
        "widths": model.calibration.get("widths"),
        "mae": outcome.metrics["streaming"]["mae"],
    }


def render(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        case = r["case"]
        lines += [
            f"### {case.title}",
            "",
            f"`seqserve train {case.shown()}`: {r['origins']} test origins, horizon {r['horizon']}; "
            f"calibrated on {r['validation']} validation origins"
            + (f" and {r['pooled']} training origins (residuals x {r['ratio']:.3g})" if r["pooled"] else "")
            + f", {'widths from the state' if r['widths'] == 'state' else 'constant widths'}; "
            f"point MAE {r['mae']:.4g}.",
            "",
            "| method | cover 80 % (1 step) | cover 95 % (1 step) | MSIS (1 step) | pinball (1 step) "
            "| cover 80 % (all leads) | cover 95 % (all leads) | MSIS (all leads) | pinball (all leads) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for method, s in r["made"].items():
            one, every = s["one_step"], s["horizon"]
            cells = [
                f"{100 * one['coverage']['80']:.1f}",
                f"{100 * one['coverage']['95']:.1f}",
                f"{one['msis']:.3g}",
                f"{one['pinball']:.3g}",
                f"{100 * every['coverage']['80']:.1f}",
                f"{100 * every['coverage']['95']:.1f}",
                f"{every['msis']:.3g}",
                f"{every['pinball']:.3g}",
            ]
            label = f"**{method}**" if method == "seqserve" else method
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if r["horizon"] > 1:  # the target holds at every lead, not only pooled
            lines.append("")
            for method, s in r["made"].items():
                by_lead = s["horizon"]["by_lead"]
                parts = []
                for name in ("80", "95"):
                    lead = 100 * np.asarray(by_lead[f"coverage_{name}"])
                    parts.append(f"{name} % {lead.min():.1f}-{lead.max():.1f}")
                ranges = ", ".join(parts)
                lines.append(f"- {method}, coverage by lead: {ranges}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    keys = [c.key for c in (*CASES, *DEFAULT_FLAGS)] + list(PUBLIC.values())
    parser.add_argument("--cases", default=",".join(keys), help=f"comma-separated, of {', '.join(keys)}")
    parser.add_argument("--output", default="", help="write the tables to this file (default: stdout)")
    parser.add_argument("--section", default="", help="put them into this quality.md's probabilistic section")
    args = parser.parse_args(argv)
    asked = args.cases.split(",")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        public = public_cases(Path(tmp)) if set(asked) & set(PUBLIC.values()) else []
        for case in (*CASES, *DEFAULT_FLAGS, *public):
            if case.key not in asked:
                continue
            print(f"[intervals] {case.key} ...", file=sys.stderr, flush=True)
            results.append(run_case(case, Path(tmp)))
    text = f"Measured by `python -m bench.intervals` at commit `{commit}`.\n\n" + render(results)
    if args.section:  # into docs/quality.md between its markers (make quality keeps them)
        from bench.quality import KEPT, write_section

        start, end = KEPT[1]
        write_section(Path(args.section), "\n".join([start, INTRO, "", text, end]), start, end)
    elif args.output:
        Path(args.output).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
