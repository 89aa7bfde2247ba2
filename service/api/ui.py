"""What the dashboard at /ui reads, all read-only: the static page itself, each version's
manifest (metrics against the baselines, the gate) and training plots, a JSON summary of the
same counters /metrics exports, and the bundled example series for the live view.

Nothing here writes: the live view streams through the ordinary session API, with the API
key the user typed, like any other client.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import re
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

from service.api.body import json_response_bytes
from service.api.deps import services
from service.api.schemas import ErrorBody
from service.core.errors import NotFound

router = APIRouter(tags=["dashboard"])
STATIC = Path(__file__).resolve().parent.parent / "ui"
PLOT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}\.png$")
MANIFEST_KEYS = (
    "name",
    "version",
    "created",
    "task",
    "features",
    "outputs",
    "metrics",
    "gate",
    "verdict",
    "seasons",
    "time",
    "training",
    "files",
)
DATA_KEYS = ("sha256", "rows", "missing_values_filled", "split")
MAX_DATASET_BYTES = 2_000_000
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}


def _json(data: Any) -> Response:
    return Response(json_response_bytes(data), media_type="application/json")


def mount_static(app: Any) -> None:
    """The page at /ui/ (index.html, script, styles; no CDN, no build step). /ui redirects."""
    app.mount("/ui", StaticFiles(directory=STATIC, html=True), name="ui")


@router.get("/v1/models/{name}/versions/{version}/manifest", responses=NOT_FOUND)
async def manifest(name: str, version: int, request: Request) -> Response:
    """The version's training manifest: metrics (model and baselines), the gate, the verdict
    (what the network learned), the seasons and time axis found, training history and the files
    written with it. Server paths (data file, repository) are left out."""
    model = services(request).registry.get(name, version)
    source = model.manifest
    body = {key: source[key] for key in MANIFEST_KEYS if key in source}
    data = source.get("data")
    if isinstance(data, dict):
        body["data"] = {key: data[key] for key in DATA_KEYS if key in data}
    body.setdefault("name", name)
    body.setdefault("version", version)
    return _json(body)


class PngFile(FileResponse):
    """What the plot route answers, so that its document lists image/png, not JSON."""

    media_type = "image/png"


@router.get(
    "/v1/models/{name}/versions/{version}/files/{filename}",
    response_class=PngFile,
    responses={
        200: {"description": "the plot", "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
        # spelt out: with `model`, FastAPI would list the error under the route's image/png
        404: {
            "description": "no such model, version or plot",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        },
    },
)
async def model_file(name: str, version: int, filename: str, request: Request) -> Response:
    """A training plot (PNG) written next to the model."""
    model = services(request).registry.get(name, version)
    path = model.path / filename
    if not PLOT_NAME.match(filename) or not path.is_file():
        raise NotFound(f"{model.key} has no plot '{filename[:64]}'")
    return PngFile(path, headers={"Cache-Control": "max-age=300"})


@router.get("/v1/ui/stats")
async def stats(request: Request) -> Response:
    """A JSON digest of /metrics: per model its sessions and steps applied, latency
    percentiles per route, sequences per ONNX Runtime call. Counters are totals since start;
    the page takes rates from the difference between two reads."""
    svc = services(request)
    families = {family.name: family for family in svc.metrics.registry.collect()}
    steps: dict[str, float] = {}
    for sample in _samples(families, "seqserve_steps", "_total"):
        steps[sample.labels["model"]] = sample.value
    models = []
    for name in svc.registry.names():
        versions = svc.registry.versions(name)
        models.append(
            {
                "name": name,
                "sessions": svc.store.model_sessions(name),
                "steps_total": sum(steps.get(f"{name}/{v}", 0.0) for v in versions),
            }
        )
    latency = _histograms(families, "seqserve_request_seconds", "route")
    batches = _histograms(families, "seqserve_batch_rows", "model", whole=True)
    store = svc.store.stats()
    return _json(
        {
            "time": time.time(),
            "uptime_seconds": time.time() - svc.started_at,
            "store": svc.store.kind,
            "sessions_active": store.get("active", 0),
            "models": models,
            "latency": [{"route": key, **value} for key, value in sorted(latency.items())],
            "batches": [{"model": key, **value} for key, value in sorted(batches.items())],
        }
    )


def _samples(families: dict[str, Any], name: str, suffix: str) -> list[Any]:
    family = families.get(name)
    return [s for s in family.samples if s.name == name + suffix] if family is not None else []


def _histograms(families: dict[str, Any], name: str, label: str, whole: bool = False) -> dict[str, dict[str, Any]]:
    """{label value: count, mean, p50, p90, p99} from a Prometheus histogram, summed over the
    other labels; percentiles interpolated within buckets as histogram_quantile does, or, for
    counts of whole things (`whole`), the bucket's upper bound."""
    buckets: dict[str, dict[float, float]] = {}
    sums: dict[str, float] = {}
    for sample in _samples(families, name, "_bucket"):
        key = sample.labels.get(label, "")
        bound = float(sample.labels["le"])
        per = buckets.setdefault(key, {})
        per[bound] = per.get(bound, 0.0) + sample.value
    for sample in _samples(families, name, "_sum"):
        key = sample.labels.get(label, "")
        sums[key] = sums.get(key, 0.0) + sample.value
    out = {}
    for key, per in buckets.items():
        bounds = sorted(per)
        total = per[bounds[-1]] if bounds else 0.0
        if total <= 0:
            continue
        out[key] = {
            "count": int(total),
            "mean": sums.get(key, 0.0) / total,
            **{f"p{int(q * 100)}": _quantile(q, bounds, per, total, whole) for q in (0.5, 0.9, 0.99)},
        }
    return out


