"""`inference.GRPCInferenceService` (KServe V2 over gRPC, Triton's flavour) on the app's own
services: the same registry, step engine, batchers and statistics as the HTTP routes, in
the same event loop, so a sequence can even be stepped over HTTP and gRPC alternately.

Implemented: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer,
ModelStreamInfer, ModelConfig, ModelStatistics, RepositoryIndex. The rest (repository load and
unload, shared memory, trace and log settings) answer UNIMPLEMENTED.

ModelStreamInfer is how Triton users stream sequences: one bidirectional stream carries the
steps of many sequences interleaved. Requests of one sequence are applied in the order they
arrived on the stream; different sequences run concurrently (and meet in the batcher). Replies
are written as they complete, so across sequences they may come back in another order than
the requests (clients match them by `id`, as with Triton). A failed request does not end the
stream: its reply carries `error_message`, as Triton's does.

Documents (readiness, server and model metadata, configuration, statistics, the repository
index) are the ones HTTP answers, built in service/core/; ModelMetadata's `parameters` (default
version, gates, state tensors), for which Triton's message has no field, come as JSON in the
`seqserve-parameters-bin` trailing metadata.

Errors: the domain errors of service/core/errors.py become status codes (`STATUS`), with the
message as details and the JSON error body in the `seqserve-error-bin` trailer, both with
client strings clipped (a status line and trailers must fit gRPC's metadata limit, or the client
gets a transport error instead). A message that does not parse as the method's protobuf is
INVALID_ARGUMENT naming the message type.

Bounds (docs/deployment.md): streams open are at most SEQSERVE_MAX_CONNECTIONS, one client
address holds at most SEQSERVE_GRPC_MAX_STREAMS_PER_PEER of them, and unary calls in flight
are at most SEQSERVE_MAX_CONNECTIONS apart from the streams (RESOURCE_EXHAUSTED beyond, naming
the limit), so streams held open never starve unary calls; ServerLive and ServerReady are
never refused by them. A stream has at most
SEQSERVE_GRPC_STREAM_MAX_PENDING requests being worked on or replies not yet written: beyond,
the server stops reading it (HTTP/2 flow control then slows the client), so a client that never
reads its replies holds bounded memory. A stream with nothing sent and nothing pending for
SEQSERVE_GRPC_STREAM_IDLE_TIMEOUT_SECONDS is ended with DEADLINE_EXCEEDED.

API keys: with SEQSERVE_API_KEYS set, every RPC but ServerLive and ServerReady needs a key in
the `x-api-key` or `authorization: Bearer <key>` metadata (UNAUTHENTICATED otherwise); the
key owns the sequences it starts, exactly as over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import orjson
from google.protobuf import json_format

from service.core import triton
from service.core import v2 as inference
from service.core.errors import (
    BadRequest,
    DeadlineExceeded,
    NotFound,
    PositionConflict,
    ServiceError,
    SessionExists,
    TooManyCalls,
    Unauthorized,
    clipped,
    clipped_body,
    refused,
)
from service.core.v2 import parse_version
from service.grpc import grpc_service_pb2 as pb
from service.grpc import grpc_service_pb2_grpc as pb_grpc
from service.grpc import model_config_pb2 as config_pb
from service.grpc import tensors

if TYPE_CHECKING:
    from service.core.services import Services

log = logging.getLogger("seqserve.grpc")

StatusCode = grpc.StatusCode
STATUS = {
    400: StatusCode.INVALID_ARGUMENT,
    401: StatusCode.UNAUTHENTICATED,
    403: StatusCode.PERMISSION_DENIED,
    404: StatusCode.NOT_FOUND,
    409: StatusCode.ABORTED,
    410: StatusCode.NOT_FOUND,
    413: StatusCode.RESOURCE_EXHAUSTED,
    422: StatusCode.INVALID_ARGUMENT,
    429: StatusCode.RESOURCE_EXHAUSTED,
    503: StatusCode.UNAVAILABLE,
    504: StatusCode.DEADLINE_EXCEEDED,
}
MAX_STREAMS_PER_CONNECTION = 128  # concurrent calls on one HTTP/2 connection
# gRPC's own hard cap on calls in flight is this far above what the service admits itself
# (streams and unary calls, each up to SEQSERVE_MAX_CONNECTIONS), so health checks get through.
HEALTH_RESERVE = 64
IDLE_CONNECTION_MS = 300_000  # a connection without calls is closed (clients reconnect on their own)

Reply = TypeVar("Reply")
PARAMETERS_TRAILER = "seqserve-parameters-bin"  # ModelMetadata's `parameters`, JSON
PUBLIC_METHODS = frozenset({"ServerLive", "ServerReady"})  # health probes: no key


class Malformed:
    """What a request that does not parse as its protobuf becomes (the handler answers
    INVALID_ARGUMENT) instead of grpc's UNKNOWN naming a Python exception."""

    def __init__(self, message_type: str) -> None:
        self.message_type = message_type

    def error(self) -> BadRequest:
        return BadRequest(f"the request is not a valid {self.message_type} protobuf message", field="request")


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None
    owner = getattr(deserialize, "__self__", None)
    name = getattr(owner, "DESCRIPTOR", None)
    message_type = name.name if name is not None else "request"

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:  # DecodeError, or invalid UTF-8 in a string field
            return Malformed(message_type)

    return parse


