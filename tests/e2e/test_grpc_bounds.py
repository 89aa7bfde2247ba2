"""The gRPC server under hostile clients, against a real server process: a ModelStreamInfer
client that never reads its replies holds a bounded amount of server memory (the server stops
reading its requests instead), idle streams are closed, one peer cannot hold every stream,
health and unary calls keep a reserve beyond the stream limit, malformed protobufs are
INVALID_ARGUMENT, and error messages quote client strings only in bounded slices (so they
always reach the client)."""

from __future__ import annotations

import queue
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.support.models import export_wide
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.e2e

MB = 1024 * 1024
TOTAL = 100_000  # requests of ~420 bytes (42 MB) whose replies would be ~19 KB each (1.9 GB)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise KeyError("VmRSS")


def _request(name: str = "gru", steps: int = 1, rid: str = "", features: int = 3) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=name, id=rid)
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, steps, features])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0][:features] * steps)
    return request


@pytest.fixture(scope="module")
def wide_repository(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared repository plus `wide`: one feature in, 48 outputs per step (a horizon-48
    forecaster's shape), so a small request asks for a reply 48 times its size."""
    root = tmp_path_factory.mktemp("wide") / "repo"
    shutil.copytree(repository, root)
    export_wide(root)
    return root


@pytest.fixture(scope="module")
def bounded(wide_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    env = {
        "SEQSERVE_GRPC_STREAM_MAX_PENDING": "64",
        "SEQSERVE_GRPC_STREAM_IDLE_TIMEOUT_SECONDS": "2",
        "SEQSERVE_GRPC_MAX_STREAMS_PER_PEER": "3",
    }
    with ServiceProcess(wide_repository, tmp_path_factory.mktemp("grpc-bounds"), env) as server:
        yield server


def test_a_stream_that_never_reads_holds_bounded_server_memory(bounded: ServiceProcess) -> None:
    """Up to 100,000 small requests (~420 bytes) asking for 19 KB replies each, on one stream
    whose replies are never read: the server stops reading at SEQSERVE_GRPC_STREAM_MAX_PENDING
    pending replies, so its memory stays within tens of MB (without the bound every reply was
    queued: the issue measured +1.3 GB for 30 MB sent)."""
    assert bounded.proc is not None
    pid = bounded.proc.pid
    # 100 readings in (~420 bytes), 4,800 outputs back (~19 KB): sent as bytes, so the client
    # is not the bottleneck
    message = _request("wide", steps=100, features=1).SerializeToString()
    sent = [0]

    def requests() -> Iterator[bytes]:
        for _ in range(TOTAL):
            sent[0] += 1
            yield message

    with grpc.insecure_channel(f"127.0.0.1:{bounded.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(service_pb2.ServerLiveRequest()).live
        baseline = _rss_kb(pid)
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        replies = stream(requests())  # never iterated: no reply is read
        worst = 0
        for _ in range(24):  # 12 s of sending: without the bound, ~400 MB of replies were queued by then
            time.sleep(0.5)
            worst = max(worst, _rss_kb(pid) - baseline)
        # Other calls are answered meanwhile.
        assert stub.ModelInfer(_request()).outputs[0].name == "output"
        replies.cancel()
    assert worst < 80 * 1024, f"server RSS grew by {worst / 1024:.0f} MB with {sent[0]} requests sent"


def test_idle_streams_are_closed(bounded: ServiceProcess) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{bounded.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        held: queue.Queue = queue.Queue()
        stream = stub.ModelStreamInfer(iter(held.get, None))
        held.put(_request(rid="first"))
        assert next(stream).infer_response.id == "first"
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            next(stream)  # nothing more is sent: the server ends the stream
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "grpc_stream_idle_timeout_seconds" in info.value.details()
        assert 1.5 < time.monotonic() - start < 10
        held.put(None)


def test_one_peer_cannot_hold_every_stream_and_health_keeps_a_reserve(bounded: ServiceProcess) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{bounded.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        held = [queue.Queue() for _ in range(4)]
        streams = []
        for q in held[:3]:  # one after the other: each is open before the next starts
            streams.append(stub.ModelStreamInfer(iter(q.get, None)))
            q.put(_request())
            assert not next(streams[-1]).error_message
        streams.append(stub.ModelStreamInfer(iter(held[3].get, None)))
        held[3].put(_request())
        with pytest.raises(grpc.RpcError) as info:
            next(streams[3])
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "grpc_max_streams_per_peer" in info.value.details()
        assert stub.ServerLive(service_pb2.ServerLiveRequest()).live  # health and unary calls still answer
        assert stub.ModelInfer(_request()).outputs[0].name == "output"
        for q in held:
            q.put(None)
        for stream in streams[:3]:
            assert list(stream) == []


def test_streams_are_capped_but_health_and_unary_calls_have_a_reserve(repository: Path, tmp_path: Path) -> None:
    """SEQSERVE_MAX_CONNECTIONS bounds the streams held open; calls beyond it are refused
    RESOURCE_EXHAUSTED, while health checks and unary calls still answer."""
    env = {"SEQSERVE_MAX_CONNECTIONS": "2", "SEQSERVE_GRPC_MAX_STREAMS_PER_PEER": "0"}
    limited = ServiceProcess(repository, tmp_path, env)
    with limited, grpc.insecure_channel(f"127.0.0.1:{limited.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        held = [queue.Queue() for _ in range(3)]
        streams = []
        for q in held[:2]:
            streams.append(stub.ModelStreamInfer(iter(q.get, None)))
            q.put(_request())
            assert not next(streams[-1]).error_message
        streams.append(stub.ModelStreamInfer(iter(held[2].get, None)))
        held[2].put(_request())
        with pytest.raises(grpc.RpcError) as info:
            next(streams[2])
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.ServerLive(service_pb2.ServerLiveRequest()).live
        assert stub.ServerReady(service_pb2.ServerReadyRequest()).ready
        assert stub.ModelInfer(_request()).outputs[0].name == "output"
        for q in held:
            q.put(None)


def test_malformed_protobufs_are_invalid_argument(bounded: ServiceProcess) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{bounded.grpc_port}") as channel:
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for garbage in (b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x12\x03\xff\xfe\xfd", b"\x0a\xff\xff\xff\xff\x0f"):
            with pytest.raises(grpc.RpcError) as info:
                raw(garbage)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (garbage, info.value)
            assert "ModelInferRequest" in info.value.details() and "Error" not in info.value.details()
        meta = channel.unary_unary("/inference.GRPCInferenceService/ModelMetadata")
        with pytest.raises(grpc.RpcError) as info:
            meta(b"\xff\xff")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        with pytest.raises(grpc.RpcError) as info:
            list(stream(iter([b"\xff\xff\xff\xff"])))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_errors_quote_client_strings_in_bounded_slices(bounded: ServiceProcess) -> None:
    """A very long model name, sequence id or input name in a request: the error still reaches
    the client, with its status, and quotes at most a bounded slice of it."""
    long = "x" * 200_000
    with grpc.insecure_channel(f"127.0.0.1:{bounded.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        cases = [(_request(name=long), grpc.StatusCode.NOT_FOUND)]
        bad_input = _request()
        bad_input.inputs[0].name = long
        cases.append((bad_input, grpc.StatusCode.INVALID_ARGUMENT))
        sequence = _request()
        sequence.parameters["sequence_id"].string_param = long
        cases.append((sequence, grpc.StatusCode.INVALID_ARGUMENT))
        for request, code in cases:
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request)
            assert info.value.code() == code, info.value
            assert len(info.value.details()) <= 1024
            trailers = dict(info.value.trailing_metadata() or ())
            assert len(trailers.get("seqserve-error-bin", b"")) <= 4096
        held: queue.Queue = queue.Queue()
        replies = stub.ModelStreamInfer(iter(held.get, None))
        held.put(_request(name=long, rid="long"))
        reply = next(replies)
        assert reply.error_message and len(reply.error_message) <= 1024 and reply.infer_response.id == "long"
        assert len(reply.infer_response.model_name) <= 1024
        held.put(None)
        assert list(replies) == []
