"""`seqserve verify`: every file in a repository checked against the NumPy equations."""

from __future__ import annotations

import onnx

from seqserve.cli import main
from tests.support.models import export_model, make_repository


def test_verify_passes_on_honest_exports(tmp_path, capsys):
    repo = make_repository(tmp_path)
    assert main(["verify", "--model-repository", str(repo)]) == 0
    out = capsys.readouterr().out
    assert out.count("ok  ") == 3 and "FAIL" not in out


def test_verify_catches_a_tampered_graph(tmp_path, capsys):
    path = export_model(tmp_path, "m", 1, "gru")
    proto = onnx.load(str(path))
    # The graph's normalisation no longer matches the metadata that describes it (as with a
    # file edited or re-exported by hand): the reference, reading the metadata, must disagree.
    for init in proto.graph.initializer:
        if init.name.endswith("in_mean"):
            init.raw_data = bytes(len(init.raw_data))
    onnx.save(proto, str(path))
    assert main(["verify", "--model-repository", str(tmp_path)]) == 1
    assert "FAIL m v1" in capsys.readouterr().out