class _Capture:
    """Stands in for the server while the generated code registers its handlers, so they can
    be registered with tolerant deserializers instead."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.service, self.handlers = service, handlers


def register(servicer: InferenceService, server: grpc.aio.Server) -> None:
    capture = _Capture()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, capture)
    handlers = {
        name: handler._replace(request_deserializer=_tolerant(handler.request_deserializer))  # type: ignore[attr-defined]
        for name, handler in capture.handlers.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(capture.service, handlers),))
    server.add_registered_method_handlers(capture.service, handlers)


def peer_host(peer: str) -> str:
    """The client's address without its port ("ipv4:10.0.0.7:52114" -> "ipv4:10.0.0.7")."""
    if peer.startswith("ipv6:["):
        return peer[: peer.find("]") + 1] or peer
    head, _, port = peer.rpartition(":")
    return head if head and port.isdigit() else peer


def status_of(exc: ServiceError) -> grpc.StatusCode:
    if isinstance(exc, PositionConflict):
        return StatusCode.ABORTED
    if isinstance(exc, SessionExists):
        return StatusCode.ALREADY_EXISTS
    return STATUS.get(exc.status, StatusCode.INTERNAL)


def _rpc(handler: Callable[..., Awaitable[Reply]]) -> Callable[..., Awaitable[Reply]]:
    """Domain errors -> gRPC status with a clear message; anything else -> INTERNAL, logged."""

    method = handler.__name__
    public = method in PUBLIC_METHODS

    @wraps(handler)
    async def call(self: InferenceService, request: Any, context: grpc.aio.ServicerContext) -> Reply:
        start = time.perf_counter()
        code = StatusCode.OK
        counted = False
        try:
            if isinstance(request, Malformed):
                raise request.error()
            if not public:
                self.admit()
                counted = True
                self.owner(context)  # refuses without a valid key
            return await handler(self, request, context)
        except ServiceError as exc:
            code = status_of(exc)
            await abort(context, code, exc)
        except asyncio.CancelledError:
            code = StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            raise
        except Exception:
            code = StatusCode.INTERNAL
            log.exception("unhandled error in %s", method)
            await context.abort(code, "internal error; see the server log")
        finally:
            if counted:
                self.calls -= 1
            self.observe(method, code, start)
        raise AssertionError("unreachable")  # abort raises

    return call


