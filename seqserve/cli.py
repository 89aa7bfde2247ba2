"""`seqserve` console script: train, serve, and look at a model repository."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def version() -> str:
    """The installed distribution's version (pyproject.toml), or 'unknown' from a bare checkout."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("seqserve")
    except PackageNotFoundError:
        return "unknown"


def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from service.core.settings import Settings
    from service.server import serve

    overrides = {
        key: value
        for key, value in {
            "host": args.host,
            "port": args.port,
            "grpc_port": args.grpc_port,
            "admin_host": args.admin_host,
            "admin_port": args.admin_port,
            "model_repository": args.model_repository,
            "workers": args.workers,
            "log_level": args.log_level,
        }.items()
        if value is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:  # a bad SEQSERVE_* value: name it, no traceback
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "settings"
            print(
                f"seqserve: invalid setting {name} (--{name.replace('_', '-')} or SEQSERVE_{name.upper()}): "
                f"{error['msg']}",
                file=sys.stderr,
            )
        return 2
    serve(settings)
    return 0


def _gate(manifest: dict[str, Any]) -> dict[str, Any]:
    """A version's quality-gate record; one written before the gate existed counts as promoted."""
    gate = manifest.get("gate")
    if isinstance(gate, dict) and isinstance(gate.get("promoted"), bool):
        return gate
    return {"promoted": True, "reason": "no gate recorded (written before the quality gate): counts as promoted"}


class RepositoryMissing(Exception):
    """The --model-repository path is not a directory."""


def _entries(repository: str) -> list[Any]:
    from models.repository import scan_repository

    if not Path(repository).is_dir():
        raise RepositoryMissing(
            f"seqserve: no model repository at {repository} (not a directory); "
            "pass --model-repository, or train one with `seqserve train`"
        )
    return scan_repository(repository)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _ratio(manifest: dict[str, Any]) -> str:
    """The model's error over the best baseline's on the same test origins ('0.830 mae vs naive';
    below 1 beats it; for accuracy above 1 does), as training recorded it: the manifest's
    `verdict` (every baseline, statistical ones included), else the gate's ratio, else the
    gate's two numbers; '-' where an older manifest has none of them."""
    verdict, gate = manifest.get("verdict"), manifest.get("gate")
    # The gate's ratio is against `ratio_baseline` (every baseline's best), not the gate's own
    # `best_baseline` (the naive one it was decided against); an older gate record without it
    # cannot say which, so its two numbers are used instead.
    for record, name in ((verdict, "best_baseline"), (gate, "ratio_baseline")):
        if (
            isinstance(record, dict)
            and name in record
            and (ratio := _number(record.get("ratio_to_best_baseline"))) is not None
        ):
            return f"{ratio:.3f} {record.get('metric', '?')} vs {record.get(name, '?')}"
    if not isinstance(gate, dict):
        return "-"
    model, baseline = _number(gate.get("model")), _number(gate.get("best_baseline_value"))
    if model is None or not baseline:
        return "-"
    return f"{model / baseline:.3f} {gate.get('metric', '?')} vs {gate.get('best_baseline', '?')}"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _models(args: argparse.Namespace) -> int:
    try:
        entries = _entries(args.model_repository)
    except RepositoryMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    listing = []
    for entry in entries:
        manifest = entry.manifest()
        gate = _gate(manifest)
        listing.append(
            {
                "name": entry.name,
                "version": entry.version,
                "path": str(entry.path),
                "promoted": gate["promoted"],
                "gate": gate,
                "recorded_gate": manifest.get("gate") if isinstance(manifest.get("gate"), dict) else None,
                "ratio": _ratio(manifest),
                "created": manifest.get("created"),
            }
        )
    # The version an unpinned request gets, as the service chooses it: the highest promoted one,
    # else the highest (service/core/registry.py).
    defaults: dict[str, int] = {}
    for name in {e["name"] for e in listing}:
        versions = [e for e in listing if e["name"] == name]
        promoted = [e["version"] for e in versions if e["promoted"]]
        defaults[name] = max(promoted or [e["version"] for e in versions])
    for item in listing:
        item["default"] = defaults[item["name"]] == item["version"]
    if args.json:
        print(
            json.dumps([{k: v for k, v in e.items() if k not in ("recorded_gate", "ratio")} for e in listing], indent=2)
        )
        return 0
    if not listing:
        print(f"no models in {args.model_repository}", file=sys.stderr)
        return 0
    rows = [["NAME", "VERSION", "DEFAULT", "GATE", "RATIO TO BEST BASELINE", "CREATED"]]
    for item in listing:
        recorded = item["recorded_gate"]
        gate_cell = "-" if recorded is None else ("promoted" if recorded["promoted"] else "NOT promoted")
        rows.append(
            [
                item["name"],
                str(item["version"]),
                ("*" if item["promoted"] else "* (none promoted)") if item["default"] else "",
                gate_cell,
                item["ratio"],
                str(item["created"] or "-"),
            ]
        )
    print(_table(rows))
    return 0


def _verify(args: argparse.Namespace) -> int:
    try:
        from models.verify import verify_file
    except ImportError as exc:
        print(f"verify needs the [train] extra (onnx): {exc}", file=sys.stderr)
        return 2
    try:
        everything = _entries(args.model_repository)
    except RepositoryMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    if not everything:
        print(f"seqserve: no models in {args.model_repository}", file=sys.stderr)
        return 2
    entries = [e for e in everything if args.name in (None, e.name)]
    if not entries:
        names = ", ".join(sorted({e.name for e in everything}))
        print(f"seqserve: no model named {args.name!r} in {args.model_repository}; available: {names}", file=sys.stderr)
        return 2
    failures = 0
    for entry in entries:
        verdict = verify_file(entry.model_path)
        failures += not verdict.ok
        print(
            f"{'ok  ' if verdict.ok else 'FAIL'} {entry.name} v{entry.version}: max |ORT - NumPy| "
            f"{verdict.max_error:.3g} whole, {verdict.streamed_error:.3g} streamed (tolerance {verdict.tolerance:.3g})"
        )
    return 1 if failures else 0


def _train(args: argparse.Namespace) -> int:
    try:
        from training.cli import run
    except ImportError as exc:  # the slim serving image has no torch
        print(f"training needs the [train] extra (torch): {exc}", file=sys.stderr)
        return 2
    return run(args)


def add_repository(parser: Any, default: str | None, help: str = "model repository (default model_repository)") -> None:
    """--model-repository DIR, the one spelling in help, and --repository as its alias: every
    subcommand takes both (train once took only --repository, serve and models only the other;
    training/cli.py declares train's the same way)."""
    parser.add_argument("--model-repository", metavar="DIR", default=default, help=f"{help}; alias --repository")
    parser.add_argument("--repository", dest="model_repository", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqserve", description=__doc__)
    parser.add_argument("--version", action="version", version=f"seqserve {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the HTTP service (settings also from SEQSERVE_*)")
    serve.add_argument("--host", help="bind address (SEQSERVE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP data-plane port (SEQSERVE_PORT, default 8000; 0: any free)")
    serve.add_argument(
        "--grpc-port", type=int, help="KServe V2 gRPC port (SEQSERVE_GRPC_PORT, default 8001; 0 disables)"
    )
    serve.add_argument(
        "--admin-port", type=int, help="admin API and /metrics port (SEQSERVE_ADMIN_PORT, default 8082; 0: any free)"
    )
    serve.add_argument("--admin-host", help="admin listener address (SEQSERVE_ADMIN_HOST, default: --host)")
    add_repository(serve, None, "model repository (SEQSERVE_MODEL_REPOSITORY)")
    serve.add_argument("--workers", type=int, help="worker processes (SEQSERVE_WORKERS)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_serve)

    models = sub.add_parser(
        "models", help="list the models and versions in a repository: gate, ratio to the best baseline, default"
    )
    add_repository(models, "model_repository")
    models.add_argument("--json", action="store_true", help="the listing as JSON (every gate field and the path)")
    models.set_defaults(func=_models)

    verify = sub.add_parser(
        "verify", help="check every served file against the NumPy cell equations (whole and streamed)"
    )
    add_repository(verify, "model_repository")
    verify.add_argument("--name", help="only this model")
    verify.set_defaults(func=_verify)

    train = sub.add_parser("train", help="train LSTM/GRU models on a CSV and export them to the repository")
    try:
        from training.cli import add_arguments
    except ImportError:
        pass
    else:
        add_arguments(train)
    train.set_defaults(func=_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
