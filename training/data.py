"""Loading a table and turning it into leakage-free training, validation and test data.

Forecasting: rows are taken in file order as the time axis. The series is cut chronologically
into train / validation / test blocks; the input at step t is the feature row t, the target is
the next `horizon` values of every target column. A (t -> t+1..t+h) pair belongs to a block only
when all its target steps lie in that block, so no training target is ever a validation or test
value. Inputs before a block (its history) may be fed to the model: they are known at forecast time.

Missing values (empty cells) in feature/target columns are linearly interpolated (edges filled
with the nearest value) and the count is reported; a column missing more than
MAX_MISSING_FRACTION of its values is refused. Text that is not a number is always refused.

Classification: long format, one row per (sequence, step); the label of a sequence is read at its
last row. A `split` column (train/validation/val/test) is honoured when given; otherwise sequences
are split at random (seeded), stratified by label.

Normalisation statistics come from training rows only and are returned as a `Normalization`
so the model (and its ONNX graph) applies them itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.config import Normalization

MAX_MISSING_FRACTION = 0.2


class TrainingError(Exception):
    """Bad input or settings; the message names the problem (the CLI prints it and exits 2)."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


DEFAULT_MAX_ROWS = 2_000_000


def load_table(path: str | Path, max_rows: int = DEFAULT_MAX_ROWS) -> pd.DataFrame:
    """CSV (or Parquet by extension) -> DataFrame, with TrainingError for anything unreadable.

    The trainer holds the whole table (and arrays built from it) in memory, so a table is
    read only up to `max_rows` (`--max-rows`, 0: no limit): a larger file is refused after
    reading max_rows + 1 rows, with a message, instead of exhausting memory."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"data file not found: {path}")
    limit = max_rows if max_rows > 0 else None
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, nrows=None if limit is None else limit + 1)
    except ImportError as exc:
        raise TrainingError(f"cannot read {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise TrainingError(
            f"cannot read {path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start} "
            "of a block); save the file as UTF-8"
        ) from exc
    except MemoryError as exc:
        raise TrainingError(f"cannot read {path}: out of memory; use a smaller file or --max-rows") from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise TrainingError(f"cannot read {path}: {_one_line(exc)}") from exc
    if limit is not None and len(frame) > limit:
        raise TrainingError(
            f"{path} has more than {limit} rows (--max-rows); the trainer keeps the whole table in memory: "
            "raise --max-rows if this machine has the memory, or train on a shorter file"
        )
    if frame.empty:
        raise TrainingError(f"{path} holds no rows")
    return frame


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def require_columns(frame: pd.DataFrame, columns: Sequence[str], role: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TrainingError(f"unknown {role} column(s) {missing}; the data has columns {list(frame.columns)}")


FLOAT32_MAX = float(np.finfo(np.float32).max)


def numeric_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    """float64 values of a column; empty cells become NaN, any other non-number is an error."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise TrainingError(
            f"column {column!r} has {int(bad.sum())} non-numeric value(s), first {raw.iloc[first]!r} "
            f"at data row {first + 1}"
        )
    array = values.to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        too_large = ~np.isnan(array) & ~(np.abs(array) <= FLOAT32_MAX)
    if too_large.any():
        rows = np.flatnonzero(too_large)
        shown = ", ".join(str(int(r) + 1) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        raise TrainingError(
            f"column {column!r} has {len(rows)} value(s) that float32 cannot hold (infinite, or beyond "
            f"±{FLOAT32_MAX:.4g}), first {raw.iloc[int(rows[0])]!r}, at data row(s) {shown}; the model trains and "
            "serves in float32: fix or drop them"
        )
    return array


def fill_missing(values: np.ndarray, column: str, report: Callable[[str], None]) -> np.ndarray:
    """Linear interpolation of NaNs (nearest value at the edges); refuse mostly-empty columns."""
    missing = np.isnan(values)
    count = int(missing.sum())
    if count == 0:
        return values
    if count > MAX_MISSING_FRACTION * len(values):
        raise TrainingError(
            f"column {column!r} is missing {count} of {len(values)} values (more than "
            f"{MAX_MISSING_FRACTION:.0%}); fill or drop them before training"
        )
    index = np.arange(len(values))
    filled = values.copy()
    filled[missing] = np.interp(index[missing], index[~missing], values[~missing])
    report(f"column {column!r}: {count} missing value(s) of {len(values)} filled by linear interpolation")
    return filled


def _std(values: np.ndarray) -> np.ndarray:
    std = values.std(axis=0)
    return np.where(std > 1e-12, std, 1.0)


# ---------------------------------------------------------------------------------- forecasting


@dataclass
class ForecastData:
    """Everything the forecast loop and evaluation need, in raw units.

    features [N, F] and targets [N, T] are the whole series; pair t maps features[t] to
    targets[t+1..t+h]. `y` [N-h, T*h] holds those targets, column order target-major:
    (target0@t+1..t+h, target1@t+1..t+h, ...), matching `output_names`.
    """

    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]
    horizon: int
    features: np.ndarray
    targets: np.ndarray
    y: np.ndarray
    train: np.ndarray  # pair indices t, contiguous and increasing
    val: np.ndarray
    test: np.ndarray
    train_rows: int  # rows [0, train_rows) are the training block
    normalization: Normalization
    filled: int
    # [P, T*h] raw values the model adds back to its de-normalised output (training/transforms.py);
    # None: the head predicts the targets themselves.
    offset: np.ndarray | None = None
    # validation and test origins left out because their reading or a target was filled
    # (interpolated), not observed: `val` and `test` hold only the scored origins
    excluded_val: int = 0
    excluded_test: int = 0

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(f"{t}@t+{k}" for t in self.target_names for k in range(1, self.horizon + 1))

    def z(self) -> np.ndarray:
        norm = self.normalization
        return ((self.features - np.asarray(norm.input_mean)) / np.asarray(norm.input_std)).astype(np.float32)

    def y_norm(self) -> np.ndarray:
        """Training targets in the head's units: (y - offset - mean) / std."""
        norm = self.normalization
        y = self.y if self.offset is None else self.y - self.offset
        return ((y - np.asarray(norm.output_mean)) / np.asarray(norm.output_std)).astype(np.float32)


