"""Triton's model configuration, repository index and statistics documents, built once as
plain dicts in the JSON form of Triton's protobuf messages (snake_case field names): the HTTP
routes answer them as JSON and the gRPC service parses them into the same messages, so the two
cannot drift (a field the proto does not have fails the gRPC path and its tests).

The model configuration describes what a Triton user needs to drive a seqserve model like a
sequence-batched Triton model: the `input` tensor [batch, time, features] and `output`; every
state tensor both as an optional input (explicit state, stateless or at a sequence start) and
an output; and `sequence_batching` with each state's input/output pair, its shape and initial
value, and the idle time after which a sequence is dropped (the session TTL).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from models.repository import scan_repository
from service.core.v2 import PLATFORM, InferenceRequestError, parse_version

if TYPE_CHECKING:
    from service.core.registry import LoadedModel
    from service.core.services import Services

TYPE = "TYPE_FP32"


def model_config(svc: Services, name: str, version: str | None) -> dict[str, Any]:
    model = svc.registry.get(name, parse_version(version))
    cfg = model.config
    versions = svc.registry.versions(model.name)
    states = [
        (spec, inp, out)
        for spec, inp, out in zip(cfg.state_specs, model.input_names[1:], model.output_names[1:], strict=True)
    ]
    inputs: list[dict[str, Any]] = [{"name": "input", "data_type": TYPE, "dims": [-1, -1, cfg.input_size]}]
    inputs += [{"name": i, "data_type": TYPE, "dims": [s.rows, -1, s.width], "optional": True} for s, i, _ in states]
    outputs: list[dict[str, Any]] = [{"name": "output", "data_type": TYPE, "dims": [-1, -1, cfg.output_size]}]
    outputs += [{"name": o, "data_type": TYPE, "dims": [s.rows, -1, s.width]} for s, _, o in states]
    sequence_states = []
    for spec, inp, out in states:
        state: dict[str, Any] = {
            "input_name": inp,
            "output_name": out,
            "data_type": TYPE,
            "dims": [spec.rows, 1, spec.width],
        }
        if spec.fill == 0:
            state["initial_state"] = [
                {"name": f"{spec.name}_zeros", "data_type": TYPE, "dims": [spec.rows, 1, spec.width], "zero_data": True}
            ]
        sequence_states.append(state)
    parameters = {
        "seqserve.cell": {"string_value": cfg.cell},
        "seqserve.max_steps_per_request": {"string_value": str(svc.settings.max_steps_per_request)},
        "seqserve.sequence_parameters": {
            "string_value": "sequence_id, sequence_start, sequence_end, sequence_position (retry-safe steps)"
        },
        "seqserve.features": {"string_value": ",".join(cfg.feature_names)},
    }
    default, _ = svc.registry.default_version(model.name)
    parameters["seqserve.default_version"] = {"string_value": str(default)}
    parameters["seqserve.promoted"] = {"string_value": "true" if model.promoted else "false"}
    if model.gate is not None:
        parameters["seqserve.gate"] = {"string_value": json.dumps(model.gate, sort_keys=True)}
    for spec in cfg.state_specs:
        if spec.fill != 0:
            parameters[f"seqserve.state.{spec.name}.fill"] = {"string_value": repr(float(spec.fill))}
    return {
        "name": model.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": versions}},
        "max_batch_size": 0,  # the batch is the first dim of `input` itself
        "input": inputs,
        "output": outputs,
        "sequence_batching": {
            "max_sequence_idle_microseconds": int(svc.settings.session_ttl_seconds * 1e6),
            "state": sequence_states,
        },
        "parameters": parameters,
    }


def repository_index(svc: Services, ready_only: bool = False) -> list[dict[str, Any]]:
    """Every version in the repository: READY when loaded, UNAVAILABLE (with the reason) when
    not, plus loaded versions whose files have since gone (still READY until unloaded)."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for entry in scan_repository(svc.settings.model_repository):
        key = f"{entry.name}/{entry.version}"
        if svc.registry.has(entry.name, entry.version):
            rows[(entry.name, entry.version)] = {"name": entry.name, "version": str(entry.version), "state": "READY"}
        else:
            reason = svc.registry.errors.get(key, "not loaded (version policy, or not yet picked up)")
            rows[(entry.name, entry.version)] = {
                "name": entry.name,
                "version": str(entry.version),
                "state": "UNAVAILABLE",
                "reason": reason,
            }
    for model in svc.registry:
        rows.setdefault(
            (model.name, model.version), {"name": model.name, "version": str(model.version), "state": "READY"}
        )
    listing = [rows[k] for k in sorted(rows)]
    return [r for r in listing if r["state"] == "READY"] if ready_only else listing


def statistics(svc: Services, name: str | None, version: str | None) -> list[dict[str, Any]]:
    """Statistics of one version, of every loaded version of a model (no version), or of every
    loaded model (no name), as Triton answers them."""
    models: list[LoadedModel]
    if not name:
        if version:
            raise InferenceRequestError("a version needs a model name", field="version")
        models = list(svc.registry)
    elif version:
        models = [svc.registry.get(name, parse_version(version))]
    else:
        models = [svc.registry.get(name, v) for v in svc.registry.versions(name)]
    book = svc.metrics.model_stats
    return [book.of(m.name, m.version).as_dict() for m in models]
