from __future__ import annotations

import pytest

from bench.step_profile import bucket_of, shares


@pytest.mark.parametrize(
    ("frame", "bucket"),
    [
        ("_CoalescingTransport.write (service/api/http_coalescing.py:40)", "socket write (one send per reply)"),
        ("HttpToolsProtocol.data_received (uvicorn/protocols/http/h.py:9)", "HTTP parsing, uvicorn protocol"),
        ("Engine._run_group (service/core/engine.py:553)", "engine, locks, replay records"),
        ("Session.run (onnxruntime/capi/onnxruntime_inference_collection.py:3)", "ONNX Runtime"),
        ("MemorySessionStore.load (service/sessions/memory.py:1)", "session store"),
        ("something (elsewhere.py:1)", "other"),
    ],
)
def test_each_frame_lands_in_its_layer(frame: str, bucket: str) -> None:
    assert bucket_of(frame) == bucket


def test_shares_count_the_innermost_frame_of_each_collapsed_stack() -> None:
    collapsed = "\n".join(
        [
            "main (a.py:1);Engine.step (service/core/engine.py:2);Session.run (onnxruntime/x.py:3) 30",
            "main (a.py:1);Engine.step (service/core/engine.py:2) 10",
            "main (a.py:1);_CoalescingTransport.write (service/api/http_coalescing.py:40) 60",
            "",
            "a line that is not a sample",
        ]
    )
    table = shares(collapsed)
    assert table == {
        "socket write (one send per reply)": 0.6,
        "ONNX Runtime": 0.3,
        "engine, locks, replay records": 0.1,
    }
    assert list(table) == sorted(table, key=table.__getitem__, reverse=True)
    assert shares("") == {}