def prepare_forecast(
    frame: pd.DataFrame,
    targets: Sequence[str],
    features: Sequence[str],
    *,
    horizon: int,
    window: int,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    report: Callable[[str], None] = print,
    filled_rows: Sequence[int] = (),
) -> ForecastData:
    """Fill, split and pair a single-series table. `filled_rows`: rows the time axis had
    missing and filled (training/seasons.fill_gaps). A validation or test origin whose reading or
    any of whose targets was filled (those rows, or an empty target cell) is not scored, as for
    many series (training/series.py): an interpolated value is a straight line between two
    readings, easier than any real one, so scoring it flatters the model and every baseline.
    Training pairs keep them (the filled series is what the model streams over)."""
    if not targets:
        raise TrainingError("forecasting needs at least one --target column")
    if horizon < 1 or window < 1:
        raise TrainingError(f"horizon and window must be positive (got horizon {horizon}, window {window})")
    require_columns(frame, targets, "target")
    require_columns(frame, features, "feature")
    columns: dict[str, np.ndarray] = {}
    filled = 0
    observed = np.ones(len(frame), dtype=bool)
    observed[np.asarray(filled_rows, dtype=np.int64)] = False
    for column in dict.fromkeys([*features, *targets]):
        values = numeric_column(frame, column)
        filled += int(np.isnan(values).sum())
        if column in targets:
            observed &= ~np.isnan(values)
        columns[column] = fill_missing(values, column, report)
    x = np.stack([columns[c] for c in features], axis=1)
    tgt = np.stack([columns[c] for c in targets], axis=1)
    n = len(frame)

    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    train_rows = n - n_val - n_test
    val_end = train_rows + n_val
    pairs = np.arange(max(n - horizon, 0))
    last = pairs + horizon  # index of the furthest target step
    first = pairs + 1
    train = pairs[last < train_rows]
    val = pairs[(first >= train_rows) & (last < val_end)]
    test = pairs[first >= val_end]
    scored = _scored(observed, pairs, horizon)
    excluded_val, excluded_test = int((~scored[val]).sum()), int((~scored[test]).sum())
    val, test = val[scored[val]], test[scored[test]]
    if len(train) < 2 * window or len(val) < 1 or len(test) < 1 or val_end < window:
        need = int(np.ceil((2 * window + horizon + 2 * horizon + 2) / (1 - val_fraction - test_fraction)))
        raise TrainingError(
            f"too few rows ({n}) for window {window} and horizon {horizon}: the split gives "
            f"{len(train)} training, {len(val)} validation and {len(test)} test pairs; training needs at least "
            f"{2 * window} (about {need} rows in all). Use a smaller --window or more data."
        )
    y = np.stack([tgt[t + 1 : t + horizon + 1] for t in pairs], axis=0)  # [P, h, T]
    y = y.transpose(0, 2, 1).reshape(len(pairs), -1)  # target-major columns
    train_x = x[:train_rows]
    train_t = tgt[:train_rows]
    out_mean = np.repeat(train_t.mean(axis=0), horizon)
    out_std = np.repeat(_std(train_t), horizon)
    norm = Normalization(
        tuple(float(v) for v in train_x.mean(axis=0)),
        tuple(float(v) for v in _std(train_x)),
        tuple(float(v) for v in out_mean),
        tuple(float(v) for v in out_std),
    )
    if excluded_val or excluded_test:
        report(
            f"{excluded_test} test and {excluded_val} validation origin(s) have a filled (interpolated) reading "
            "or target: not scored (the model and every baseline are scored on observed readings only)"
        )
    return ForecastData(
        tuple(features),
        tuple(targets),
        horizon,
        x,
        tgt,
        y,
        train,
        val,
        test,
        train_rows,
        norm,
        filled,
        excluded_val=excluded_val,
        excluded_test=excluded_test,
    )


