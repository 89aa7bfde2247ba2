"""The loaded models: one ONNX Runtime session per (model, version) in the repository.

The ONNX file describes itself (models.config in its metadata), so loading needs nothing else:
its state tensors (`config.state_specs`: h (, c) and any extras such as a history ring or a
phase clock, each float32 [rows, batch, width]) and its quality gate (`seqserve.gate`).

Default version. A request that names no version (new sessions, unpinned predictions, V2
without /versions/) gets the highest *promoted* version: training publishes a version that
does not beat its baselines with `gate.promoted = false`, and such a version is served only
when asked for by number. A version without a gate (older files) counts as promoted. When no
loaded version of a model is promoted, the highest version serves and /v1/models says so
(`default_reason`), rather than refusing every unpinned request.
Execution provider by setting: `auto` takes CUDA when the installed onnxruntime offers it and
it initialises, else CPU, and says which in the log and in each model's description.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from models.chunks import run_in_time_chunks
from models.config import METADATA_KEY, ConfigError, ModelConfig
from models.fileio import call_with_timeout, read_file
from models.repository import MAX_MODEL_BYTES, RepositoryEntry, scan_repository
from service.core.errors import ModelNotFound, VersionNotFound
from service.core.graphcache import GraphCache
from service.core.settings import Settings

log = logging.getLogger("seqserve.registry")

GATE_KEY = "seqserve.gate"

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class ModelLoadError(RuntimeError):
    """A repository entry that cannot be served (corrupt file, missing metadata)."""


def choose_providers(setting: str) -> list[str]:
    available = ort.get_available_providers()
    if setting == "cpu":
        return [CPU]
    if setting == "cuda":
        if CUDA not in available:
            raise ModelLoadError(f"provider 'cuda' requested but onnxruntime offers only {available}")
        return [CUDA, CPU]
    return [CUDA, CPU] if CUDA in available else [CPU]


def read_gate(value: Any, where: str) -> dict[str, Any] | None:
    """A gate verdict ({"promoted": bool, "reason", "metric", ...}) or None when `value` is
    not one (logged: a malformed gate must not take a version out of service silently)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if isinstance(value, dict) and isinstance(value.get("promoted"), bool):
        return value
    log.warning("ignoring malformed quality gate in %s: %.200r", where, value)
    return None