async def abort(context: Any, code: grpc.StatusCode, exc: ServiceError) -> None:
    """End the call with `exc`: its message as the status details, its body in the trailer,
    client strings clipped so that both always fit gRPC's metadata limit."""
    context.set_trailing_metadata((("seqserve-error-bin", orjson.dumps(clipped_body(exc.body()))),))
    await context.abort(code, clipped(exc.message))


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, svc: Services, version: str) -> None:
        self.svc = svc
        self.version = version
        metrics = svc.metrics
        self._latency = {m: metrics.grpc_latency.labels(m) for m in ("ModelInfer", "ModelStreamInfer")}
        self._requests = metrics.grpc_requests
        settings = svc.settings
        self.max_calls = settings.max_connections
        per_peer = settings.grpc_max_streams_per_peer
        self.max_streams_per_peer = max(1, settings.max_connections // 4) if per_peer is None else per_peer
        self.calls = 0  # unary calls in flight, health checks not counted
        self.open_streams = 0
        self.streams: dict[str, int] = {}  # open ModelStreamInfer streams per client address
        self.closing = asyncio.Event()  # set at shutdown: streams end once nothing is pending

    def admit(self) -> None:
        """Count one more unary call in flight, or refuse it (health checks are never counted)."""
        if self.calls >= self.max_calls:
            raise TooManyCalls(
                f"too many calls in flight (at most {self.max_calls}); retry later",
                limit="max_connections",
                max=self.max_calls,
            )
        self.calls += 1

    def open_stream(self, peer: str) -> None:
        held = self.streams.get(peer, 0)
        if self.max_streams_per_peer and held >= self.max_streams_per_peer:
            raise TooManyCalls(
                f"this client already holds {held} streams (at most {self.max_streams_per_peer}, "
                "grpc_max_streams_per_peer); end some first",
                limit="grpc_max_streams_per_peer",
                max=self.max_streams_per_peer,
            )
        if self.open_streams >= self.max_calls:
            raise TooManyCalls(
                f"too many streams open (at most {self.max_calls}); retry later",
                limit="max_connections",
                max=self.max_calls,
            )
        self.open_streams += 1
        self.streams[peer] = held + 1

    def close_stream(self, peer: str) -> None:
        self.open_streams -= 1
        held = self.streams.get(peer, 1) - 1
        if held:
            self.streams[peer] = held
        else:
            self.streams.pop(peer, None)

    def owner(self, context: Any) -> str:
        """The owner id of the call's API key ("" without keys); Unauthorized otherwise."""
        keys = self.svc.keys
        if not keys:
            return ""
        metadata = context.invocation_metadata() or ()
        headers = [(k.encode(), v if isinstance(v, bytes) else v.encode()) for k, v in metadata]
        return keys.owner(headers)

    def observe(self, method: str, code: grpc.StatusCode, start: float) -> None:
        """Prometheus: count and time one request (one stream message for ModelStreamInfer)."""
        self._requests.labels(method, code.name).inc()
        latency = self._latency.get(method)
        if latency is not None:
            latency.observe(time.perf_counter() - start)

    # ------------------------------------------------------------------------ health and metadata

    @_rpc
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @_rpc
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        # The same answer as /v2/health/ready (service/core/v2.py)
        return pb.ServerReadyResponse(ready=await inference.not_ready(self.svc) is None)

    @_rpc
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            inference.model_ready(self.svc.registry, request.name, request.version)
        except NotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @_rpc
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**inference.server_metadata(self.version))

    @_rpc
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        """The document HTTP answers (service/core/v2.py). Triton's message has no field for its
        `parameters` (default version, gates, state tensors): they come as JSON in the
        `seqserve-parameters-bin` trailing metadata."""
        document = inference.model_metadata(self.svc.registry, request.name, request.version or None)
        context.set_trailing_metadata(((PARAMETERS_TRAILER, orjson.dumps(document.pop("parameters"))),))
        return json_format.ParseDict(document, pb.ModelMetadataResponse())

    @_rpc
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        document = triton.model_config(self.svc, request.name, request.version or None)
        return pb.ModelConfigResponse(config=json_format.ParseDict(document, config_pb.ModelConfig()))

    @_rpc
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        stats = triton.statistics(self.svc, request.name or None, request.version or None)
        return json_format.ParseDict({"model_stats": stats}, pb.ModelStatisticsResponse())

    @_rpc
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        listing = triton.repository_index(self.svc, request.ready)
        return json_format.ParseDict({"models": listing}, pb.RepositoryIndexResponse())

    # ------------------------------------------------------------------------ inference

    async def _infer(self, request: pb.ModelInferRequest, owner: str) -> pb.ModelInferResponse:
        svc = self.svc
        if not request.model_name:
            raise inference.Error("model_name is required", field="model_name")
        model = svc.registry.get(request.model_name, parse_version(request.model_version))
        options = inference.parse_options(tensors.parameters(request.parameters))
        settings = svc.settings
        arrays = tensors.decode_inputs(request, model, settings.max_batch_size, settings.max_steps_per_request)
        wanted = tensors.requested_outputs(request, model, options)
        result = await inference.infer(svc, model, arrays, options, wanted, bool(request.model_version), owner)
        return tensors.response(result, request.id)

    @_rpc
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return await self._infer(request, self.owner(context))

    async def ModelStreamInfer(
        self, requests: AsyncIterator[pb.ModelInferRequest | Malformed], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        try:
            owner = self.owner(context)
        except Unauthorized as exc:
            self.observe("ModelStreamInfer", StatusCode.UNAUTHENTICATED, time.perf_counter())
            await abort(context, StatusCode.UNAUTHENTICATED, exc)
        peer = peer_host(context.peer() or "")
        try:
            self.open_stream(peer)
        except TooManyCalls as exc:
            self.observe("ModelStreamInfer", StatusCode.RESOURCE_EXHAUSTED, time.perf_counter())
            await abort(context, StatusCode.RESOURCE_EXHAUSTED, exc)
        try:
            async for reply in self._stream(requests, context, owner):
                yield reply
        finally:
            self.close_stream(peer)

    async def _stream(
        self, requests: AsyncIterator[pb.ModelInferRequest | Malformed], context: Any, owner: str
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        settings = self.svc.settings
        idle_timeout = settings.grpc_stream_idle_timeout_seconds
        # Outcomes for the writer: a reply, None (the client ended its side and all is answered),
        # or the error that ends the stream (a malformed message, the idle timeout).
        replies: asyncio.Queue[pb.ModelStreamInferResponse | ServiceError | None] = asyncio.Queue()
        # Requests being worked on plus replies not yet written: a slot is freed only once its
        # reply is written, so a client that does not read stops the reading of its requests.
        slots = asyncio.Semaphore(settings.grpc_stream_max_pending)
        tails: dict[tuple[str, str], asyncio.Task[None]] = {}  # per sequence: its latest request
        running: set[asyncio.Task[None]] = set()
        last_read = [time.monotonic()]

        async def one(request: pb.ModelInferRequest, before: asyncio.Task[None] | None) -> None:
            start = time.perf_counter()
            code = StatusCode.OK
            try:
                if before is not None and not before.done():
                    await asyncio.wait((before,))  # the sequence's previous request, whatever its outcome
                try:
                    reply = pb.ModelStreamInferResponse(infer_response=await self._infer(request, owner))
                except ServiceError as exc:
                    code = status_of(exc)
                    reply = _stream_error(request, exc.message)
                except asyncio.CancelledError:
                    code = StatusCode.CANCELLED
                    raise
                except Exception:
                    code = StatusCode.INTERNAL
                    log.exception("unhandled error in ModelStreamInfer")
                    reply = _stream_error(request, "internal error; see the server log")
                replies.put_nowait(reply)  # its slot is freed once the reply is written
            except BaseException:
                slots.release()
                raise
            finally:
                self.observe("ModelStreamInfer", code, start)

        async def read() -> None:
            try:
                async for request in requests:
                    last_read[0] = time.monotonic()
                    if isinstance(request, Malformed):
                        replies.put_nowait(request.error())
                        return
                    await slots.acquire()
                    key = _sequence_key(request)
                    task = asyncio.create_task(one(request, tails.get(key) if key else None))
                    running.add(task)
                    task.add_done_callback(running.discard)
                    if key:
                        tails[key] = task
                        task.add_done_callback(functools.partial(_forget_tail, tails, key))
                if running:
                    await asyncio.wait(set(running))
            finally:
                replies.put_nowait(None)

        async def watch() -> None:
            """End the stream when nothing was sent and nothing is pending for the idle timeout."""
            while True:
                quiet = time.monotonic() - last_read[0]
                if quiet >= idle_timeout and not running and replies.empty():
                    refused("grpc_stream_idle_timeout_seconds")
                    replies.put_nowait(
                        DeadlineExceeded(
                            f"stream idle for {idle_timeout:g} s (grpc_stream_idle_timeout_seconds); reconnect to go on"
                        )
                    )
                    return
                if self.closing.is_set():  # shutting down: end the stream once nothing is pending
                    if not running and replies.empty():
                        replies.put_nowait(None)
                        return
                    await asyncio.sleep(0.05)
                    continue
                # until the timeout could first pass; re-checked every quarter while work is pending
                wait = max(0.05, idle_timeout - quiet if quiet < idle_timeout else idle_timeout / 4)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.closing.wait(), wait)

        reader = asyncio.create_task(read())
        watcher = asyncio.create_task(watch())
        try:
            while (reply := await replies.get()) is not None:
                if isinstance(reply, ServiceError):
                    await abort(context, status_of(reply), reply)
                    return
                yield reply
                slots.release()
        finally:
            reader.cancel()
            watcher.cancel()


def _forget_tail(
    tails: dict[tuple[str, str], asyncio.Task[None]], key: tuple[str, str], task: asyncio.Task[None]
) -> None:
    """A sequence's finished request stops being its tail unless a later one took its place."""
    if tails.get(key) is task:
        tails.pop(key)


def _sequence_key(request: pb.ModelInferRequest) -> tuple[str, str] | None:
    """(model, sequence id) of a sequence request, for ordering; None for stateless ones."""
    param = request.parameters.get("sequence_id")
    if param is None:
        return None
    choice = param.WhichOneof("parameter_choice")
    value = getattr(param, choice) if choice else None
    if value in (None, 0, ""):
        return None
    return request.model_name, str(value)


def _stream_error(request: pb.ModelInferRequest, message: str) -> pb.ModelStreamInferResponse:
    return pb.ModelStreamInferResponse(
        error_message=clipped(message),
        infer_response=pb.ModelInferResponse(
            model_name=clipped(request.model_name), model_version=clipped(request.model_version, 32), id=request.id
        ),
    )


async def stop(server: grpc.aio.Server, grace: float) -> None:
    """Graceful stop: streams end as soon as nothing of theirs is pending (an idle stream
    would otherwise hold the whole grace period), calls in flight finish within `grace`."""
    servicer = getattr(server, "seqserve_servicer", None)
    if servicer is not None:
        servicer.closing.set()
    await server.stop(grace)


async def start(svc: Services, version: str) -> grpc.aio.Server:
    """Serve the V2 gRPC protocol on SEQSERVE_GRPC_PORT in the running event loop."""
    settings = svc.settings
    server = grpc.aio.server(
        # A hard cap above SEQSERVE_MAX_CONNECTIONS, which InferenceService enforces itself on
        # every call but the health checks (a stream counts as one for its whole life).
        maximum_concurrent_rpcs=2 * settings.max_connections + HEALTH_RESERVE,
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
            ("grpc.max_connection_idle_ms", IDLE_CONNECTION_MS),
            # several worker processes share the port (the kernel spreads connections);
            # a single process must own it, so a clash fails loudly instead
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ],
    )
    servicer = InferenceService(svc, version)
    register(servicer, server)
    server.seqserve_servicer = servicer  # type: ignore[attr-defined]  # for stop()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    address = f"{host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot listen for gRPC on {address}: {exc} (SEQSERVE_GRPC_PORT=0 disables gRPC)") from exc
    await server.start()
    log.info("gRPC (KServe V2) listening on %s", address)
    return server