def _scored(observed: np.ndarray, pairs: np.ndarray, horizon: int) -> np.ndarray:
    """[P] bool: origin t's reading and its targets t+1..t+h were all observed."""
    missing = np.concatenate([[0], np.cumsum(~observed)])  # missing[i]: unobserved rows before i
    return (missing[pairs + horizon + 1] - missing[pairs]) == 0


# -------------------------------------------------------------------------------- classification


@dataclass
class Sequences:
    """Padded batch of variable-length sequences (raw units) with their labels."""

    x: np.ndarray  # [S, T_max, F], zero padded at the end
    lengths: np.ndarray  # [S]
    labels: np.ndarray  # [S] class indices
    ids: list[object]


@dataclass
class ClassifyData:
    feature_names: tuple[str, ...]
    classes: tuple[str, ...]
    train: Sequences
    val: Sequences
    test: Sequences
    normalization: Normalization
    filled: int


def _label_key(label: object) -> tuple[int, float, str]:
    """Sort class labels numerically when they are numbers, so 2 comes before 10."""
    try:
        return (0, float(label), "")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return (1, 0.0, str(label))


def _label_name(label: object) -> str:
    if isinstance(label, float) and label.is_integer():
        return str(int(label))
    return str(label)


def prepare_classify(
    frame: pd.DataFrame,
    label: str,
    sequence_id: str,
    features: Sequence[str],
    *,
    split_column: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    report: Callable[[str], None] = print,
) -> ClassifyData:
    if not label or not sequence_id:
        raise TrainingError("classification needs --label and --sequence-id")
    require_columns(frame, [label], "label")
    require_columns(frame, [sequence_id], "sequence-id")
    if split_column:
        require_columns(frame, [split_column], "split")
    if not features:
        skip = {label, sequence_id, split_column}
        features = [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]
        if not features:
            raise TrainingError("no numeric feature columns found; name them with --features")
    require_columns(frame, features, "feature")
    labels = frame[label]
    if labels.isna().any() or (labels.astype(str).str.strip() == "").any():
        bad = int((labels.isna() | (labels.astype(str).str.strip() == "")).sum())
        first = int(np.flatnonzero((labels.isna() | (labels.astype(str).str.strip() == "")).to_numpy())[0])
        raise TrainingError(f"label column {label!r} has {bad} missing value(s) (NaN), first at data row {first + 1}")
    if frame[sequence_id].isna().any():
        raise TrainingError(f"sequence-id column {sequence_id!r} has missing values")
    filled = 0
    values = {}
    for column in features:
        raw = numeric_column(frame, column)
        filled += int(np.isnan(raw).sum())
        values[column] = fill_missing(raw, column, report)
    x_all = np.stack([values[c] for c in features], axis=1)

    classes_raw = sorted(labels.unique().tolist(), key=_label_key)
    class_index = {c: i for i, c in enumerate(classes_raw)}
    if len(classes_raw) < 2:
        raise TrainingError(f"label column {label!r} has a single class {classes_raw}; nothing to classify")

    groups = frame.groupby(sequence_id, sort=False).indices  # file order kept within a sequence
    ids = list(groups)
    seq_x = [x_all[groups[i]] for i in ids]
    seq_y = np.array([class_index[labels.iloc[groups[i][-1]]] for i in ids])

    rng = np.random.default_rng(seed)
    assign = np.empty(len(ids), dtype=object)
    if split_column:
        split = frame[split_column].astype(str).str.lower().str.strip()
        names = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val"}
        names["test"] = "test"
        for k, i in enumerate(ids):
            value = split.iloc[groups[i][-1]]
            if value not in names:
                raise TrainingError(f"split column {split_column!r} has value {value!r}; use train/validation/test")
            assign[k] = names[value]
        if not (assign == "val").any():  # carve validation out of training, stratified
            train_idx = np.flatnonzero(assign == "train")
            for cls in np.unique(seq_y[train_idx]):
                members = rng.permutation(train_idx[seq_y[train_idx] == cls])
                assign[members[: max(1, round(len(members) * val_fraction))]] = "val"
    else:
        for cls in np.unique(seq_y):
            members = rng.permutation(np.flatnonzero(seq_y == cls))
            n_test = round(len(members) * test_fraction)
            n_val = round(len(members) * val_fraction)
            assign[members] = "train"
            assign[members[:n_test]] = "test"
            assign[members[n_test : n_test + n_val]] = "val"
    for part in ("train", "val", "test"):
        if not (assign == part).any():
            raise TrainingError(f"too few sequences ({len(ids)}) to form a non-empty {part} split")

    train_rows = np.concatenate([seq_x[k] for k in np.flatnonzero(assign == "train")])
    norm = Normalization(
        tuple(float(v) for v in train_rows.mean(axis=0)), tuple(float(v) for v in _std(train_rows)), (), ()
    )

    def pack(part: str) -> Sequences:
        idx = np.flatnonzero(assign == part)
        lengths = np.array([len(seq_x[k]) for k in idx])
        x = np.zeros((len(idx), int(lengths.max()), len(features)))
        for row, k in enumerate(idx):
            x[row, : lengths[row]] = seq_x[k]
        return Sequences(x, lengths, seq_y[idx], [ids[k] for k in idx])

    return ClassifyData(
        tuple(features),
        tuple(_label_name(c) for c in classes_raw),
        pack("train"),
        pack("val"),
        pack("test"),
        norm,
        filled,
    )
