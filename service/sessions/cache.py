"""A replica-local cache of session records, so that a step on a shared store costs one round
trip (the save) instead of two (load, then save).

A record is cached as this replica last saw it in the store (loaded, created or saved here),
tagged by the write that produced it. Nothing read from the cache is trusted on its own: the
engine plans a step against the cached record and the save is a check-and-set on the position
and creation time the record says; when another replica wrote in between, the store refuses
the write and answers the record it holds now, and the step is planned again from that
(service.core.engine). An answer that writes nothing (a replay, a conflict, an error) is never
given from a cached record: the engine loads the record first. So a stale entry costs one
recomputation, never a wrong answer.

Bounded twice, least recently used first out: by entries and by the bytes of the arrays and
replies the entries hold. An entry is dropped at the idle expiry its record carries, so an
expired session is always looked up in the store (which says 410 or 404).
"""

from __future__ import annotations

import operator
import time
from collections import OrderedDict
from typing import Any

from service.sessions.base import SessionRecord

_EXPIRES = operator.attrgetter("expires_at")
ENTRY_OVERHEAD = 400  # bytes of Python objects per entry beyond its arrays and replies (measured ~350)


def record_bytes(record: SessionRecord) -> int:
    """What an entry holds in memory, approximately: its state arrays, its recorded replies, and
    the fixed Python overhead of the record, its strings and the LRU slot."""
    size = ENTRY_OVERHEAD + len(record.session_id) + len(record.token) + len(record.fingerprint)
    for array in record.state:
        size += array.nbytes
    for step in record.history:
        size += step.size + 80
    return size


class RecordCache:
    """LRU of session records by id; `get` hands out a copy the caller may change."""

    def __init__(self, max_bytes: int, max_entries: int = 1_000_000) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[SessionRecord, int]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0 and self.max_entries > 0

    def get(self, session_id: str) -> SessionRecord | None:
        entry = self._entries.get(session_id)
        if entry is None:
            self.misses += 1
            return None
        record = entry[0]
        if record.expires_at <= time.time():
            self.drop(session_id)
            self.misses += 1
            return None
        self._entries.move_to_end(session_id)
        self.hits += 1
        return record.copy()

    def peek_many(self, session_ids: list[str]) -> list[SessionRecord] | None:
        """The cached records of all `session_ids` themselves, not copies (a columnar bulk step
        only reads them, and writes back through `stepped`), each made the most recent; None,
        with nothing changed, when any is missing or past its idle expiry. Not counted as hits:
        the caller counts them (`hits`) once it uses them."""
        found = list(map(self._entries.get, session_ids))
        if not found or None in found:
            return None
        records: list[SessionRecord] = [entry[0] for entry in found]  # type: ignore[index]  # none is None
        if min(map(_EXPIRES, records)) <= time.time():
            return None
        move = self._entries.move_to_end
        for sid in session_ids:
            move(sid)
        return records

    def stepped(
        self,
        records: list[SessionRecord],
        positions: list[int],
        states: list[tuple[Any, ...]],
        tokens: list[str],
        keep: list[int] | None = None,
    ) -> None:
        """Records from `peek_many` (those at `keep`, or all) as their columnar save wrote
        them: moved to `positions` and `states` by the writes `tokens`, their idle expiry
        refreshed. Updated in place (the same shapes and history: the same bytes held) while
        still cached, else cached anew as a copy, as put() would."""
        now = time.time()
        entries = self._entries
        for k in range(len(records)) if keep is None else keep:
            record = records[k]
            entry = entries.get(record.session_id)
            current = entry is not None and entry[0] is record
            if not current:  # replaced or dropped meanwhile (a load, an eviction): cached anew
                record = record.copy()
            record.position, record.state, record.token = positions[k], states[k], tokens[k]
            record.expires_at = now + record.ttl_seconds
            if current:
                entries.move_to_end(record.session_id)
            else:
                self.put(record)

    def put(self, record: SessionRecord) -> None:
        """Remember `record` as the store holds it now (a copy: the caller keeps changing its own)."""
        if not self.enabled:
            return
        size = record_bytes(record)
        old = self._entries.pop(record.session_id, None)
        if old is not None:
            self.bytes -= old[1]
        if size > self.max_bytes:
            return
        self._entries[record.session_id] = (record.copy(), size)
        self.bytes += size
        while self.bytes > self.max_bytes or len(self._entries) > self.max_entries:
            _, (_, freed) = self._entries.popitem(last=False)
            self.bytes -= freed
            self.evicted += 1

    def drop(self, session_id: str) -> None:
        old = self._entries.pop(session_id, None)
        if old is not None:
            self.bytes -= old[1]

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0
