"""The shared session store: Redis, so that any replica can serve any step of any session.

Key layout, per session id ID (PREFIX defaults to `seqserve:`; set `?prefix=...` on the URL):

    PREFIX s:{ID}   hash, expires after the idle TTL (PEXPIRE on every load and save):
        model, version, fingerprint, position, ttl_ms, created_at,
        shape     "rows,width;rows,width;..." per state tensor in graph order (e.g. h, c of
                  [2, 64] and a history ring of [1, 336]: "2,64;2,64;1,336"); hashes written
                  by older versions say "tensors,rows,width" (all tensors one shape), still read
        state     raw little-endian float32 bytes of every state tensor, concatenated
        history   the recent positioned steps, for answering a client's retry (base.encode_history:
                  per step its digest and its outputs or pre-step state, bounded by
                  SEQSERVE_REPLAY_MAX_BYTES)
        tokens    write tokens, each "<32 hex>=<20-digit position>;": the last TOKEN_WINDOW as of the
                  last fold, and
        tokens_new  those written since (fewer than scripts/save.lua's FOLD, 8): a save appends its
                  token here and folds these into `tokens` every FOLD-th write (a short string to
                  extend instead of the whole ring to rewrite: Redis CPU); together they hold the
                  tokens of at least the last TOKEN_WINDOW writes (hashes written by older versions
                  have `tokens` only, still read)
        owner     owner id of the API key that created it ("" without keys)
        start     unix seconds of the reading at position 0 (repr of a float), only when the
                  session was created with a start time; written by the create script only
        marked_until  when the expiry marker below expires (ms, the last writer's clock)
    PREFIX x:{ID}   expiry marker, expires between half and all of `tombstone_seconds` after the
                    hash (a save sets it again only when it would otherwise outlive the hash by
                    less than half: the hash's `marked_until` says when it expires); its value is the
                    owner: when the hash is gone but the marker is not, the session *expired*
                    (410 to its owner), else it never existed or was deleted (404). (The braces
                    are a hash tag: both keys of a session live in the same cluster slot.)
    PREFIX q:m:MODEL, PREFIX q:k:OWNER   quota sets (sorted sets of session ids, scored by the
                    session's known expiry in ms), kept only while the matching limit is set
                    (SEQSERVE_MAX_SESSIONS_PER_MODEL / _PER_KEY).

Quotas are exact across replicas: the create script counts and adds in one atomic step, and
delete removes the id from both sets in the same script. Expiry needs no write on the hot
path: the create script re-checks the members whose recorded expiry has passed (PTTL of their
hash) and drops the ones that are gone, so an expired session frees its slot the moment it
expires. The quota scripts touch keys of other slots (single Redis or a replicated primary);
on Redis Cluster the same sets live in slots of their own and a create is a short protocol
around the shared create script (service.sessions.redis_cluster).

Every operation is one round trip. load, save, create and delete are Lua scripts, one
`.lua` file each in service/sessions/scripts/ (the cluster store runs the same files), sent as
EVALSHA, falling back to EVAL, which also caches the script, when the server does not know it
(e.g. after a restart):
  - load: the fields a step reads (HMGET: not the write tokens) + PEXPIRE of both keys, or a
    code saying "expired" / "not found".
  - save: check-and-set on the position. A save whose token is among the recorded tokens was
    applied already (its reply was lost and it is sent again, by this module or by the Redis
    client) and is reported as done, with the position it wrote. Otherwise it writes only if
    the stored position (and creation time: a restarted sequence is another session) is the
    expected one, and records its token; else it returns the stored position
    (PositionConflict). Re-sending a save is therefore always safe, in any order, even after
    other replicas wrote; a save that was answered "conflict" was not applied and never will be
    (positions only grow), so a position-less step may be recomputed on the new state.
  - create: writes only if the key does not exist (a retry of the same create is recognised
    by its created_at); an existing id is never overwritten. Checks and takes the quota slots.
  - delete: only the owner's session; frees its quota slots.
Bulk steps (load_many, save_many) on a single server send the load and save scripts of a whole
batch as one script call each (BATCH: the same file's code run per session inside one call, the
answers one array), so the client packs one command and parses one reply per batch instead of
one per session; a Redis Cluster pipelines the per-session scripts (grouped per master).

Errors: connection errors, timeouts, a server that is loading its data, read-only or out of
memory become StoreUnavailable (503, code session_store_unavailable; the body says only
"session store unavailable", the log has the details). The client uses short
socket timeouts and no library-level retries; this module retries reads once on a connection
error or timeout, and saves (safe to repeat by their token) up to SAVE_ATTEMPTS times on a
connection error and once on a timeout, so that a lost reply is resolved here instead of becoming an
answer of unknown outcome (503). The connection pool reconnects by itself, so the
service recovers without a restart when Redis comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import operator
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from itertools import chain, repeat
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import hiredis
import numpy as np
import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from service.core.errors import (
    ServiceError,
    SessionExists,
    SessionExpired,
    SessionNotFound,
    StoreUnavailable,
)
from service.sessions.base import (
    NO_QUOTA,
    TOKEN_CHARS,
    TOKEN_WINDOW,
    Columns,
    LastStep,
    Quota,
    SessionRecord,
    SessionStore,
    Superseded,
    decode_history,
    encode_history,
    gone,
    known_starts,
    new_token,
    old_reply_outputs,
    shown,
    stack_states,
    too_many,
)
from service.sessions.cache import RecordCache

log = logging.getLogger("seqserve.sessions.redis")
T = TypeVar("T")
# A script as the store sends it: (client, keys, args) -> reply.
ScriptCall = Callable[[aioredis.Redis, list[str], list[Any]], Awaitable[Any]]

DEFAULT_PREFIX = "seqserve:"
SAVE_ATTEMPTS = 4  # sends of one save in all, after connection errors
POOL_CONNECTIONS = 128  # connections per store (per process); `?max_connections=N` on the URL overrides
POOL_WAIT_SECONDS = 5.0  # how long a request waits for a free connection before a 503
STATE_DTYPE = np.dtype("<f4")
SAVE_ARGS = 10  # the save script's ARGV per session (_save_args)
CACHE_BYTES = 64 * 1024 * 1024  # the replica-local record cache (service.sessions.cache); 0: off
# The Lua scripts, one .lua file each (package data), shared by this store and the cluster store.
SCRIPTS = resources.files("service.sessions").joinpath("scripts")


# A script of a session (its KEYS and ARGV) applied to many sessions in one call: the same
# file's code as a function, called per session with its own keys and arguments; the answers
# are returned as one array, in order. KEYS: each session's keys in turn; ARGV: the number of
# arguments per session, then each session's arguments in turn.
BATCH = """local function one(KEYS, ARGV)
%s
end
local per, count = tonumber(ARGV[1]), tonumber(ARGV[2])
local width = #KEYS / count
local out = {}
for i = 0, count - 1 do
  local keys, argv = {}, {}
  for j = 1, width do keys[j] = KEYS[i * width + j] end
  for j = 1, per do argv[j] = ARGV[2 + i * per + j] end
  out[i + 1] = one(keys, argv)