def _quantile(q: float, bounds: list[float], cumulative: dict[float, float], total: float, whole: bool) -> float | None:
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the largest finite bucket: its bound is all we know
            if whole:
                return bound
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = bound, count
    return None


@lru_cache(maxsize=1)
def _dataset_dir() -> Path | None:
    spec = importlib.util.find_spec("training")  # located, not imported: it would pull torch in
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets"
    return path if path.is_dir() else None


@lru_cache(maxsize=16)
def _read_series(path: Path) -> dict[str, Any] | None:
    """A two-column CSV (time, value) as {"column", "timestamps", "values"}; None otherwise."""
    if path.stat().st_size > MAX_DATASET_BYTES:
        return None
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 3 or len(rows[0]) != 2:
        return None
    try:
        values = [float(r[1]) for r in rows[1:] if len(r) == 2 and r[1] != ""]
    except ValueError:
        return None
    stamps = [r[0] for r in rows[1:] if len(r) == 2 and r[1] != ""]
    return {"time_column": rows[0][0], "column": rows[0][1], "timestamps": stamps, "values": values}


def _datasets() -> dict[str, Path]:
    root = _dataset_dir()
    if root is None:
        return {}
    found = {}
    for directory in sorted(root.iterdir()):
        csv_path = directory / f"{directory.name}.csv"
        if csv_path.is_file() and _read_series(csv_path) is not None:
            found[directory.name] = csv_path
    return found


@router.get("/v1/ui/datasets")
async def datasets() -> Response:
    """The bundled single-series datasets the live view can stream."""
    listing = []
    for name, path in _datasets().items():
        series = _read_series(path)
        assert series is not None
        listing.append({"name": name, "column": series["column"], "length": len(series["values"])})
    return _json({"datasets": listing})


@router.get("/v1/ui/datasets/{name}", responses=NOT_FOUND)
async def dataset(name: str) -> Response:
    path = _datasets().get(name)
    if path is None:
        raise NotFound(f"no bundled dataset '{name[:64]}'")
    return _json({"name": name, **(_read_series(path) or {})})
