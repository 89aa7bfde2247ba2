"""Data-parallel training for real: `seqserve train --nproc 2` starts torchrun with two gloo
processes on the CPU, on the bundled many-series file (194 countries, `--series-id`). Each rank
reads and trains on its own half of the series (rank 0 reads them all: it evaluates and
publishes), both log their steps, rank 0 alone publishes one version, the global model beats
naive, its file streams a series exactly as a stateless call computes it, and a second run with
the same seed gives the same weights and metrics.

The helpers of training/distributed.py (sharding, sharded reading, the launcher's exit codes,
flag checks) are tested without processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from onnx import numpy_helper

from models.config import ModelConfig
from models.export import input_names, output_names
from seqserve.cli import main
from tests.support.servers import ROOT
from tests.support.tier import heavy, starts
from training import distributed
from training.data import TrainingError
from training.presets import DATASETS

from .conftest import SUNSPOTS, VOWELS, snapshot

FERTILITY = DATASETS / "world_fertility" / "world_fertility.csv"
SMALL = ["--hidden", "8", "--epochs", "2", "--batch-size", "8", "--baselines", "naive", "--quiet"]


def _train_nproc(tmp_path: Path, repo: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    heavy("torchrun")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    env.pop("SEQSERVE_TRAIN_STATUS", None)
    argv = ["--preset", "world_fertility", "--name", "fert", *SMALL]
    command = [sys.executable, "-m", "seqserve.cli", "train", *argv, "--repository", str(repo), "--nproc", "2"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False, cwd=tmp_path)


def _weights(entry: Path) -> dict[str, np.ndarray]:
    graph = onnx.load(str(entry / "model.onnx")).graph
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


@pytest.fixture(scope="module")
@starts("torchrun")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[subprocess.CompletedProcess[str]]]:
    """Two 2-process runs with the same seed into one repository (versions 1 and 2)."""
    tmp = tmp_path_factory.mktemp("ddp")
    repo = tmp / "repo"
    runs = []
    for _ in range(2):
        runs.append(_train_nproc(tmp, repo))
        assert runs[-1].returncode == 0, runs[-1].stdout[-3000:] + runs[-1].stderr[-3000:]
    return repo, runs


@pytest.mark.slow
def test_both_ranks_train_on_their_series_and_rank0_publishes_one_version(two_runs) -> None:
    repo, runs = two_runs
    out = runs[0].stdout
    assert "[rank 1/2] data: reads 97 of 194 series" in out, out  # only its half of the file
    assert "[rank 0/2] data: reads all 194 series (evaluates them all), trains on 97" in out, out
    for rank in (0, 1):  # the per-series baseline fits are shared out too
        assert f"[rank {rank}/2] baselines: fitted here for 97 series" in out, out
    for rank in (0, 1):
        steps = [line for line in out.splitlines() if line.startswith(f"[rank {rank}/2] step ")]
        assert len(steps) == 2, out  # one line per evaluation (2 epochs)
        assert "4 streams" in steps[0], steps  # the global batch of 8 split in two
    assert "[rank 1/2] lstm: trained 50 steps" in out, out
    assert out.count("] wrote ") == 1 and "[rank 0/2] wrote " in out, out
    # one version per run, nothing left behind
    files = ("manifest.json", "model.onnx", "loss.png", "forecast.png", "mase_by_series.png")
    assert snapshot(repo / "fert") == sorted(["1", "2", *(f"{v}/{f}" for v in ("1", "2") for f in files)])
    manifest = json.loads((repo / "fert" / "1" / "manifest.json").read_text())
    job = manifest["training"]["distributed"]
    assert job["world_size"] == 2 and job["backend"] == "gloo"
    assert [r["rank"] for r in job["ranks"]] == [0, 1]
    assert all(r["steps"] == 50 and r["allreduce_seconds"] > 0 and r["compute_seconds"] > 0 for r in job["ranks"])
    assert job["allreduce_bytes_per_step"] >= 4 * manifest["training"]["parameters"]
    metrics = manifest["metrics"]
    assert metrics["streaming"]["series"] == 194  # rank 0 evaluated every series
    assert metrics["streaming"]["mase"] < metrics["naive"]["mase"], metrics
    assert manifest["gate"]["promoted"] is True


@pytest.mark.slow
def test_same_seed_same_world_size_gives_identical_model(two_runs) -> None:
    repo, _ = two_runs
    first, second = (json.loads((repo / "fert" / v / "manifest.json").read_text()) for v in ("1", "2"))
    assert first["metrics"]["streaming"] == second["metrics"]["streaming"]
    assert first["training"]["val_loss"] == second["training"]["val_loss"]
    a, b = _weights(repo / "fert" / "1"), _weights(repo / "fert" / "2")
    assert a.keys() == b.keys() and len(a) > 3
    for name in a:
        assert np.array_equal(a[name], b[name]), name


@pytest.mark.slow
def test_published_model_streams_a_series_as_the_stateless_call(two_runs) -> None:
    """One session fed a country's series a few readings at a time, state carried, equals one
    call over the whole series from the initial state."""
    repo, _ = two_runs
    entry = repo / "fert" / "1"
    config = ModelConfig.from_dict(json.loads((entry / "manifest.json").read_text())["config"])
    frame = pd.read_csv(FERTILITY)
    country = frame[frame["country_code"] == "FRA"].sort_values("year").dropna(subset=["fertility"])  # trailing gaps
    series = country["fertility"].to_numpy(np.float32)[None, :, None]
    assert series.shape[1] > 40 and not np.isnan(series).any()
    session = ort.InferenceSession(str(entry / "model.onnx"), providers=["CPUExecutionProvider"])
    names_in, names_out = input_names(config), output_names(config)
    whole = session.run(names_out, dict(zip(names_in, [series, *config.initial_state(1)], strict=True)))[0]
    state = list(config.initial_state(1))
    streamed = []
    for begin in range(0, series.shape[1], 7):
        result = session.run(names_out, dict(zip(names_in, [series[:, begin : begin + 7], *state], strict=True)))
        streamed.append(result[0])
        state = result[1:]
    np.testing.assert_allclose(np.concatenate(streamed, axis=1), whole, rtol=1e-5, atol=1e-5)
    # and the stream forecasts the series better than its last value does
    actual = series[0, 1:, 0]
    assert np.abs(whole[0, :-1, 0] - actual).mean() < np.abs(series[0, :-1, 0] - actual).mean()


@pytest.mark.slow
def test_classification_trains_on_two_ranks(tmp_path) -> None:
    """The plain-model path: each rank trains on every other sequence of each batch, both log
    their epochs with the same (all-reduced) validation loss, rank 0 publishes one version."""
    heavy("torchrun")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    repo = tmp_path / "repo"
    argv = ["--data", str(VOWELS), "--task", "classify", "--label", "speaker", "--sequence-id", "series_id"]
    argv += ["--hidden", "16", "--epochs", "3", "--batch-size", "16", "--quiet", "--name", "v"]
    command = [sys.executable, "-m", "seqserve.cli", "train", *argv, "--repository", str(repo), "--nproc", "2"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    epochs = {
        rank: [
            line.split("validation loss ")[1]
            for line in proc.stdout.splitlines()
            if line.startswith(f"[rank {rank}/2] epoch")
        ]
        for rank in (0, 1)
    }
    assert len(epochs[0]) == 3 and epochs[0] == epochs[1], proc.stdout
    assert sorted(p.name for p in (repo / "v").iterdir()) == ["1"]
    metrics = json.loads((repo / "v" / "1" / "manifest.json").read_text())["metrics"]
    assert metrics["model"]["accuracy"] > 2 * metrics["majority"]["accuracy"], metrics


def test_shards_are_disjoint_and_cover_everything() -> None:
    items = list(range(11))
    for world in (1, 2, 3, 4):
        ranks = [distributed.Context(rank=r, world_size=world, backend="gloo") for r in range(world)]
        assert sum(c.shard_count(11) for c in ranks) == 11
        assert max(c.shard_count(11) for c in ranks) - min(c.shard_count(11) for c in ranks) <= 1
        shards = [c.shard_items(items) for c in ranks]
        assert sorted(i for s in shards for i in s) == items


def test_single_process_context_is_rank_zero_of_one() -> None:
    ctx = distributed.context()
    assert not ctx.enabled and ctx.is_main and ctx.world_size == 1 and ctx.label() == ""
    assert ctx.mean(6.0, 3.0) == 2.0
    model = object()
    assert ctx.wrap(model) is model


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--nproc", "0"], {}, "--nproc must be a positive integer"),
        (["--nproc", "2"], {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "leave it out when running under"),
        (["--nproc", "2", "--hidden", "0"], {}, "--hidden must be a positive integer"),
    ],
)
def test_bad_nproc_requests_fail_before_any_worker(tmp_path, monkeypatch, capsys, argv, env, message) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    repo = tmp_path / "repo"
    base = ["--data", str(SUNSPOTS), "--target", "sunactivity", *SMALL, "--repository", str(repo)]
    code = main(["train", *base, *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not repo.exists()


def test_launcher_hands_back_rank0_exit_code(tmp_path, monkeypatch) -> None:
    """A run that was written but not promoted exits 3 through the launcher, as it would alone;
    a worker that died without a status gives 2."""
    from training.cli import RunSettings

    calls = []

    def fake_call(command: list[str], env: dict[str, str]) -> int:
        calls.append(command)
        status = env.get(distributed.STATUS_ENV)
        if "--nproc-per-node=2" in command:
            Path(status).write_text("3")
            return 0
        return 1

    monkeypatch.setattr(subprocess, "call", fake_call)
    settings = RunSettings(data=str(SUNSPOTS), target=["sunactivity"])
    assert distributed.launch(settings, 2) == 3
    assert distributed.launch(settings, 3) == 2
    assert calls[0][1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert calls[0][-4:-1] == ["seqserve.cli", "train", "--config"]


def test_kubernetes_job_example_wires_the_rendezvous() -> None:
    """docs/kubernetes/train-distributed.yaml: an Indexed Job whose pods find pod 0 through the
    headless Service, with as many nodes in torchrun as pods in the Job."""
    import yaml

    docs = [d for d in yaml.safe_load_all((ROOT / "docs/kubernetes/train-distributed.yaml").read_text()) if d]
    service = next(d for d in docs if d["kind"] == "Service")
    job = next(d for d in docs if d["kind"] == "Job")
    assert service["spec"]["clusterIP"] == "None"
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    assert service["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert pod["subdomain"] == service["metadata"]["name"]
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "torch.distributed.run"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in container["args"] if "=" in arg)
    assert int(flags["nnodes"]) == spec["completions"] and flags["rdzv-backend"] == "c10d"
    host, port = flags["rdzv-endpoint"].split(":")
    assert host == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert int(port) == service["spec"]["ports"][0]["port"]
    assert container["args"][-6:-4] == ["seqserve.cli", "train"]
    assert any(m["mountPath"] == "/models" for m in container["volumeMounts"])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_each_rank_reads_only_its_series(tmp_path, monkeypatch, suffix) -> None:
    """Sharded reading: disjoint whole series per rank, together the whole table, rows in file
    order; small batches so the streaming path filters several of them."""
    rng = np.random.default_rng(0)
    keys = [f"s{i:02d}" for i in range(7)]
    frame = pd.DataFrame({"id": np.repeat(keys, 30), "t": np.tile(np.arange(30), 7), "y": rng.normal(size=210)}).sample(
        frac=1.0, random_state=1, ignore_index=True
    )
    path = tmp_path / f"long{suffix}"
    frame.to_parquet(path) if suffix == ".parquet" else frame.to_csv(path, index=False)
    monkeypatch.setattr(distributed, "SHARD_BATCH_ROWS", 25)
    shards = []
    for rank in range(3):
        monkeypatch.setattr(distributed, "_CONTEXT", distributed.Context(rank=rank, world_size=3, backend="gloo"))
        shards.append(distributed.load_shard(path, "id", 0))
    assert [sorted(set(s["id"])) for s in shards] == [keys[0::3], keys[1::3], keys[2::3]]
    for shard in shards:
        expected = frame[frame["id"].isin(set(shard["id"]))].reset_index(drop=True)
        pd.testing.assert_frame_equal(shard, expected, check_dtype=False)
    monkeypatch.setattr(distributed, "_CONTEXT", distributed.Context(rank=0, world_size=8, backend="gloo"))
    with pytest.raises(TrainingError, match="7 series cannot be shared by 8 processes"):
        distributed.load_shard(path, "id", 0)
    with pytest.raises(TrainingError, match="unknown series-id column"):
        distributed.load_shard(path, "nope", 0)
    monkeypatch.setattr(distributed, "_CONTEXT", distributed.Context(rank=0, world_size=2, backend="gloo"))
    with pytest.raises(TrainingError, match="more than 100 rows"):
        distributed.load_shard(path, "id", 100)
