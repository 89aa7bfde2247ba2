"""The side-by-side benchmark's pieces that CI can check without the peers' virtualenv: the
targets' arithmetic, publishing into docs/benchmarks.md, the baseline snapshot, and the Triton
peer's files (its config parses as Triton's ModelConfig, its model computes what the served
ONNX model computes step by step, the wrk script's Triton mode sends valid V2 sequence bodies).

The full Triton run needs a Python 3.11 venv with nvidia-pytriton (pip, a few hundred MB); it
is a `make bench` step, not a test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from bench import baseline, publish, targets
from bench.loadgen import _run_wrk, wrk_path
from bench.servers import ROOT, export_bench_model
from bench.triton import PEERS_DIR, START_SCRIPT, TRITON_MODEL, first_step_output, venv_commands

MODEL_DIR = PEERS_DIR / "triton_repo" / TRITON_MODEL


def _row(server: str, mode: str, streams: int, rate: float, round_no: int = 1, p99: float = 1.0) -> dict:
    return {"server": server, "mode": mode, "streams": streams, "steps_per_s": rate, "p99_ms": p99, "round": round_no}


def _by_text(result: list[dict]) -> dict[str, dict]:
    return {t["text"]: t for t in result}


def test_targets_from_one_run() -> None:
    rounds = [
        _row("service-batching", "steps", 8, 1000, 1),
        _row("baseline", "steps", 8, 1100, 1),
        _row("service-batching", "steps", 8, 1200, 2),
        _row("baseline", "steps", 8, 1150, 2),
        _row("triton", "triton", 8, 500, 1),
        _row("service-batching", "ws-pipelined", 8, 4000, 1),
        _row("service-batching", "bulk", 256, 120_000, 1),
        _row("service-batching", "steps", 64, 2000, 1, p99=60.0),
        _row("baseline", "steps", 64, 2500, 1),
    ]
    best = {}
    for r in rounds:
        key = (r["server"], r["mode"], r["streams"])
        if key not in best or r["steps_per_s"] > best[key]["steps_per_s"]:
            best[key] = r
    redis_rows = [
        {
            "mode": "steps",
            "redis": {"round_trips_per_step": 1.01, "ops_per_step": 5.0, "bytes_per_step": 2400, "cpu_us_per_step": 51},
        }
    ]
    result = _by_text(targets.evaluate(list(best.values()), rounds, redis_rows))
    eight = result["No regression: 8 HTTP streams within 5% of the baseline commit"]
    assert eight["status"] == "MET" and eight["value"] == pytest.approx(1200 / 1150)
    assert eight["per_round"] == [pytest.approx(1000 / 1100, abs=1e-3), pytest.approx(1200 / 1150, abs=1e-3)]
    assert result["No regression: 64 HTTP streams within 5% of the baseline commit"]["status"] == "MISSED"
    triton = next(t for t in result.values() if "Triton" in t["text"])
    assert triton["status"] == "MET" and triton["value"] == pytest.approx(2.4)
    assert next(t for t in result.values() if t["text"].startswith("Bulk"))["status"] == "MET"
    ws = next(t for t in result.values() if t["text"].startswith("WebSocket"))
    assert ws["status"] == "MISSED" and ws["value"] == pytest.approx(4000 / 1200)
    assert next(t for t in result.values() if t["text"].startswith("gRPC"))["status"] == "NOT MEASURED"
    assert result["64 HTTP streams: p99 <= 50 ms"]["status"] == "MISSED"
    assert result["8 HTTP streams: p99 <= 5 ms"]["status"] == "MET"
    assert result["Redis round trips per step (8 HTTP streams): <= 1.1"]["status"] == "MET"
    assert result["Redis commands per step (8 HTTP streams): <= 5"]["status"] == "MET"
    assert result["Redis network bytes per step (8 HTTP streams): <= 2,000"]["status"] == "MISSED"
    assert result["Redis CPU per step (8 HTTP streams): <= 50 µs"]["status"] == "MISSED"
    forecaster = next(t for t in result.values() if t["text"].startswith("The forecaster"))
    assert forecaster["status"] == "NOT MEASURED"
    lines = targets.render(targets.evaluate(list(best.values()), rounds))
    assert any("**NOT MEASURED**" in line and "gRPC" in line for line in lines)


def test_publish_replaces_only_the_generated_section(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nintro\n\n{publish.BEGIN}\nold figures\n{publish.END}\n\n## Method\nkept\n")
    results = tmp_path / "latest.md"
    results.write_text(
        f"# seqserve benchmark\n\nrun at {ROOT}/x and /tmp/seqserve-bench-abc/logs\n\n## Targets\n\n| a |\n"
    )
    publish.publish(results, doc)
    text = doc.read_text()
    assert "old figures" not in text and "intro" in text and "## Method\nkept" in text
    assert "### Targets" in text and "# seqserve benchmark" not in text
    assert str(ROOT) not in text and "/tmp/" not in text
    with pytest.raises(publish.PublishError):
        publish.render("no markers", results.read_text())
    with pytest.raises(publish.PublishError):
        publish.render(doc.read_text(), "not a results file")


def test_docs_benchmarks_has_the_generated_section() -> None:
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    assert text.count(publish.BEGIN) == 1 and text.count(publish.END) == 1


def test_baseline_snapshot_is_runnable_code(tmp_path: Path) -> None:
    snap = baseline.snapshot("HEAD", tmp_path)
    assert len(snap.commit) == 40 and snap.short == snap.commit[:7]
    assert (snap.root / "service").is_dir() and (snap.root / "bench" / "run.py").is_file()
    assert baseline.snapshot("HEAD", tmp_path).root == snap.root  # reused, not exported again
    probe = "import service, sys; print(service.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=snap.root,
        env={**os.environ, "PYTHONPATH": str(snap.root)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().startswith(str(snap.root))
    with pytest.raises(baseline.BaselineError):
        baseline.snapshot("no-such-commit-xyz", tmp_path)


def test_the_default_baseline_loads_the_models_exported_today(tmp_path: Path) -> None:
    """The no-regression peer reads the bench model's config as today's code writes it (a
    baseline that refuses today's manifests measures nothing)."""
    from models.config import ModelConfig

    snap = baseline.snapshot(baseline.DEFAULT_BASELINE, tmp_path)
    config = ModelConfig(cell="lstm", input_size=4, hidden_size=64, num_layers=2, output_size=1)
    probe = "import sys; from models.config import ModelConfig; print(ModelConfig.from_json(sys.stdin.read()).cell)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=snap.root,
        env={**os.environ, "PYTHONPATH": str(snap.root)},
        input=config.to_json(),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and out.stdout.strip() == "lstm", out.stderr[-2000:]


def test_triton_peer_files_parse() -> None:
    from google.protobuf import text_format

    from service.grpc import model_config_pb2

    config = text_format.Parse((MODEL_DIR / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.name == TRITON_MODEL and config.backend == "python"
    assert config.sequence_batching.HasField("direct") and config.max_batch_size >= 8
    assert [(i.name, list(i.dims)) for i in config.input] == [("X", [4])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("Y", [1])]
    kinds = {c.name: c.control[0].kind for c in config.sequence_batching.control_input}
    assert set(kinds) == {"START", "END", "CORRID"}
    subprocess.run(["bash", "-n", str(START_SCRIPT)], check=True)
    assert os.access(START_SCRIPT, os.X_OK)
    assert venv_commands(Path("v"), "python3.11")[1][-4:] == ["nvidia-pytriton", "onnxruntime", "onnx", "numpy<2"]
    assert (PEERS_DIR / "README.md").is_file()


class _Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


def _fake_pb_utils() -> types.ModuleType:
    """Just enough of triton_python_backend_utils for the model's execute()."""
    mod = types.ModuleType("triton_python_backend_utils")
    mod.get_input_tensor_by_name = lambda request, name: _Tensor(name, request[name])  # type: ignore[attr-defined]
    mod.Tensor = _Tensor  # type: ignore[attr-defined]
    mod.InferenceResponse = lambda tensors: {t.name: t.array for t in tensors}  # type: ignore[attr-defined]
    return mod


def test_triton_model_steps_equal_the_onnx_model_over_the_sequence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three sequences stepped in interleaved batches (one restarted) through the Triton model's
    execute() give what one ONNX Runtime call over each whole sequence gives."""
    import onnxruntime as ort

    model_path = export_bench_model(tmp_path / "repo")
    site = tmp_path / "peers-site"  # the model puts the peers venv first on sys.path; here an empty dir
    site.mkdir()
    monkeypatch.setenv("PEERS_SITE", str(site))
    monkeypatch.setenv("LSTM_ONNX", str(model_path))
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    monkeypatch.setattr(sys, "path", list(sys.path))  # the model edits sys.path: on a copy
    spec = importlib.util.spec_from_file_location("triton_peer_model", MODEL_DIR / "1" / "model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize({})

    rng = np.random.default_rng(3)
    xs = {cid: rng.standard_normal((5, 4)).astype(np.float32) for cid in (11, 12, 13)}
    got: dict[int, list[float]] = {cid: [] for cid in xs}

    def request(cid: int, t: int, start: bool) -> dict:
        return {
            "X": xs[cid][t][None],
            "START": np.array([[1.0 if start else 0.0]], np.float32),
            "END": np.array([[0.0]], np.float32),
            "CORRID": np.array([[cid]], np.uint64),
        }

    model.execute([request(13, 0, True)])  # a false start: restarted below
    for t in range(5):
        cids = [11, 12, 13] if t % 2 else [13, 11, 12]
        replies = model.execute([request(cid, t, t == 0) for cid in cids])
        for cid, reply in zip(cids, replies, strict=True):
            assert reply["Y"].shape == (1, 1)  # [request batch 1, dims [1]]
            got[cid].append(float(reply["Y"][0, 0]))
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    for cid, x in xs.items():
        zeros = {n: np.zeros((2, 1, 64), np.float32) for n in names[1:]}
        want = sess.run(None, {names[0]: x[None], **zeros})[0][0, :, 0]
        np.testing.assert_allclose(got[cid], want, rtol=1e-4, atol=1e-5)
        # what the bench checks Triton's first answer against
        assert first_step_output(model_path, list(x[0])) == pytest.approx(got[cid][0], rel=1e-4, abs=1e-6)


class _StubTriton(BaseHTTPRequestHandler):
    seen: list[dict] = []  # noqa: RUF012  # shared by the handler threads of one test

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"path": self.path, **body})
        reply = json.dumps({"outputs": [{"name": "Y", "datatype": "FP32", "shape": [1, 1], "data": [0.5]}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.e2e  # runs wrk, a system binary (not in the fast tier)
def test_wrk_triton_mode_sends_v2_sequence_steps() -> None:
    if wrk_path() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("wrk is required under CI=true")
        pytest.skip("wrk not installed")
    _StubTriton.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubTriton)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        raw = _run_wrk(f"http://127.0.0.1:{server.server_address[1]}", "triton", 2, 1, model=TRITON_MODEL)
    finally:
        server.shutdown()
    assert raw["ok"] >= 4 and raw["non2xx"] == 0
    by_sequence: dict[int, list[dict]] = {}
    for body in _StubTriton.seen:
        assert body["path"] == f"/v2/models/{TRITON_MODEL}/infer"
        assert body["inputs"] == [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": body["inputs"][0]["data"]}]
        assert len(body["inputs"][0]["data"]) == 4
        by_sequence.setdefault(body["parameters"]["sequence_id"], []).append(body)
    assert set(by_sequence) == {1000, 1001}  # integers, one per wrk thread
    for bodies in by_sequence.values():
        # wrk builds one probe request per thread before the run; the first answered one starts the sequence
        starts = [b["parameters"].get("sequence_start", False) for b in bodies]
        assert starts[0] is True and not any(starts[2:])


def test_redis_cost_table() -> None:
    from bench import redis_cost

    rows = [
        {
            "transport": "HTTP step, 8 streams",
            "mode": "steps",
            "cache_mb": 64.0,
            "measured_steps_per_s": 500.0,
            "redis": {
                "round_trips_per_step": 1.01,
                "ops_per_step": 5.06,
                "bytes_per_step": 1483,
                "cpu_us_per_step": 107,
            },
        },
        {"transport": "bulk", "mode": "bulk", "failed": "ConnectionError: refused"},
    ]
    lines = redis_cost.render(rows)
    assert lines[2] == "| HTTP step, 8 streams | 64 MiB | 1.01 | 5.06 | 1,483 | 107 | 500 |"
    assert "failed: ConnectionError" in lines[3]
