"""A wide file (several target columns, one row per time) is several series: it is reshaped to
the long format and trained as one global model over the columns (training/global_run.py), so
each column gets its own metrics, its win or loss against the baselines is reported, and the gate
looks at the mean MASE and the share of columns beaten, not at an error pooled over columns of
different scales (where a few large columns hide losses on the rest).

`--features` (even naming exactly the targets) keeps one multivariate model instead, every
column an input of every forecast.

The model then serves one column per session (a reading at a time, like any series of a
`--series-id` model). When the file holds many same-kind columns, the long format (one row per
series and time, `--series-id`) is what the data is: adding a series is then adding rows.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from training.data import require_columns
from training.settings import RunSettings

SERIES = "series"
VALUE = "value"


def is_wide(settings: RunSettings) -> bool:
    """Several targets and no --features: several series. Naming the inputs with --features (even
    exactly the targets) keeps one multivariate model whose inputs are all the columns."""
    return settings.task == "forecast" and not settings.series_id and len(settings.target) > 1 and not settings.features


def _free(name: str, taken: set[str]) -> str:
    while name in taken:
        name = f"_{name}"
    return name


def to_long(
    frame: pd.DataFrame, settings: RunSettings, time_column: str, report: Callable[[str], None]
) -> tuple[pd.DataFrame, RunSettings]:
    """The long table (series, time if any, value) and the settings that train it globally."""
    from dataclasses import replace

    require_columns(frame, settings.target, "target")
    taken = {str(c) for c in frame.columns}
    series, value = _free(SERIES, taken), _free(VALUE, taken)
    parts = []
    for column in settings.target:
        part = pd.DataFrame({series: column, value: frame[column].to_numpy()})
        if time_column:
            part.insert(1, time_column, frame[time_column].to_numpy())
        parts.append(part)
    long = pd.concat(parts, ignore_index=True)
    report(
        f"{len(settings.target)} target columns are {len(settings.target)} series: one global model over them, "
        f"each column scored on its own (hint: the long format, one row per series and time with "
        f"--series-id, is what such a file is; columns {', '.join(settings.target[:5])}"
        f"{', ...' if len(settings.target) > 5 else ''})"
    )
    return long, replace(settings, series_id=series, target=[value], features=[], time_column=time_column)
