"""`seqserve train`: flags, presets and --config files resolved into one `RunSettings`.

Precedence, lowest first: built-in defaults < --preset < --config FILE (JSON) < explicit flags.
Every flag therefore defaults to None here and gets its real default in `resolve`, so we can tell
what the user typed from what they did not.

This module imports neither torch nor pandas at import time: seqserve/cli.py imports it to build
its parser, and `seqserve serve` must stay quick (and work in the slim image without torch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from training.settings import EXIT_NOT_PROMOTED, FIELD_NAMES, TRANSFORMS, RunSettings

__all__ = ["EXIT_NOT_PROMOTED", "FIELD_NAMES", "TRANSFORMS", "RunSettings", "add_arguments", "resolve", "run", "train"]


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `train` flags to `parser` (defaults are applied later, see module docstring)."""
    data = parser.add_argument_group("data")
    data.add_argument("--data", metavar="FILE", help="CSV (or .parquet) file; rows in time order")
    data.add_argument("--task", choices=["forecast", "classify"], help="default: forecast")
    data.add_argument(
        "--target",
        action="append",
        metavar="COL",
        help="forecast target column (repeatable, or comma separated)",
    )
    data.add_argument(
        "--features", metavar="COL,...", help="input columns (default: the targets; classify: all numeric)"
    )
    data.add_argument("--horizon", type=int, metavar="N", help="forecast the next N steps (default 1)")
    data.add_argument("--label", metavar="COL", help="classify: class label column (read at each sequence's last row)")
    data.add_argument("--sequence-id", metavar="COL", help="classify: column identifying each sequence")
    data.add_argument(
        "--series-id",
        metavar="COL",
        help="forecast: long format, one row per (series, time); one global model across every series",
    )
    data.add_argument(
        "--split-column", metavar="COL", help="classify: column with train/validation/test per sequence (optional)"
    )
    data.add_argument(
        "--max-rows", type=int, metavar="N", help="refuse a table longer than N rows (default 2000000; 0: no limit)"
    )
    data.add_argument("--val-fraction", type=float, metavar="X", help="validation share (default 0.15)")
    data.add_argument("--test-fraction", type=float, metavar="X", help="test share (default 0.15)")
    data.add_argument(
        "--season",
        metavar="N,...",
        help="season length(s) in steps, e.g. 48,336: seasonal lags and a seasonal-naive baseline per season; "
        "auto (default): found from the time column's period and confirmed on the training block; 0: none",
    )
    data.add_argument(
        "--time-column", metavar="COL", help="timestamps of the rows: sampling period and phase (default: detected)"
    )

    model = parser.add_argument_group("model and training")
    model.add_argument("--cell", choices=["lstm", "gru", "both"], help="default lstm; both trains and compares two")
    model.add_argument("--layers", type=int, metavar="N", help="recurrent layers (default 1)")
    model.add_argument("--hidden", type=int, metavar="N", help="hidden size (default 32)")
    model.add_argument("--dropout", type=float, metavar="X", help="dropout between layers (default 0)")
    model.add_argument("--window", type=int, metavar="N", help="truncated-BPTT chunk length (default 48)")
    model.add_argument("--epochs", type=int, metavar="N", help="maximum epochs (default 60)")
    model.add_argument("--batch-size", type=int, metavar="N", help="parallel streams / sequences per step (16)")
    model.add_argument("--lr", type=float, metavar="X", help="AdamW learning rate (default 0.003)")
    model.add_argument("--weight-decay", type=float, metavar="X", help="AdamW weight decay (default 1e-4)")
    model.add_argument(
        "--input-noise",
        type=float,
        metavar="X",
        help="classify: std of Gaussian noise added to the standardised inputs while training (default 0)",
    )
    model.add_argument(
        "--weight-average",
        type=float,
        metavar="DECAY",
        help="classify: validate and keep a moving average of the weights (decay per step, e.g. 0.99; default 0: none)",
    )
    model.add_argument("--patience", type=int, metavar="N", help="early-stopping patience in epochs (default 10)")
    model.add_argument("--seed", type=int, metavar="N", help="random seed (default 0)")
    model.add_argument(
        "--transform",
        choices=TRANSFORMS,
        help="forecast target transform; auto (default) picks the best candidate on the validation split",
    )
    model.add_argument(
        "--log",
        choices=("auto", "yes", "no"),
        help="forecast the target in logs: auto (default) when the training block shows a positive series whose "
        "seasonal swing grows with its level (then chosen on validation), yes always (positive series), no never",
    )
    model.add_argument(
        "--history",
        type=int,
        metavar="N",
        help="readings a forecaster keeps in its ring state (default: the longest season; with --series-id at "
        "least 8): the window of its per-series scale",
    )
    model.add_argument(
        "--quantiles",
        metavar="Q,...",
        help="forecast quantile levels in (0, 1), calibrated on the validation split (default "
        "0.025,0.1,0.5,0.9,0.975: 80 %% and 95 %% intervals and anomaly flags); none: point forecasts only",
    )
    model.add_argument(
        "--threads", type=int, metavar="N", help="CPU threads for torch (default 1: small RNNs gain nothing from more)"
    )
    model.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="data-parallel training on N local processes (torchrun, DDP; gloo on CPU, nccl on GPUs); "
        "--batch-size is the global batch. Multi-node: run torchrun yourself (training/README.md)",
    )

    out = parser.add_argument_group("output")
    # One spelling in help, as `seqserve serve|models|verify` take it; --repository its alias.
    out.add_argument(
        "--model-repository",
        dest="repository",
        metavar="DIR",
        help="model repository (default model_repository); alias --repository",
    )
    out.add_argument("--repository", dest="repository", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    out.add_argument("--name", metavar="NAME", help="model name (default: the data file's stem)")
    out.add_argument("--preset", metavar="NAME", help="settings for a bundled dataset: electricity, vowels, ...")
    out.add_argument("--config", metavar="FILE", help="JSON object of flag values (keys like the flags)")
    out.add_argument("--quiet", action="store_true", default=None, help="no progress bars")
    out.add_argument(
        "--baselines",
        choices=["full", "naive"],
        help="full (default): naive, seasonal naive and statsforecast models; naive: the first two only (fast)",
    )
    out.add_argument(
        "--gate",
        choices=["naive", "statistical"],
        help="promotion gate: naive (default) beats naive and seasonal naive; statistical also beats the best "
        "statistical baseline (AutoETS, AutoARIMA, MSTL)",
    )
    out.add_argument(
        "--allow-worse",
        action="store_true",
        default=None,
        help=f"promote a version that does not beat the naive baselines (otherwise exit {EXIT_NOT_PROMOTED})",
    )


def _load_config(path: str) -> dict[str, Any]:
    from training.data import TrainingError

    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise TrainingError(f"config file not found: {path}") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainingError(f"cannot read config file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise TrainingError(f"config file {path} must hold a JSON object of flag values")
    values = {key.replace("-", "_"): value for key, value in raw.items()}
    if "model_repository" in values and "repository" not in values:  # the flag's canonical spelling
        values["repository"] = values.pop("model_repository")
    return values


def _normalise(values: dict[str, Any], source: str) -> dict[str, Any]:
    from training.data import TrainingError

    unknown = sorted(set(values) - FIELD_NAMES - {"config"})
    if unknown:
        raise TrainingError(f"unknown setting(s) {unknown} in {source}")
    out = dict(values)
    out.pop("config", None)
    for key in ("target", "features", "season"):
        value = out.get(key)
        if isinstance(value, str):
            out[key] = _comma_list(value)
        elif isinstance(value, list):
            out[key] = [part for item in value for part in _comma_list(str(item))]
        elif key == "season" and isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = [value]
    if "season" in out:
        words = [str(v).strip().lower() for v in out["season"]]
        if words == ["auto"]:
            out["season"], out["season_auto"] = [], True
        elif words in (["0"], ["off"], ["none"]):
            out["season"], out["season_auto"] = [], False
        else:
            out["season"], out["season_auto"] = _seasons(out["season"], source), False
    if "quantiles" in out:
        from training.calibrate import parse_levels

        try:
            out["quantiles"] = parse_levels(out["quantiles"] if out["quantiles"] != [] else "none")
        except ValueError as exc:
            raise TrainingError(f"{exc} in {source}") from exc
    return out


def _seasons(values: list[Any], source: str) -> list[int]:
    from training.data import TrainingError

    seasons = []
    for value in values:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not number.is_integer() or number < 2:
            raise TrainingError(f"season lengths must be integers >= 2, got {value!r} in {source}")
        seasons.append(int(number))
    return sorted(set(seasons))


_TYPES: dict[str, type] = {
    "horizon": int,
    "layers": int,
    "hidden": int,
    "window": int,
    "epochs": int,
    "batch_size": int,
    "patience": int,
    "seed": int,
    "threads": int,
    "history": int,
    "max_rows": int,
    "dropout": float,
    "lr": float,
    "weight_decay": float,
    "input_noise": float,
    "weight_average": float,
    "val_fraction": float,
    "test_fraction": float,
    "quiet": bool,
    "allow_worse": bool,
    "season_auto": bool,
}


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    """Config-file values arrive as JSON: check each has the type its flag would give."""
    from training.data import TrainingError

    out = dict(values)
    for key, value in values.items():
        kind = _TYPES.get(key)
        if value is None or kind is None:
            lists = ("target", "features", "season", "defaulted", "quantiles")
            if kind is None and key not in lists and not isinstance(value, str):
                raise TrainingError(f"setting {key!r} must be a string, got {value!r}")
            continue
        if kind is bool:
            if not isinstance(value, bool):
                raise TrainingError(f"setting {key!r} must be true or false, got {value!r}")
            continue
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if kind is int:
            ok = ok and float(value).is_integer()
        if not ok:
            raise TrainingError(f"setting {key!r} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        out[key] = kind(value)
    return out


def resolve(args: argparse.Namespace) -> RunSettings:
    """Defaults < preset < config file < explicit flags."""
    from training.data import TrainingError
    from training.presets import preset

    given = {k: v for k, v in vars(args).items() if k in FIELD_NAMES | {"config"} and v is not None}
    config = _coerce(_normalise(_load_config(given["config"]), given["config"])) if given.get("config") else {}
    preset_name = given.get("preset") or config.get("preset")
    merged: dict[str, Any] = {}
    if preset_name:
        merged.update(_normalise(preset(preset_name), f"preset {preset_name}"))
        merged["preset"] = preset_name
    merged.update(config)
    merged.update(_normalise(given, "flags"))
    merged.pop("defaulted", None)
    settings = RunSettings(**_coerce(merged))
    settings.defaulted = sorted(FIELD_NAMES - set(merged) - {"defaulted", "season_auto"})
    if not settings.data:
        raise TrainingError("no data: give --data FILE (or --preset NAME)")
    if not settings.name:
        settings.name = Path(settings.data).stem
    from models.repository import NAME_PATTERN

    suffixed = f"{settings.name}-lstm" if settings.cell == "both" else settings.name
    if not NAME_PATTERN.match(suffixed):
        raise TrainingError(f"invalid model name {settings.name!r}: use letters, digits, '_', '.', '-' (max 64)")
    if settings.task == "forecast" and not settings.target:
        raise TrainingError("forecasting needs --target COL")
    if settings.series_id and settings.task != "forecast":
        raise TrainingError("--series-id is for forecasting (classification uses --sequence-id)")
    if settings.task == "classify" and (not settings.label or not settings.sequence_id):
        raise TrainingError("classification needs --label COL and --sequence-id COL")
    if settings.task not in ("forecast", "classify"):
        raise TrainingError(f"--task must be forecast or classify, not {settings.task!r}")
    if settings.transform not in TRANSFORMS:
        raise TrainingError(f"--transform must be one of {TRANSFORMS}, not {settings.transform!r}")
    if settings.log not in ("auto", "yes", "no"):
        raise TrainingError(f"--log must be auto, yes or no, not {settings.log!r}")
    if settings.baselines not in ("full", "naive"):
        raise TrainingError(f"--baselines must be full or naive, not {settings.baselines!r}")
    if settings.gate not in ("naive", "statistical"):
        raise TrainingError(f"--gate must be naive or statistical, not {settings.gate!r}")
    if settings.gate == "statistical" and (settings.task != "forecast" or settings.baselines != "full"):
        raise TrainingError("--gate statistical is for forecasting with the statistical baselines (--baselines full)")
    if settings.cell not in ("lstm", "gru", "both"):
        raise TrainingError(f"--cell must be lstm, gru or both, not {settings.cell!r}")
    for key in ("layers", "hidden", "window", "epochs", "batch_size", "horizon", "patience", "threads"):
        if int(getattr(settings, key)) < 1:
            raise TrainingError(f"--{key.replace('_', '-')} must be a positive integer")
    if not 0 <= settings.input_noise < 10:  # NaN fails too
        raise TrainingError("--input-noise must be a standard deviation between 0 and 10 (standardised units)")
    if settings.input_noise and settings.task != "classify":
        raise TrainingError("--input-noise is for classification (--task classify)")
    if not 0 <= settings.weight_average < 1:  # NaN fails too
        raise TrainingError("--weight-average must be a decay in [0, 1), e.g. 0.99 (0: no average)")
    if settings.weight_average and settings.task != "classify":
        raise TrainingError("--weight-average is for classification (--task classify)")
    if settings.history < 0:
        raise TrainingError("--history must be 0 (default) or a positive integer")
    if settings.max_rows < 0:
        raise TrainingError("--max-rows must be 0 (no limit) or a positive integer")
    if not 0 < settings.val_fraction < 1 or not 0 < settings.test_fraction < 1:
        raise TrainingError("--val-fraction and --test-fraction must be between 0 and 1")
    if settings.val_fraction + settings.test_fraction >= 0.9:
        raise TrainingError("--val-fraction + --test-fraction leave too little training data")
    return settings


def run(args: argparse.Namespace) -> int:
    """Entry point for `seqserve train`: one process, a `--nproc` launch, or one rank under torchrun
    (training/distributed.py); the exit codes are those of `train`."""
    from training import distributed
    from training.data import TrainingError

    nproc = getattr(args, "nproc", None)
    if nproc is not None:
        try:
            if nproc < 1:
                raise TrainingError("--nproc must be a positive integer")
            if distributed.under_torchrun():
                raise TrainingError("--nproc starts torchrun itself: leave it out when running under torchrun")
            settings = resolve(args)
        except TrainingError as exc:
            print(f"seqserve train: error: {exc}", file=sys.stderr)
            return 2
        if nproc > 1:
            return distributed.launch(settings, nproc)
    if not distributed.under_torchrun():
        return train(args)
    distributed.init()
    try:
        return distributed.write_status(train(args))
    finally:
        distributed.shutdown()


def train(args: argparse.Namespace) -> int:
    """Train in this process (alone, or as one rank of a torchrun job).

    Exit codes: 0 every model was published and promoted; 2 bad input or settings, or an export
    that failed its parity check (one-line error; with --cell both the other cell is still
    published); 3 every model was published but at least one failed the quality gate (written,
    not promoted: the service keeps serving the previous version by default; --allow-worse
    promotes it and exits 0)."""
    from models.config import ConfigError
    from training.data import TrainingError

    try:
        settings = resolve(args)
        from training.pipeline import train_and_publish

        outcomes = train_and_publish(settings)
    except (TrainingError, ConfigError) as exc:
        print(f"seqserve train: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only or vanished repository: nothing was published
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"seqserve train: error: {exc.strerror or exc}{where}; no partial entry was left", file=sys.stderr)
        return 2
    except MemoryError:
        print("seqserve train: error: out of memory; use a smaller file (--max-rows) or model", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: still one line and exit 2; SEQSERVE_TRACEBACK=1 shows where
        if os.environ.get("SEQSERVE_TRACEBACK"):
            raise
        message = " ".join(str(exc).split())[:300]
        print(
            f"seqserve train: error: unexpected {type(exc).__name__}: {message} (SEQSERVE_TRACEBACK=1 for details)",
            file=sys.stderr,
        )
        return 2
    failed = [o for o in outcomes if o.error]
    for outcome in failed:
        print(f"seqserve train: error: {outcome.error}", file=sys.stderr)
    if failed:
        return 2
    held_back = [o for o in outcomes if not o.gate.get("promoted", True)]
    for outcome in held_back:
        ties = bool(outcome.gate.get("ties_baseline"))
        print(
            f"seqserve train: warning: {outcome.name} v{outcome.version} was written but NOT promoted: "
            f"{outcome.gate['reason']}. {default_note(settings.repository, outcome.name, outcome.version, ties)}",
            file=sys.stderr,
        )
    return EXIT_NOT_PROMOTED if held_back else 0


def default_note(repository: str, name: str, version: int, ties: bool = False) -> str:
    """What the service serves by default after an unpromoted `version` of `name` was written,
    by its rule (service/core/registry.py): the highest promoted version, else the highest
    version with a warning. A version without a recorded gate (older files) counts as promoted.
    `ties`: the version equals the naive baseline it was gated against, so retraining the same
    way cannot help: the note says how to serve it anyway, or what could beat naive."""
    from models.repository import scan_repository

    versions: dict[int, bool] = {}
    for entry in scan_repository(repository):
        if entry.name == name:
            gate = entry.manifest().get("gate")
            versions[entry.version] = not (isinstance(gate, dict) and gate.get("promoted") is False)
    versions[version] = False
    promoted = [v for v, ok in versions.items() if ok]
    if ties:
        advice = (
            " To serve it anyway (that is, to serve the naive forecast): retrain with --allow-worse, or set "
            f'"promoted": true in the gate of {name}/{version}/manifest.json and reload (no retraining). To '
            "beat naive: more data, or a season the series has (--season N)."
        )
    else:
        advice = " Retrain with --allow-worse to promote it."
    if promoted:
        return (
            f"The service keeps serving v{max(promoted)} (the highest promoted version) by default; "
            f"v{version} is served when asked for by version.{advice}"
        )
    return (
        f"No version of {name} is promoted, so the service serves the highest, v{max(versions)}, by default "
        f"(with a warning in its log and model document).{advice}"
    )
