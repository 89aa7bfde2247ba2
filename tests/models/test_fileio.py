"""Repository reads never hang: FIFOs refused at once, slow calls given up after a timeout,
version directories in ASCII digits only."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from models.fileio import RepositoryReadError, call_with_timeout, read_file
from models.repository import RepositoryEntry, is_version_name, scan_repository


def test_a_call_that_blocks_is_given_up_after_the_timeout(tmp_path: Path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(RepositoryReadError, match=r"no answer within 0\.3 s"):
        call_with_timeout(lambda: fifo.read_bytes(), 0.3, "fifo")  # open() blocks: no writer
    assert time.monotonic() - start < 2
    stuck = [t for t in threading.enumerate() if t.name == "read fifo"]
    assert stuck and all(t.daemon for t in stuck)  # does not keep the process alive
    with open(fifo, "wb"):  # release the stuck reader
        pass


def test_results_and_errors_come_back():
    assert call_with_timeout(lambda: 42, 1, "x") == 42
    with pytest.raises(ZeroDivisionError):
        call_with_timeout(lambda: 1 / 0, 1, "x")


def test_fifo_and_oversized_files_are_refused_at_once(tmp_path: Path):
    fifo = tmp_path / "manifest.json"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(RepositoryReadError, match="not a regular file"):
        read_file(fifo, 1024, timeout=5)
    assert time.monotonic() - start < 1
    big = tmp_path / "big"
    big.write_bytes(b"x" * 2048)
    with pytest.raises(RepositoryReadError, match="2048 bytes; at most 1024"):
        read_file(big, 1024, timeout=5)
    assert read_file(big, 4096, timeout=5) == b"x" * 2048


def test_manifest_fifo_gives_empty_manifest_and_a_log_line(tmp_path: Path, caplog):
    os.mkfifo(tmp_path / "manifest.json")
    with caplog.at_level(logging.WARNING, "seqserve.repository"):
        assert RepositoryEntry("m", 1, tmp_path).manifest(timeout=5) == {}
    assert "ignoring manifest.json: manifest.json is not a regular file" in caplog.text
    (tmp_path / "manifest.json").unlink()
    assert RepositoryEntry("m", 1, tmp_path).manifest(timeout=5) == {}  # none: no log needed
    (tmp_path / "manifest.json").write_text('{"metrics": {"mae": 1}}')
    assert RepositoryEntry("m", 1, tmp_path).manifest(timeout=5) == {"metrics": {"mae": 1}}


def test_scan_takes_ascii_digit_versions_only(tmp_path: Path, caplog):
    for version in ("1", "²", "٣", "12", ".tmp-1", "x"):
        (tmp_path / "m" / version).mkdir(parents=True)
        (tmp_path / "m" / version / "model.onnx").write_bytes(b"x")
    (tmp_path / "m" / "7").mkdir()
    os.mkfifo(tmp_path / "m" / "7" / "model.onnx")
    assert not is_version_name("²") and is_version_name("12")
    with caplog.at_level(logging.WARNING, "seqserve.repository"):
        entries = scan_repository(tmp_path, timeout=5)
        scan_repository(tmp_path, timeout=5)
    assert [(e.name, e.version) for e in entries] == [("m", 1), ("m", 12)]
    assert caplog.text.count("ignoring 'm/²': a version is ASCII digits only") == 1  # once, not per scan
    assert "ignoring 'm/٣'" in caplog.text
    assert "ignoring 'm/7': model.onnx is not a regular file" in caplog.text