end
return out
"""
BATCH_SESSIONS = 256  # sessions per batch script call (larger batches: several calls at once)
# What a columnar bulk step reads of each cached record (C loops: one tuple per record compared).
_KIND = operator.attrgetter("model", "version", "fingerprint", "owner")
_STATE = operator.attrgetter("state")
_POSITION = operator.attrgetter("position")
_START = operator.attrgetter("start")
_TTL = operator.attrgetter("ttl_seconds")
_HISTORY = operator.attrgetter("history")
_CREATED = operator.attrgetter("created_at")


class Script:
    """One of the Lua scripts in service/sessions/scripts/ (shared by the single-server and the
    cluster store): EVALSHA, falling back to EVAL (which caches the script) when the server
    lacks it. `batch`: the script applied to many sessions in one call (BATCH)."""

    def __init__(self, name: str, batch: bool = False) -> None:
        self.name = name
        self.source = SCRIPTS.joinpath(f"{name}.lua").read_text(encoding="utf-8")
        if batch:
            self.name = f"{name} (batch)"
            self.source = BATCH % self.source
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(self, client: aioredis.Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except rex.NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)


def split_url(url: str) -> tuple[str, str | None]:
    """Take our own `prefix` query parameter off a redis:// URL (redis-py does not know it)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), None)
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisSessionStore(SessionStore):
    kind = "redis"
    # Whether the delete script frees the session's quota slots itself (the sets are keys it may
    # touch on a single server; a cluster store frees them in their own slots afterwards).
    frees_quota_in_script = True
    # Whether one pipeline goes to several servers (a cluster: one per master), so that one of
    # them failing is no reason to fail the others' items.
    pipelines_span_nodes = False

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        password: str | None = None,
        socket_timeout: float = 1.0,
        connect_timeout: float = 0.5,
        health_check_interval: float = 5.0,
        wait_timeout: float = 1.0,
        tombstone_seconds: float = 24 * 3600.0,
        stats_interval: float = 30.0,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        """The one constructor of both Redis stores (the cluster store overrides only the hooks
        `_split_url`, `_connect` and `_writer`). `wait_timeout`: how long a write waits for
        replicas to confirm it, where the URL asks for that (`wait_replicas`, Redis Cluster).
        `cache_bytes`: this replica's cache of the session records it served (0: off)."""
        self._cache = RecordCache(cache_bytes)
        self._superseded = 0
        self.wait_replicas = 0
        self.wait_timeout_ms = _ms(wait_timeout)
        url, url_prefix = self._split_url(url)
        self.prefix = prefix or url_prefix or DEFAULT_PREFIX
        self.tombstone_ms = _ms(tombstone_seconds)
        self.stats_interval = stats_interval
        # What every connection of this store is opened with (a cluster store opens several).
        self._connection: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout,
            "retry": Retry(NoBackoff(), 0),  # no hidden re-sends: retries are decided below
            "decode_responses": False,
            **({"password": password} if password else {}),
        }
        self._redis = self._connect(url, health_check_interval)
        self._load, self._delete = Script("load"), Script("delete")
        # bulk steps on a single server: one script call per batch of sessions (load_many, save_many)
        self._load_batch, self._save_batch = Script("load", batch=True), Script("save", batch=True)
        save = Script("save")
        self._save_sha = save.sha  # for pipelined saves (save_many)
        self._save, self._create = self._writer(save), self._writer(Script("create"))
        self._active = 0
        # saves asked for in this event-loop turn, sent together (save), and those being sent
        self._pending: list[tuple[SessionRecord, int, asyncio.Future[ServiceError | None]]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._usage: dict[tuple[str, int], int] = {}
        self._unavailable_since: float | None = None
        self._refresher: asyncio.Task[None] | None = None

    # -- connections (overridden by the cluster store)

    def _split_url(self, url: str) -> tuple[str, str | None]:
        """The URL to connect to, and the key prefix it names (if any)."""
        return split_url(url)

    def _writer(self, script: Script) -> ScriptCall:
        """How a write script (save, create) is sent: as it is here; the cluster store follows
        it with WAIT when the URL asks for replicas."""
        return script

    def _connect(self, url: str, health_check_interval: float) -> aioredis.Redis:
        # A blocking pool: a burst wider than the pool (a bulk request over hundreds of sessions,
        # or hundreds of concurrent clients) waits for a free connection instead of failing with
        # "Too many connections"; the wait is bounded, then it is a StoreUnavailable (503).
        # `?max_connections=N` on the store URL overrides the size.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_CONNECTIONS,
            timeout=POOL_WAIT_SECONDS,
            health_check_interval=health_check_interval,
            retry_on_error=[],
            **self._connection,
        )
        return aioredis.Redis.from_pool(pool)  # the client owns the pool and closes it

    # -- keys

    def _hash_key(self, session_id: str) -> str:
        return f"{self.prefix}s:{{{session_id}}}"

    def _marker_key(self, session_id: str) -> str:
        return f"{self.prefix}x:{{{session_id}}}"

    def _keys(self, session_id: str) -> list[str]:
        return [self._hash_key(session_id), self._marker_key(session_id)]

    # -- error mapping

    async def _call(
        self, what: str, fn: Callable[[], Awaitable[T]], attempts: int = 2, timeouts: int = 0, key: str | None = None
    ) -> T:
        """Run one Redis operation; connection problems become StoreUnavailable (503).
        `attempts`: sends in all after connection errors; `timeouts`: how many of the re-sends
        may follow a timeout (only for operations that are safe to repeat). `key`: the key the
        operation is routed by, if one (a cluster store counts operations per node by it)."""
        for attempt in range(attempts):
            try:
                result = await fn()
            except (TimeoutError, rex.TimeoutError) as exc:  # before OSError: a subclass
                if timeouts > 0 and attempt + 1 < attempts:
                    timeouts -= 1
                    continue
                raise self._unavailable(what, exc) from None
            except (rex.ConnectionError, OSError) as exc:  # includes BusyLoadingError
                if attempt + 1 < attempts:
                    continue
                raise self._unavailable(what, exc) from None
            except RuntimeError as exc:
                # uvloop's answer to a write on a connection the server (or the network) had
                # already closed: a connection error by another name (nothing was sent)
                if "handler is closed" not in str(exc):
                    raise
                if attempt + 1 < attempts:
                    continue
                raise self._unavailable(what, exc) from None
            except (rex.ReadOnlyError, rex.OutOfMemoryError) as exc:
                raise self._unavailable(what, exc, "refused the write") from None
            except rex.ResponseError as exc:
                if str(exc).startswith(("MISCONF", "LOADING", "MASTERDOWN")):
                    raise self._unavailable(what, exc, "refused the write") from None
                raise
            if self._unavailable_since is not None:
                log.warning(
                    "session store (redis) reachable again after %.1fs", time.monotonic() - self._unavailable_since
                )
                self._unavailable_since = None
            return result
        raise AssertionError("unreachable")

    def _unavailable(self, what: str, exc: BaseException, how: str = "unreachable") -> StoreUnavailable:
        detail = str(exc) or type(exc).__name__
        if self._unavailable_since is None:
            self._unavailable_since = time.monotonic()
            log.warning("session store (redis) %s during %s: %s", how, what, detail)
        # Only the log gets the detail: redis-py's messages name the host and port.
        return StoreUnavailable("session store unavailable")

    # -- encoding

    @staticmethod
    def _encode_state(state: tuple[np.ndarray, ...]) -> tuple[bytes, str]:
        arrays = [np.ascontiguousarray(s, dtype=STATE_DTYPE) for s in state]
        return b"".join(a.tobytes() for a in arrays), ";".join(f"{a.shape[0]},{a.shape[1]}" for a in arrays)

    @staticmethod
    def _decode_state(shape_field: bytes, data: bytes) -> tuple[np.ndarray, ...]:
        """The state tensors, each a writable float32 [rows, width] (one copy for all)."""
        flat = np.frombuffer(data, STATE_DTYPE).astype(np.float32)
        parts = [tuple(int(x) for x in part.split(b",")) for part in shape_field.split(b";")]
        if len(parts) == 1 and len(parts[0]) == 3:  # older layout: "tensors,rows,width"
            count, rows, width = parts[0]
            parts = [(rows, width)] * count
        out, start = [], 0
        for rows, width in parts:
            out.append(flat[start : start + rows * width].reshape(rows, width))
            start += rows * width
        if start != flat.size:
            raise ValueError(f"state holds {flat.size} floats, shape {shape_field!r} describes {start}")
        return tuple(out)

    def _decode(self, session_id: str, flat: list[bytes]) -> SessionRecord:
        h = dict(zip(flat[::2], flat[1::2], strict=True))
        state = self._decode_state(h[b"shape"], h[b"state"])
        ttl = int(h[b"ttl_ms"]) / 1000.0
        if b"history" in h:
            history = decode_history(h[b"history"])
        elif b"last_before" in h:  # written by an older release
            history = (LastStep(int(h[b"last_before"]), h[b"last_digest"], old_reply_outputs(h[b"last_response"])),)
        else:
            history = ()
        return SessionRecord(
            session_id,
            h[b"model"].decode(),
            int(h[b"version"]),
            int(h[b"position"]),
            state,
            ttl,
            time.time() + ttl,
            float(h[b"created_at"]),
            history,
            h.get(b"fingerprint", b"").decode(),
            owner=h.get(b"owner", b"").decode(),
            start=float(h[b"start"]) if b"start" in h else None,
        )

    @staticmethod
    def _missing(session_id: str, code: int, owner: str = "") -> ServiceError:
        if code == 2:
            return gone(SessionExpired, session_id, owner, "expired")
        return SessionNotFound(f"session '{shown(session_id)}' does not exist", session_id=shown(session_id))

    def _quota_keys(self, model: str, owner: str) -> list[str]:
        return [f"{self.prefix}q:m:{model}", f"{self.prefix}q:k:{owner}"]

    # -- interface

    async def create(self, record: SessionRecord, replace: bool = False, quota: Quota = NO_QUOTA) -> None:
        keys = self._quota_keys(record.model, record.owner)
        created = await self._run_create(record, replace, keys, limits=(quota.per_model, quota.per_key))
        if created == -1:
            raise too_many("max_sessions_per_model", quota.per_model, f"model '{record.model}'")
        if created == -2:
            raise too_many("max_sessions_per_key", quota.per_key, "this API key")
        self._created(record, created)

    async def _run_create(
        self,
        record: SessionRecord,
        replace: bool,
        quota_keys: list[str],
        limits: tuple[int, int] = (0, 0),
        deadline: int = 0,
        extra: tuple[Any, ...] = (),
    ) -> int:
        """One create script (scripts/create.lua): `quota_keys` (the model's and the owner's
        sets, or none) follow the session's two keys and are counted against `limits`;
        `deadline` (ms of server time, 0: none) refuses a create that comes too late; `extra`
        field/value pairs are stored too."""
        state, shape = self._encode_state(record.state)
        ttl_ms = _ms(record.ttl_seconds)
        created_at = repr(float(record.created_at))
        fields: list[Any] = [
            "model", record.model, "version", record.version, "fingerprint", record.fingerprint,
            "position", record.position, "ttl_ms", ttl_ms, "created_at", created_at, "shape", shape, "state", state,
            "owner", record.owner, *extra,
        ]  # fmt: skip
        if record.history:
            fields += ["history", encode_history(record.history)]
        if record.start is not None:
            fields += ["start", repr(float(record.start))]
        args = [
            ttl_ms, self.tombstone_ms, created_at, "1" if replace else "0", *limits,
            record.session_id, self.prefix, record.owner, deadline, *fields,
        ]  # fmt: skip
        keys = [*self._keys(record.session_id), *quota_keys]
        return int(await self._call("create", lambda: self._create(self._redis, keys, args), key=keys[0]))

    def _created(self, record: SessionRecord, code: int) -> None:
        """The outcome of a create script that passed admission: 1 created, 0 the id exists."""
        if not code:
            raise SessionExists(f"session id '{record.session_id}' is already taken", session_id=record.session_id)
        self._active += 1
        self._cache.put(record)

    def cached(self, session_id: str) -> SessionRecord | None:
        return self._cache.get(session_id)

    def _loaded(self, session_id: str, reply: Any) -> SessionRecord | ServiceError:
        """The load script's answer as a record (remembered in the cache) or the error to raise."""
        if isinstance(reply, int):
            self._cache.drop(session_id)
            return self._missing(session_id, reply)
        if len(reply) == 2 and isinstance(reply[0], int):  # {2, owner}: expired
            self._cache.drop(session_id)
            return self._missing(session_id, reply[0], reply[1].decode())
        record = self._decode(session_id, reply)
        self._cache.put(record)
        return record

    async def load(self, session_id: str) -> SessionRecord:
        keys = self._keys(session_id)
        result = await self._call(
            "load", lambda: self._load(self._redis, keys, [self.tombstone_ms]), timeouts=1, key=keys[0]
        )
        loaded = self._loaded(session_id, result)
        if isinstance(loaded, ServiceError):
            raise loaded
        return loaded

    def _save_args(self, record: SessionRecord, expected_position: int) -> list[Any]:
        """The save script's ARGV (a fresh write token when the record carries none)."""
        state = b"".join([np.ascontiguousarray(s, dtype=STATE_DTYPE).tobytes() for s in record.state])
        token = record.token if len(record.token) == TOKEN_CHARS else new_token()
        return [
            expected_position, record.position, state, _ms(record.ttl_seconds), self.tombstone_ms,
            token, encode_history(record.history), repr(float(record.created_at)), TOKEN_WINDOW,
            int(time.time() * 1000),
        ]  # fmt: skip

    def _saved(self, record: SessionRecord, expected_position: int, result: Any) -> ServiceError | None:
        """The save script's answer: None when written (the record is cached as written), else
        the error: not found / expired, or Superseded carrying the record the store holds now."""
        code = int(result[0])
        if code < 0:
            self._cache.drop(record.session_id)
            return self._missing(record.session_id, -code)
        if code == 0:
            self._superseded += 1
            stored = int(result[1])
            current = self._decode(record.session_id, result[2]) if len(result) > 2 and result[2] else None
            if current is not None:
                self._cache.put(current)
            else:
                self._cache.drop(record.session_id)
            return Superseded(
                f"session is at position {stored}, not {expected_position}", current=current, position=stored
            )
        record.expires_at = time.time() + record.ttl_seconds
        self._cache.put(record)
        return None

    async def save(self, record: SessionRecord, expected_position: int) -> None:
        """One session's save; saves asked for in the same event-loop turn (the steps of one
        model batch finish together) are sent together, as save_many sends a bulk request's: one
        script call for all (a cluster: one pipeline per master) instead of one per session,
        which is what Redis spends most of a step's CPU on (a read, a reply, an AOF write and a
        wake-up per call). Each save is the same check-and-set with its own token and gets its
        own answer; nothing waits for a batch to fill (the batch is sent in the same turn)."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[ServiceError | None] = loop.create_future()
        self._pending.append((record, expected_position, answer))
        if len(self._pending) == 1:
            loop.call_soon(self._send_pending)
        error = await answer
        if error is not None:
            raise error

    def _send_pending(self) -> None:
        items, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._save_pending(items))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _save_pending(self, items: list[tuple[SessionRecord, int, asyncio.Future[ServiceError | None]]]) -> None:
        """Save what `save` gathered and answer each caller (a caller that went away is not
        answered; its save is still completed, so the cache stays true)."""
        try:
            if len(items) == 1:
                record, expected, _ = items[0]
                errors = await self._save_each([(record, expected)])
            else:
                errors = await self.save_many([(record, expected) for record, expected, _ in items])
        except asyncio.CancelledError:
            for _, _, answer in items:
                answer.cancel()
            raise
        except Exception as exc:  # not a ServiceError (those are answers): each caller raises it
            for _, _, answer in items:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for (_, _, answer), error in zip(items, errors, strict=True):
            if not answer.done():
                answer.set_result(error)

    async def _save_each(self, items: list[tuple[SessionRecord, int]]) -> list[ServiceError | None]:
        """Each save as its own script call (also where a batch could not be answered whole)."""
        results = await asyncio.gather(*(self._save_one(r, p) for r, p in items), return_exceptions=True)
        out: list[ServiceError | None] = []
        for result in results:
            if isinstance(result, ServiceError) or result is None:
                out.append(result)
            else:
                raise result
        return out

    async def _save_one(self, record: SessionRecord, expected_position: int) -> None:
        args = self._save_args(record, expected_position)
        keys = self._keys(record.session_id)
        # Safe to re-send, also after a timeout: the script recognises this save by its token.
        try:
            result = await self._call(
                "save", lambda: self._save(self._redis, keys, args), attempts=SAVE_ATTEMPTS, timeouts=1, key=keys[0]
            )
        except StoreUnavailable:
            self._cache.drop(record.session_id)  # the write may or may not have landed
            raise
        error = self._saved(record, expected_position, result)
        if error is not None:
            raise error

    async def load_many(self, session_ids: list[str]) -> list[SessionRecord | ServiceError]:
        """One pipeline of load scripts (one round trip; on a cluster redis-py groups them per
        master, one round trip per master). Items the pipeline could not answer (a script not
        cached yet, a moved slot) are loaded one by one; a pipeline that fails as a whole falls
        back to one load per id."""
        if len(session_ids) < 2:
            return await SessionStore.load_many(self, session_ids)
        if not self.pipelines_span_nodes:
            return await self._load_batched(session_ids)

        async def run() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for sid in session_ids:
                pipe.execute_command("EVALSHA", self._load.sha, 2, *self._keys(sid), self.tombstone_ms)
            return await pipe.execute(raise_on_error=False)

        try:
            replies = await self._call("load_many", run)
        except StoreUnavailable:
            return await SessionStore.load_many(self, session_ids)
        out: list[SessionRecord | ServiceError] = []
        for sid, reply in zip(session_ids, replies, strict=True):
            if isinstance(reply, Exception):
                out.extend(await SessionStore.load_many(self, [sid]))
            else:
                out.append(self._loaded(sid, reply))
        return out

    async def _load_batched(self, session_ids: list[str]) -> list[SessionRecord | ServiceError]:
        """Single server: the load script for many sessions as one script call per
        BATCH_SESSIONS (the calls at once: one round trip); answers parsed in C by the client
        (one reply, not one per session). A call answered with an error is loaded one by one."""
        tomb = self.tombstone_ms

        async def chunk(ids: list[str]) -> list[SessionRecord | ServiceError]:
            keys = [key for sid in ids for key in (f"{self.prefix}s:{{{sid}}}", f"{self.prefix}x:{{{sid}}}")]
            args = [1, len(ids), *([tomb] * len(ids))]
            try:
                replies = await self._call(
                    "load_many", lambda: self._load_batch(self._redis, keys, args), timeouts=1, key=keys[0]
                )
            except (StoreUnavailable, rex.ResponseError):
                return await SessionStore.load_many(self, ids)
            return [self._loaded(sid, reply) for sid, reply in zip(ids, replies, strict=True)]

        chunks = [session_ids[k : k + BATCH_SESSIONS] for k in range(0, len(session_ids), BATCH_SESSIONS)]
        if len(chunks) == 1:
            return await chunk(chunks[0])
        return [answer for part in await asyncio.gather(*map(chunk, chunks)) for answer in part]

    async def save_many(self, items: list[tuple[SessionRecord, int]]) -> list[ServiceError | None]:
        """One pipeline of save scripts (one round trip; a single server: one batch script call
        per BATCH_SESSIONS, see _save_batched), re-sent whole after a connection error (each
        save is recognised by its token). Items the pipeline could not answer (a script not
        cached yet, an error reply) are saved one by one (same token: safe)."""
        if len(items) < 2:
            return await self._save_each(items)
        for record, _ in items:  # a save re-sent alone below must carry the same token
            if len(record.token) != TOKEN_CHARS:
                record.token = new_token()
        if not self.pipelines_span_nodes:
            chunks = [items[k : k + BATCH_SESSIONS] for k in range(0, len(items), BATCH_SESSIONS)]
            if len(chunks) == 1:
                return await self._save_batched(chunks[0])
            return [answer for part in await asyncio.gather(*map(self._save_batched, chunks)) for answer in part]
        sends = [(self._keys(r.session_id), self._save_args(r, p)) for r, p in items]
        sha = self._save_sha

        async def run() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for keys, args in sends:
                pipe.execute_command("EVALSHA", sha, 2, *keys, *args)
            return await pipe.execute(raise_on_error=False)

        try:
            replies = await self._call("save_many", run, attempts=SAVE_ATTEMPTS, timeouts=1)
        except StoreUnavailable as exc:
            if self.pipelines_span_nodes:  # one master down fails all: each alone (same tokens)
                return await self._save_each(items)
            for record, _ in items:
                self._cache.drop(record.session_id)
            return [exc] * len(items)
        out: list[ServiceError | None] = []
        for (record, expected), reply in zip(items, replies, strict=True):
            if isinstance(reply, Exception):  # the script not cached yet, a refused write: mapped there
                out.extend(await self._save_each([(record, expected)]))
            else:
                out.append(self._saved(record, expected, reply))
        return out

    async def _save_batched(self, items: list[tuple[SessionRecord, int]]) -> list[ServiceError | None]:
        """Single server: the save script for many sessions as one script call (the tokens
        set), re-sent whole after a connection error, as a pipeline would be (each save is
        recognised by its token, so a save applied by the lost call answers "applied"). A
        call answered with an error (none is expected) is saved one by one, same tokens."""
        keys: list[str] = []
        args: list[Any] = [SAVE_ARGS, len(items)]
        for record, expected in items:
            keys += self._keys(record.session_id)
            args += self._save_args(record, expected)
        try:
            replies = await self._call(
                "save_many",
                lambda: self._save_batch(self._redis, keys, args),
                attempts=SAVE_ATTEMPTS,
                timeouts=1,
                key=keys[0],
            )
        except StoreUnavailable as exc:
            for record, _ in items:
                self._cache.drop(record.session_id)
            return [exc] * len(items)
        except rex.ResponseError:
            return await self._save_each(items)
        return [self._saved(record, expected, reply) for (record, expected), reply in zip(items, replies, strict=True)]

    async def load_columns(self, session_ids: list[str], owner: str) -> Columns | None:
        """The columnar load (SessionStore.load_columns) from this replica's record cache,
        without a round trip or a copy per record: when every session is cached, live,
        `owner`'s and of one model version, graph and state layout, their states stacked as
        the model takes them. Provisional, as any cached copy: the save's check-and-set
        confirms it. A single server only (a cluster's sessions are saved per node)."""
        if self.pipelines_span_nodes:
            return None
        records = self._cache.peek_many(session_ids)
        if records is None:
            return None
        kind = _KIND(records[0])
        if kind[3] != owner or len(set(map(_KIND, records))) != 1:
            return None
        states = list(map(_STATE, records))
        if len(set(map(len, states))) != 1:
            return None
        try:
            stacked = stack_states(states, tuple((s.shape[0], s.shape[1]) for s in states[0]))
        except ValueError:
            return None
        self._cache.hits += len(records)  # (a batch declined here is looked up again, and counted, by the engine)
        return Columns(
            session_ids,
            kind[0],
            kind[1],
            kind[2],
            list(map(_POSITION, records)),
            known_starts(list(map(_START, records))),
            stacked,
            records,
        )

    async def save_columns(
        self, columns: Columns, length: int, state: tuple[np.ndarray, ...], tokens: list[str]
    ) -> list[ServiceError | None]:
        """The columnar save: the save script for every session, as save_many sends it (one
        batch script call per BATCH_SESSIONS, at once), its arguments built per batch (each
        session's state one row of one array); the cache updated in place for those written,
        answers other than "written" read as save() reads them."""
        records: list[SessionRecord] = columns.handles
        n = len(records)
        # per session, its state tensors' values in graph order: [sessions, values] as bytes
        flat = np.concatenate([s.transpose(1, 0, 2).reshape(n, -1) for s in state], axis=1).astype(STATE_DTYPE)
        blobs = list(map(bytes, flat))
        positions = [p + length for p in columns.positions]
        ttl_set = set(map(_TTL, records))
        ttls = repeat(_ms(ttl_set.pop())) if len(ttl_set) == 1 else [_ms(ttl) for ttl in map(_TTL, records)]
        histories = list(map(encode_history, map(_HISTORY, records))) if any(map(_HISTORY, records)) else repeat(b"")
        created = list(map(repr, map(float, map(_CREATED, records))))
        now_ms = int(time.time() * 1000)
        argv = list(
            chain.from_iterable(
                zip(
                    columns.positions, positions, blobs, ttls, repeat(self.tombstone_ms), tokens, histories, created,
                    repeat(TOKEN_WINDOW), repeat(now_ms),
                )
            )
        )  # fmt: skip
        prefix = self.prefix
        keys = [key for sid in columns.session_ids for key in (f"{prefix}s:{{{sid}}}", f"{prefix}x:{{{sid}}}")]

        async def send(lo: int, hi: int) -> list[Any]:
            args = [SAVE_ARGS, hi - lo, *argv[lo * SAVE_ARGS : hi * SAVE_ARGS]]
            part = keys[2 * lo : 2 * hi]
            return await self._call(  # type: ignore[no-any-return]
                "save_many",
                lambda: self._packed(self._save_batch, part, args),
                attempts=SAVE_ATTEMPTS,
                timeouts=1,
                key=part[0],
            )

        bounds = [(lo, min(n, lo + BATCH_SESSIONS)) for lo in range(0, n, BATCH_SESSIONS)]
        try:
            parts = await asyncio.gather(*(send(lo, hi) for lo, hi in bounds))
        except StoreUnavailable as exc:
            for sid in columns.session_ids:
                self._cache.drop(sid)
            return [exc] * n
        except rex.ResponseError:  # none is expected: each saved alone, with the same token
            return await self._save_each(self._column_records(columns, length, state, tokens))
        replies = [reply for part in parts for reply in part]
        rows = list(zip(*(list(s.transpose(1, 0, 2)) for s in state), strict=True))
        codes = [reply[0] for reply in replies]
        if codes.count(1) == n:
            self._cache.stepped(records, positions, rows, tokens)
            return [None] * n
        results: list[ServiceError | None] = [None] * n
        written = [k for k, code in enumerate(codes) if code == 1]
        self._cache.stepped(records, positions, rows, tokens, written)
        for k, code in enumerate(codes):
            if code != 1:
                results[k] = self._saved(records[k], columns.positions[k], replies[k])
        return results

    async def _packed(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """script(client, keys, args), its command packed by hiredis in one C call (redis-py
        encodes each argument in Python first: five times the time for the 3,000 arguments
        of a bulk save), sent on a connection of the store's pool and its reply read as the
        client reads one. A server without the script cached gets it as script() sends it.
        A connection that failed midway is closed, not reused (the caller may send again)."""
        packed = hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))
        pool = self._redis.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(packed)
            return await conn.read_response()
        except rex.NoScriptError:
            pass  # the reply was read whole: the connection goes back to the pool as it is
        except rex.ResponseError:
            raise
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        return await script(self._redis, keys, args)

    def _column_records(
        self, columns: Columns, length: int, state: tuple[np.ndarray, ...], tokens: list[str]
    ) -> list[tuple[SessionRecord, int]]:
        """A columnar save as save_many's items (copies of the cached records, moved on)."""
        items = []
        for k, (record, before) in enumerate(zip(columns.handles, columns.positions, strict=True)):
            moved = record.copy()
            moved.position, moved.token = before + length, tokens[k]
            moved.state = tuple(s[:, k, :] for s in state)
            items.append((moved, before))
        return items

    async def delete(self, session_id: str, owner: str | None = None) -> bool:
        keys = self._keys(session_id)
        args = [owner or "", "0" if owner is None else "1", self.prefix, session_id, int(self.frees_quota_in_script)]
        # Not re-sent: a lost reply to an applied delete would turn into "did not exist".
        self._cache.drop(session_id)
        removed = await self._call("delete", lambda: self._delete(self._redis, keys, args), attempts=1, key=keys[0])
        return await self._deleted(session_id, removed)

    async def _deleted(self, session_id: str, reply: Any) -> bool:
        """What the delete script answered: 1 deleted, 0 none (the cluster store also frees
        quota slots here)."""
        return bool(reply)

    async def count(self) -> int:
        async def scan() -> int:
            n = 0
            async for _ in self._redis.scan_iter(match=f"{self.prefix}s:*", count=1000):
                n += 1
            return n

        self._active = await self._call("count", scan)
        return self._active

    async def list_ids(self, limit: int = 1000) -> list[str]:
        start = len(self.prefix) + 3  # after "s:{"

        async def scan() -> list[str]:
            ids: list[str] = []
            async for key in self._redis.scan_iter(match=f"{self.prefix}s:*", count=1000):
                ids.append(key.decode()[start:-1])
                if len(ids) >= limit:
                    break
            return ids

        return await self._call("list_ids", scan)

    async def usage(self) -> dict[tuple[str, int], int]:
        """SCAN plus pipelined HMGETs: O(sessions), so it runs on reloads and every
        `stats_interval` seconds, never per request."""

        async def scan() -> dict[tuple[str, int], int]:
            counts: dict[tuple[str, int], int] = {}
            keys: list[bytes] = []

            async def tally() -> None:
                pipe = self._redis.pipeline(transaction=False)
                for key in keys:
                    pipe.hmget(key, "model", "version")
                for model, version in await pipe.execute():
                    if model is not None and version is not None:
                        k = (model.decode(), int(version))
                        counts[k] = counts.get(k, 0) + 1
                keys.clear()

            async for key in self._redis.scan_iter(match=f"{self.prefix}s:*", count=1000):
                keys.append(key)
                if len(keys) >= 1000:
                    await tally()
            if keys:
                await tally()
            return counts

        counts = await self._call("usage", scan)
        self._usage = counts
        self._active = sum(counts.values())
        return counts

    def model_sessions(self, model: str) -> int:
        """Sessions of one model as of the last usage() count (for display: quotas are exact
        in the create script, not from this)."""
        return sum(n for (name, _), n in self._usage.items() if name == model)

    def stats(self) -> dict[str, float]:
        """`active`: sessions in Redis under this prefix, as of the last count() (refreshed
        every `stats_interval` seconds). Evictions and expiries happen inside Redis (there
        are no evictions with maxmemory-policy noeviction): Redis's INFO reports them.
        `cache_*`: this replica's record cache (service.sessions.cache): lookups that found a
        copy or not, entries and bytes held, entries evicted; `superseded`: saves refused because
        another replica had written first (a stale copy, or two replicas stepping one session)."""
        cache = self._cache
        return {
            "active": self._active,
            "evicted": 0,
            "expired": 0,
            "available": 0 if self._unavailable_since is not None else 1,
            "cache_hits": cache.hits,
            "cache_misses": cache.misses,
            "cache_entries": len(cache),
            "cache_bytes": cache.bytes,
            "cache_evicted": cache.evicted,
            "superseded": self._superseded,
        }

    async def ping(self) -> None:
        await self._call("ping", self._redis.ping)

    async def start(self) -> None:
        if self._refresher is None and self.stats_interval > 0:
            self._refresher = asyncio.create_task(self._refresh_forever())

    async def close(self) -> None:
        if self._sending:  # saves under way finish first
            await asyncio.gather(*self._sending, return_exceptions=True)
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        await self._redis.aclose()

    async def _refresh_forever(self) -> None:
        while True:
            with contextlib.suppress(StoreUnavailable):
                await self.usage()
            await asyncio.sleep(self.stats_interval)