@dataclass
class LoadedModel:
    name: str
    version: int
    config: ModelConfig
    path: Path
    session: ort.InferenceSession
    provider: str
    manifest: dict[str, Any] = field(default_factory=dict)
    file_hash: str = ""  # sha256 of model.onnx, hex
    max_chunk_elements: int = 0  # rows x steps per ONNX Runtime call; 0: no chunking
    # The gate verdict in the ONNX file's metadata (None: the file has none).
    file_gate: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        specs = self.config.state_specs
        self.state_names = tuple(s.name for s in specs)
        self.input_names = ["input", *(f"{s}0" for s in self.state_names)]
        self.output_names = ["output", *(f"{s}n" for s in self.state_names)]
        # Per session, without batch: [rows, width] of each state tensor, in graph order.
        self.state_shapes = tuple((s.rows, s.width) for s in specs)
        self.state_bytes = sum(rows * width for rows, width in self.state_shapes) * 4
        layout = ",".join(f"{s.name}:{s.rows}x{s.width}" for s in specs)
        # What a session's state is bound to: this exact graph (file) and its state layout.
        self.fingerprint = f"{self.file_hash[:32]}/{layout}"
        self._fresh = self.config.initial_state(1)  # shared, read-only: copied by every user
        self.max_chunk_steps = self.config.max_chunk_steps  # 0: any (models/chunks.py)
        # A model with quantile levels also outputs "quantiles" [B, T, O, Q] (and "anomaly"
        # [B, T, 4]); run() packs them after the forecasts into one [B, T, width] array, so
        # batching, the engine and the replay record carry them unchanged, and the codecs split
        # them again (unpack). A model without levels runs exactly as before.
        self.extra_outputs = self.config.extra_outputs
        self.quantile_keys = self.config.quantile_keys
        self.anomaly = self.config.anomaly
        outputs, levels = self.config.output_size, len(self.config.quantiles)
        self.output_width = outputs * (1 + levels) + (4 if self.anomaly else 0)
        if self.extra_outputs:
            self._graph_outputs = [*self.output_names, *self.extra_outputs]
            self._call = self._call_packed  # type: ignore[method-assign]
        for array in self._fresh:
            array.flags.writeable = False
        self.gate = self.file_gate
        self.refresh_gate(self.manifest)

    def refresh_gate(self, manifest: dict[str, Any]) -> None:
        """The gate that decides promotion: manifest.json's `gate` when it has one (an operator
        may edit it and reload to promote or withdraw a version), else the file's own."""
        self.manifest = manifest
        gate = manifest.get("gate") if isinstance(manifest, dict) else None
        self.gate = (read_gate(gate, f"{self.key} manifest.json") if gate is not None else None) or self.file_gate

    @property
    def promoted(self) -> bool:
        return self.gate is None or bool(self.gate["promoted"])

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def period_seconds(self) -> float | None:
        """The sampling period the model was trained at: its clock's, or the one training
        recorded (`extra["period_seconds"]`) for a model without a phase; None when unknown."""
        if self.config.clock is not None:
            return float(self.config.clock.period_seconds)
        period = self.config.extra.get("period_seconds")
        return float(period) if isinstance(period, int | float) and period > 0 else None

    @property
    def day_first(self) -> bool | None:
        """The order of the day/month/year dates the model was trained on (manifest.json's
        `time.day_first`): a start_time written like them is read in it. None: not recorded."""
        time = self.manifest.get("time") if isinstance(self.manifest, dict) else None
        order = time.get("day_first") if isinstance(time, dict) else None
        return order if isinstance(order, bool) else None

    def initial_state(self, batch: int, start_time: float | None = None) -> tuple[np.ndarray, ...]:
        """A fresh state, float32 [rows, batch, width] per tensor: each at its spec's `fill`,
        and the clock's phase set from `start_time` (unix seconds) when the model has one."""
        if start_time is None and batch == 1:
            return tuple(s.copy() for s in self._fresh)
        return self.config.initial_state(batch, start_time)

    def zero_state(self, batch: int) -> tuple[np.ndarray, ...]:
        """Alias of initial_state(batch) (a fresh state: zeros for h/c, `fill` for others)."""
        return self.initial_state(batch)

    def run(self, inputs: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """inputs [B, T, F] float32, state [L, B, H] each -> (outputs [B, T, O], new state).

        Blocking: callers run it off the event loop (see service/core/batching.py). Work of more
        than `max_chunk_elements` rows x steps runs as consecutive time chunks, each starting
        from the state the previous one ended in: the recurrence is the same, so the result
        is the one-call result, while ONNX Runtime's intermediate buffers (gates for every
        step of every row) stay bounded by the setting instead of growing with the request.
        A forecaster with the robust state update also runs at most `config.max_chunk_steps`
        steps a call: its fixed point's cost grows with the square of a call's length."""
        return run_in_time_chunks(self._call, inputs, state, self.max_chunk_elements, self.max_chunk_steps)

    def _call(self, inputs: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        feeds = {"input": inputs}
        for name, array in zip(self.input_names[1:], state, strict=True):
            feeds[name] = array
        outputs, *new_state = self.session.run(self.output_names, feeds)
        return outputs, tuple(new_state)

    def _call_packed(
        self, inputs: np.ndarray, state: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        feeds = {"input": inputs}
        for name, array in zip(self.input_names[1:], state, strict=True):
            feeds[name] = array
        got = self.session.run(self._graph_outputs, feeds)
        n = len(self.output_names)
        outputs, new_state, extras = got[0], got[1:n], got[n:]
        batch, steps = outputs.shape[0], outputs.shape[1]
        parts = [outputs, *(e.reshape(batch, steps, -1) for e in extras)]
        return np.concatenate(parts, axis=-1), tuple(new_state)

    def unpack(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Packed run() outputs [..., output_width] -> (forecasts [..., O], quantiles
        [..., O, Q] or None, anomaly [..., 4] (seen, outside_80, outside_95, score) or None)."""
        if not self.extra_outputs:
            return rows, None, None
        o, q = self.config.output_size, len(self.quantile_keys)
        outputs = np.ascontiguousarray(rows[..., :o])
        quantiles = rows[..., o : o * (1 + q)].reshape(*rows.shape[:-1], o, q)
        anomaly = rows[..., o * (1 + q) :] if self.anomaly else None
        return outputs, quantiles, anomaly

    def describe(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "name": self.name,
            "version": self.version,
            "cell": cfg.cell,
            "head": cfg.head,
            "num_layers": cfg.num_layers,
            "hidden_size": cfg.hidden_size,
            "input_size": cfg.input_size,
            "output_size": cfg.output_size,
            "horizon": cfg.horizon,
            "features": list(cfg.feature_names),
            "outputs": list(cfg.output_names),
            "quantiles": list(self.quantile_keys),
            "anomaly": ["outside_80", "outside_95", "score"] if self.anomaly else [],
            "state": {s.name: [s.rows, s.width] for s in cfg.state_specs},
            "state_tensors": [
                {
                    "name": s.name,
                    "shape": [s.rows, s.width],
                    "graph_shape": [s.rows, -1, s.width],
                    "input": f"{s.name}0",
                    "output": f"{s.name}n",
                    "fill": s.fill,
                    "doc": s.doc,
                }
                for s in cfg.state_specs
            ],
            "state_bytes": self.state_bytes,
            "clock": None if cfg.clock is None else dataclasses.asdict(cfg.clock),
            "period_seconds": self.period_seconds,
            "positive_target": None if cfg.positive_target is None else dataclasses.asdict(cfg.positive_target),
            "gate": self.gate,
            "promoted": self.promoted,
            "provider": self.provider,
            "created": self.manifest.get("created"),
            "metrics": self.manifest.get("metrics"),
        }


def read_model_file(entry: RepositoryEntry, timeout: float) -> bytes:
    """model.onnx's bytes (read once: ONNX Runtime loads them and the fingerprint hashes
    them), with the repository's timeout and regular-file check (models/fileio.py)."""
    try:
        return read_file(entry.model_path, MAX_MODEL_BYTES, timeout)
    except OSError as exc:
        reason = exc.strerror if exc.strerror else str(exc)
        raise ModelLoadError(f"{entry.name} v{entry.version}: cannot read model.onnx: {reason}") from exc


def _session(
    entry: RepositoryEntry, data: bytes, options: ort.SessionOptions, providers: list[str]
) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(data, options, providers=providers)
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        reason = str(exc).replace(str(entry.model_path), "model.onnx")  # no server paths in reports
        raise ModelLoadError(f"{entry.name} v{entry.version}: cannot load model.onnx: {reason}") from exc


def _cpu_session_cached(
    entry: RepositoryEntry,
    data: bytes,
    fingerprint: str,
    options: ort.SessionOptions,
    providers: list[str],
    settings: Settings,
) -> ort.InferenceSession:
    """The session, on the optimised graph SEQSERVE_ORT_CACHE_DIR holds for this file when there
    is one (CPU only: service.core.graphcache), else optimised now and cached for the next load."""
    if settings.ort_cache_dir is None or providers != [CPU]:
        return _session(entry, data, options, providers)
    graphs = GraphCache(settings.ort_cache_dir)
    cached = graphs.load(fingerprint, options, providers)
    if cached is not None:
        return cached
    temporary = graphs.store_to(fingerprint, options)
    try:
        session = _session(entry, data, options, providers)
    except ModelLoadError:
        if temporary is None:
            raise
        options.optimized_model_filepath = ""  # writing the graph may be what failed
        temporary.unlink(missing_ok=True)
        return _session(entry, data, options, providers)
    options.optimized_model_filepath = ""
    if temporary is not None:
        graphs.commit(fingerprint, temporary)
    return session


def load_model(entry: RepositoryEntry, settings: Settings) -> LoadedModel:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # The CPU arena keeps its high-water mark for the life of the process; without it,
    # buffers go back to the allocator after each call (no measurable cost per step here).
    options.enable_cpu_mem_arena = settings.ort_cpu_arena
    providers = choose_providers(settings.provider)
    timeout = settings.repository_read_timeout_seconds
    data = read_model_file(entry, timeout)
    fingerprint = hashlib.sha256(data).hexdigest()
    try:
        session = _cpu_session_cached(entry, data, fingerprint, options, providers, settings)
    except ModelLoadError:
        if settings.provider != "auto" or providers == [CPU]:
            raise
        log.warning("CUDA could not initialise for %s v%s; falling back to CPU", entry.name, entry.version)
        session = _session(entry, data, options, [CPU])
    if providers[0] == CUDA and session.get_providers()[0] != CUDA:
        if settings.provider == "cuda":
            raise ModelLoadError(
                f"{entry.name} v{entry.version}: provider 'cuda' requested but CUDA did not initialise"
            )
        log.warning("CUDA could not initialise for %s v%s; falling back to CPU", entry.name, entry.version)
    meta = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise ModelLoadError(f"{entry.name} v{entry.version}: no {METADATA_KEY} metadata; not a seqserve export")
    try:
        config = ModelConfig.from_json(meta[METADATA_KEY])
    except ConfigError as exc:
        raise ModelLoadError(f"{entry.name} v{entry.version}: {exc}") from exc
    expected = ["input", *(f"{s}0" for s in config.state_names)]
    graph_inputs = session.get_inputs()
    if [i.name for i in graph_inputs] != expected:
        raise ModelLoadError(f"{entry.name} v{entry.version}: graph inputs are not {expected}")
    for spec, graph_input in zip(config.state_specs, graph_inputs[1:], strict=True):
        dims = graph_input.shape
        fixed = (dims[0], dims[2]) if len(dims) == 3 else None
        wanted = (spec.rows, spec.width)
        if fixed is None or any(isinstance(d, int) and d != w for d, w in zip(fixed, wanted, strict=True)):
            raise ModelLoadError(
                f"{entry.name} v{entry.version}: graph input {graph_input.name} has shape {dims}, "
                f"but the config describes [{spec.rows}, batch, {spec.width}]"
            )
    file_gate = read_gate(meta[GATE_KEY], f"{entry.name} v{entry.version} model.onnx") if GATE_KEY in meta else None
    model = LoadedModel(
        entry.name,
        entry.version,
        config,
        entry.path,
        session,
        session.get_providers()[0],
        entry.manifest(timeout),
        fingerprint,
        file_gate=file_gate,
    )
    model.max_chunk_elements = settings.max_chunk_elements
    # Warm up: the first run allocates; do it here, not on a client's request.
    model.run(np.zeros((1, 1, config.input_size), np.float32), model.zero_state(1))
    return model


class ModelRegistry:
    """name -> version -> LoadedModel; the highest promoted version serves when none is asked for."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._models: dict[str, dict[int, LoadedModel]] = {}
        self._default: dict[str, LoadedModel] = {}  # recomputed whenever versions or gates change
        self.errors: dict[str, str] = {}
        self._failed: dict[str, int] = {}  # "name/version" -> mtime of the file that failed

    def wanted(self) -> list[RepositoryEntry]:
        """The repository's entries that the version policy says should be served. Under
        `latest`, the newest N versions, plus the newest promoted one when none of those is
        promoted (so that unpinned requests keep their default)."""
        entries = scan_repository(self.settings.model_repository, self.settings.repository_read_timeout_seconds)
        if self.settings.version_policy == "latest":
            by_name: dict[str, list[RepositoryEntry]] = {}
            for entry in entries:
                by_name.setdefault(entry.name, []).append(entry)
            keep = self.settings.latest_versions
            entries = []
            for group in by_name.values():
                newest = group[-keep:]
                if not any(self._promoted_hint(e) for e in newest):
                    older = [e for e in group[:-keep] if self._promoted_hint(e)]
                    newest = older[-1:] + newest
                entries.extend(newest)
        return entries

    def _promoted_hint(self, entry: RepositoryEntry) -> bool:
        """Whether an entry is promoted, without loading it: the loaded model's verdict, else
        its manifest's gate (a file not loaded yet and without one counts as promoted)."""
        loaded = self._models.get(entry.name, {}).get(entry.version)
        if loaded is not None:
            return loaded.promoted
        gate = entry.manifest(self.settings.repository_read_timeout_seconds).get("gate")
        verdict = read_gate(gate, f"{entry.name} v{entry.version} manifest.json") if gate is not None else None
        return verdict is None or bool(verdict["promoted"])

    def refresh_gates(self) -> list[str]:
        """Re-read every loaded version's manifest.json (hot reload): a gate edited there takes
        effect without reloading the file. Returns the keys whose promotion changed."""
        changed = []
        for model in list(self):
            before = model.promoted
            entry = RepositoryEntry(model.name, model.version, model.path)
            model.refresh_gate(entry.manifest(self.settings.repository_read_timeout_seconds))
            if model.promoted != before:
                changed.append(model.key)
        for name in {key.split("/")[0] for key in changed}:
            self._choose_default(name)
        return changed

    def _choose_default(self, name: str) -> None:
        versions = self._models.get(name)
        if not versions:
            self._default.pop(name, None)
            return
        promoted = [v for v, m in versions.items() if m.promoted]
        chosen = versions[max(promoted) if promoted else max(versions)]
        previous = self._default.get(name)
        self._default[name] = chosen
        if previous is not chosen:
            log.info("default version of %s is now %d%s", name, chosen.version, "" if promoted else " (none promoted)")

    def default_version(self, name: str) -> tuple[int, str]:
        """(version served when none is asked for, why)."""
        model = self.get(name)
        if model.promoted:
            gated = sum(1 for m in self._models[name].values() if not m.promoted)
            why = "highest promoted version"
            return model.version, why + (f" ({gated} unpromoted version(s) served only on request)" if gated else "")
        return model.version, "no loaded version passed the quality gate: serving the highest version"

    def load_all(self) -> None:
        for entry in self.wanted():
            self.add(entry)

    def try_load(self, entry: RepositoryEntry) -> tuple[LoadedModel | None, str | None]:
        """Load without registering (safe off the event loop): (model, None), or (None, why)
        for a broken file, which is logged once and remembered by its modification time so
        polling does not retry it until it changes ((None, None) while it is unchanged)."""
        key = f"{entry.name}/{entry.version}"
        try:
            stamp = call_with_timeout(
                lambda: entry.model_path.stat().st_mtime_ns,
                self.settings.repository_read_timeout_seconds,
                "model.onnx stat",
            )
        except OSError:
            stamp = 0
        if self._failed.get(key) == stamp:
            return None, None
        try:
            return load_model(entry, self.settings), None
        except ModelLoadError as exc:
            self.errors[key] = str(exc)
            self._failed[key] = stamp
            log.error("refusing model: %s", exc)
            return None, str(exc)

    def register(self, model: LoadedModel) -> None:
        self._models.setdefault(model.name, {})[model.version] = model
        self._choose_default(model.name)
        if not model.promoted:
            default, _ = self.default_version(model.name)
            if self.get(model.name).promoted:
                serves = (
                    f"v{default} (the highest promoted version) stays the default; this one is served "
                    "only when asked for by version"
                )
            else:
                serves = (
                    f"no version of {model.name} is promoted, so requests that name no version get the highest, "
                    f"v{default}, with a warning"
                )
            log.warning(
                "%s is not promoted by its quality gate (%s); %s",
                model.key,
                (model.gate or {}).get("reason", "no reason given"),
                serves,
            )
        self.errors.pop(model.key, None)
        self._failed.pop(model.key, None)
        log.info("loaded %s v%d (%s, provider %s)", model.name, model.version, model.config.cell, model.provider)

    def add(self, entry: RepositoryEntry) -> LoadedModel | None:
        model, _ = self.try_load(entry)
        if model is not None:
            self.register(model)
        return model

    def has_name(self, name: str) -> bool:
        return name in self._models

    def has(self, name: str, version: int) -> bool:
        return version in self._models.get(name, {})

    def remove(self, name: str, version: int) -> None:
        versions = self._models.get(name, {})
        versions.pop(version, None)
        if not versions:
            self._models.pop(name, None)
        self._choose_default(name)

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        versions = self._models.get(name)
        if not versions:
            raise ModelNotFound(f"model '{name}' is not loaded", model=name)
        if version is None:
            return self._default[name]
        model = versions.get(version)
        if model is None:
            raise VersionNotFound(f"model '{name}' has no version {version}", model=name, versions=sorted(versions))
        return model

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> list[int]:
        if name not in self._models:
            raise ModelNotFound(f"model '{name}' is not loaded", model=name)
        return sorted(self._models[name])

    def __iter__(self) -> Iterator[LoadedModel]:
        for name in sorted(self._models):
            for version in sorted(self._models[name]):
                yield self._models[name][version]

    def __len__(self) -> int:
        return sum(len(v) for v in self._models.values())
