"""`seqserve` as an operator meets it, run as a real command: --version, `models` as a table,
`verify --name`, and `serve` refusing a taken port with one line (before loading any model)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import ROOT, free_port


def seqserve(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seqserve.cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def version_dir(root: Path, name: str, version: int, manifest: dict | None) -> None:
    entry = root / name / str(version)
    entry.mkdir(parents=True)
    (entry / "model.onnx").write_bytes(b"not read by the listing")
    if manifest is not None:
        (entry / "manifest.json").write_text(json.dumps(manifest))


def gate(promoted: bool, model: float, baseline: float) -> dict:
    return {
        "promoted": promoted,
        "reason": "...",
        "metric": "mae",
        "model": model,
        "best_baseline": "seasonal_naive_48",
        "best_baseline_value": baseline,
    }


def test_version_names_the_installed_version() -> None:
    from importlib.metadata import version

    result = seqserve("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"seqserve {version('seqserve')}"


def test_models_prints_a_table_with_gate_ratio_default_and_created(tmp_path: Path) -> None:
    version_dir(tmp_path, "demand", 1, {"created": "2026-01-02T03:04:05+00:00", "gate": gate(True, 8.0, 10.0)})
    version_dir(tmp_path, "demand", 2, {"created": "2026-02-02T03:04:05+00:00", "gate": gate(False, 12.5, 10.0)})
    verdict = {"metric": "mase", "ratio_to_best_baseline": 0.5, "best_baseline": "AutoETS"}
    gated = {**gate(True, 8.0, 10.0), "ratio_to_best_baseline": 0.8}
    version_dir(tmp_path, "demand", 3, {"created": "2026-03-02T03:04:05+00:00", "gate": gated, "verdict": verdict})
    version_dir(tmp_path, "old", 1, {"name": "old"})  # written before gates and timestamps
    version_dir(tmp_path, "bare", 3, None)  # no manifest at all
    result = seqserve("models", "--model-repository", str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "DEFAULT", "GATE", "RATIO", "TO", "BEST", "BASELINE", "CREATED"]
    rows = {tuple(line.split()[:2]): line.split() for line in lines[1:]}
    assert len(rows) == 5
    # v2 is newer but not promoted: the service's default for demand is v3 (promoted), not v2
    assert rows["demand", "1"] == [
        "demand", "1", "promoted", "0.800", "mae", "vs", "seasonal_naive_48", "2026-01-02T03:04:05+00:00"
    ]  # fmt: skip
    assert rows["demand", "2"] == [
        "demand", "2", "NOT", "promoted", "1.250", "mae", "vs", "seasonal_naive_48", "2026-02-02T03:04:05+00:00"
    ]  # fmt: skip
    # the verdict's ratio (against every baseline) comes first
    assert rows["demand", "3"] == [
        "demand", "3", "*", "promoted", "0.500", "mase", "vs", "AutoETS", "2026-03-02T03:04:05+00:00"
    ]  # fmt: skip
    # no gate recorded: '-' everywhere it would be read, and it still counts as promoted (default)
    assert rows["old", "1"] == ["old", "1", "*", "-", "-", "-"]
    assert rows["bare", "3"] == ["bare", "3", "*", "-", "-", "-"]


def test_models_json_keeps_every_field(tmp_path: Path) -> None:
    version_dir(tmp_path, "demand", 1, {"created": "2026-01-02T03:04:05+00:00", "gate": gate(True, 8.0, 10.0)})
    result = seqserve("models", "--json", "--model-repository", str(tmp_path))
    assert result.returncode == 0, result.stderr
    [entry] = json.loads(result.stdout)
    assert entry["gate"]["best_baseline_value"] == 10.0 and entry["default"] is True
    assert entry["created"] == "2026-01-02T03:04:05+00:00"


def test_models_on_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = seqserve("models", "--model-repository", str(missing))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"seqserve: no model repository at {missing} (not a directory); "
        "pass --model-repository, or train one with `seqserve train`"
    )


def test_verify_with_a_wrong_name_lists_the_available_names(tmp_path: Path) -> None:
    version_dir(tmp_path, "demand", 1, None)
    version_dir(tmp_path, "vowels", 1, None)
    result = seqserve("verify", "--model-repository", str(tmp_path), "--name", "demnad")
    assert result.returncode == 2
    assert result.stderr.strip() == f"seqserve: no model named 'demnad' in {tmp_path}; available: demand, vowels"


def test_verify_on_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    result = seqserve("verify", "--model-repository", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "no model repository at" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process (here: this one) listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize(
    ("flag", "env", "what"),
    [
        ("--port", "SEQSERVE_PORT", "HTTP"),
        ("--grpc-port", "SEQSERVE_GRPC_PORT", "gRPC"),
        ("--admin-port", "SEQSERVE_ADMIN_PORT", "the admin API and /metrics"),
    ],
)
def test_a_taken_port_is_one_line_naming_it_and_its_flag(
    tmp_path: Path, taken_port: int, flag: str, env: str, what: str
) -> None:
    ports = {"--port": free_port(), "--grpc-port": free_port(), "--admin-port": free_port(), flag: taken_port}
    argv = ["serve", "--host", "127.0.0.1", "--model-repository", str(tmp_path)]
    for name, port in ports.items():
        argv += [name, str(port)]
    result = seqserve(*argv, env={"SEQSERVE_LOG_LEVEL": "warning"})
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        f"seqserve: cannot listen for {what} on 127.0.0.1:{taken_port}: port {taken_port} is already in use; "
        f"choose another with {flag} (or {env})"
    ]


def test_two_listeners_on_one_port_are_refused(tmp_path: Path) -> None:
    port = free_port()
    result = seqserve("serve", "--port", str(port), "--admin-port", str(port), "--model-repository", str(tmp_path))
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        f"seqserve: cannot listen for the admin API and /metrics on 127.0.0.1:{port}: port {port} is the HTTP port "
        "(--port); choose another with --admin-port (or SEQSERVE_ADMIN_PORT)"
    ]


def test_an_invalid_setting_is_named_without_a_traceback(tmp_path: Path) -> None:
    result = seqserve("serve", "--port", "70000", "--model-repository", str(tmp_path))
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("seqserve: invalid setting port (--port or SEQSERVE_PORT): ")


@pytest.mark.parametrize("command", [["train", "--data", "x.csv"], ["serve"], ["models"], ["verify"]])
@pytest.mark.parametrize("flag", ["--model-repository", "--repository"])
def test_every_subcommand_takes_both_repository_spellings(command: list[str], flag: str) -> None:
    """train took only --repository, serve and models only --model-repository: both are taken
    everywhere, --model-repository the one spelling in help (naming its alias)."""
    from seqserve.cli import build_parser

    args = build_parser().parse_args([*command, flag, "/tmp/somewhere"])
    dest = "repository" if command[0] == "train" else "model_repository"
    assert getattr(args, dest) == "/tmp/somewhere"
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command[0]]
    text = " ".join(sub.format_help().split())  # help wraps lines
    assert "--model-repository DIR" in text and "alias --repository" in text
    assert "--repository DIR" not in text


def test_a_config_file_may_spell_the_repository_either_way(tmp_path: Path) -> None:
    from training.cli import _load_config

    for key in ("model-repository", "model_repository", "repository"):
        path = tmp_path / "config.json"
        path.write_text(json.dumps({key: "/tmp/somewhere"}))
        assert _load_config(str(path)) == {"repository": "/tmp/somewhere"}


def test_models_ratio_names_the_baseline_it_is_against() -> None:
    """The gate is decided against the best naive baseline, but its ratio is against the best of
    every baseline: the RATIO column names that one (ratio_baseline), never the gate's own."""
    from seqserve.cli import _ratio

    gated = {**gate(True, 1.112, 2.466), "ratio_to_best_baseline": 1.188}
    assert _ratio({"gate": {**gated, "ratio_baseline": "autoarima", "ratio_baseline_value": 0.936}}) == (
        "1.188 mae vs autoarima"
    )
    # an older record (ratio without its baseline's name): the gate's own two numbers, which agree
    assert _ratio({"gate": gated}) == f"{1.112 / 2.466:.3f} mae vs seasonal_naive_48"
