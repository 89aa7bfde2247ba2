"""The resolved training request (`RunSettings`) and the constants every training module shares.

Its own module so that the modules of training/ can import it without importing the CLI: the
import graph of training/ has no circle (tests/training/test_imports.py):

    cli -> pipeline (dispatch) -> forecaster_run | global_run -> publish, configs, verdict -> settings

Imports neither torch nor pandas (seqserve/cli.py builds its parser from training/cli.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from models import forecast_spec


@dataclass
class RunSettings:
    """The resolved training request; recorded verbatim in each manifest as `training_args`."""

    data: str = ""
    task: str = "forecast"
    target: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    horizon: int = 1
    label: str = ""
    sequence_id: str = ""
    series_id: str = ""
    split_column: str = ""
    cell: str = "lstm"
    layers: int = 1
    hidden: int = 32
    dropout: float = 0.0
    window: int = 48
    epochs: int = 60
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    input_noise: float = 0.0
    weight_average: float = 0.0
    patience: int = 10
    seed: int = 0
    threads: int = 1
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    season: list[int] = field(default_factory=list)
    # --season auto (default): seasons found in the data (training/seasons.py); --season 0 sets
    # this False with no seasons; --season N,... sets the seasons and this False.
    season_auto: bool = True
    time_column: str = ""
    transform: str = "auto"
    # Forecast in logs (training/transforms.py multiplicative_season): auto offers it when the
    # training block shows a season whose swing grows with the level; yes forces it, no refuses it.
    log: str = "auto"
    history: int = 0
    # Forecast quantile levels (training/calibrate.py); [] = point forecasts only.
    quantiles: list[float] = field(default_factory=lambda: [0.025, 0.1, 0.5, 0.9, 0.975])
    baselines: str = "full"
    allow_worse: bool = False
    gate: str = "naive"
    repository: str = "model_repository"
    name: str = ""
    preset: str = ""
    quiet: bool = False
    max_rows: int = 2_000_000
    # The settings the user did not give (no flag, preset or config value): sizes among these
    # adapt to the data (training/sizing.py); recorded so a manifest says what was chosen for them.
    defaulted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELD_NAMES = {f.name for f in fields(RunSettings)}
# Forecast target transforms: the graph's own list (models/forecast_spec.py) and auto, which
# chooses among them on validation.
TRANSFORMS = ["auto", *forecast_spec.TRANSFORMS]
EXIT_NOT_PROMOTED = 3  # a version was written but failed the quality gate (training/gate.py)
