"""`seqserve` console script: train, serve, and look at a model repository."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _serve(args: argparse.Namespace) -> int:
    from service.core.settings import Settings
    from service.server import serve

    overrides = {
        key: value
        for key, value in {
            "host": args.host,
            "port": args.port,
            "grpc_port": args.grpc_port,
            "model_repository": args.model_repository,
            "workers": args.workers,
            "log_level": args.log_level,
        }.items()
        if value is not None
    }
    serve(Settings(**overrides))
    return 0


def _gate(manifest: dict) -> dict:
    """A version's quality-gate record; one written before the gate existed counts as promoted."""
    gate = manifest.get("gate")
    if isinstance(gate, dict) and isinstance(gate.get("promoted"), bool):
        return gate
    return {"promoted": True, "reason": "no gate recorded (written before the quality gate): counts as promoted"}


def _models(args: argparse.Namespace) -> int:
    from models.repository import scan_repository

    listing = []
    for entry in scan_repository(args.model_repository):
        gate = _gate(entry.manifest())
        listing.append(
            {
                "name": entry.name,
                "version": entry.version,
                "path": str(entry.path),
                "promoted": gate["promoted"],
                "gate": gate,
            }
        )
    print(json.dumps(listing, indent=2))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from models.repository import scan_repository

    try:
        from models.verify import verify_file
    except ImportError as exc:
        print(f"verify needs the [train] extra (onnx): {exc}", file=sys.stderr)
        return 2
    entries = [e for e in scan_repository(args.model_repository) if args.name in (None, e.name)]
    if not entries:
        print(f"no models in {args.model_repository}", file=sys.stderr)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the HTTP service (settings also from SEQSERVE_*)")
    serve.add_argument("--host", help="bind address (SEQSERVE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (SEQSERVE_PORT, default 8000)")
    serve.add_argument(
        "--grpc-port", type=int, help="KServe V2 gRPC port (SEQSERVE_GRPC_PORT, default 8001; 0 disables)"
    )
    serve.add_argument("--model-repository", help="model repository (SEQSERVE_MODEL_REPOSITORY)")
    serve.add_argument("--workers", type=int, help="worker processes (SEQSERVE_WORKERS)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_serve)

    models = sub.add_parser("models", help="list the models and versions in a repository")
    models.add_argument("--model-repository", default="model_repository")
    models.set_defaults(func=_models)

    verify = sub.add_parser(
        "verify", help="check every served file against the NumPy cell equations (whole and streamed)"
    )
    verify.add_argument("--model-repository", default="model_repository")
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
