"""A large predict (or bulk step) body decoded sequence by sequence (entry by entry).

orjson decodes a whole body in one C call that holds the GIL: for an 8 MB `[200][10000][1]`
predict that is seconds on a busy machine, during which no other request (not even a health
check) can run, even if the call is made from a worker thread. Here the body's `inputs` array
is located with a vectorised bracket-depth scan, the rest of the body is decoded on its own,
and each sequence is decoded separately, so the GIL is given up between sequences (a few
milliseconds each). The answer is streamed (service/api/streamed.py).

Strings may hold escapes (`\"`, `\\`, `\u0041`): a quote is a string's end only after an even
run of backslashes, found from the backslashes alone (a body without any costs nothing more).
Anything this scan does not fully understand (`inputs` not an array of arrays, stray values
between sequences, the key spelled twice, invalid JSON anywhere) returns None, and the caller
decodes the whole body the ordinary way, which gives the usual errors.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import numpy as np
import orjson

_WS_OR_COMMA = np.zeros(256, bool)
_WS_OR_COMMA[[ord(c) for c in " \t\r\n,"]] = True


def split_inputs(raw: bytes) -> tuple[dict[str, Any], list[bytes]] | None:
    """raw JSON object -> (the object with `inputs` replaced by [], each inputs[i] as bytes)."""
    return split_array(raw, "inputs", "[")


def split_array(raw: bytes, key: str, opener: str) -> tuple[dict[str, Any], list[bytes]] | None:
    """raw JSON object -> (the object with the array `key` replaced by [], each of its elements
    as bytes); every element must open with `opener` ("[" arrays, "{" objects)."""
    if not raw.lstrip().startswith(b"{"):
        return None
    b = np.frombuffer(raw, np.uint8)
    # One byte per input byte for the masks and 4 for the depth: ~6x the body, transient.
    quote = _string_quotes(b)
    in_string = np.bitwise_xor.accumulate(quote.view(np.uint8)).view(bool) | quote
    opens = ((b == ord("[")) | (b == ord("{"))) & ~in_string
    closes = ((b == ord("]")) | (b == ord("}"))) & ~in_string
    depth = np.cumsum(opens.view(np.int8) - closes.view(np.int8), dtype=np.int32)  # depth after each byte
    start = _array_value(raw, depth, b'"' + key.encode() + b'"')
    if start is None:
        return None
    after = np.flatnonzero((depth[start:] == 1) & closes[start:])
    if not after.size:
        return None
    end = start + int(after[0])  # the ']' closing inputs
    inner = slice(start + 1, end)
    seq_starts = start + 1 + np.flatnonzero(opens[inner] & (depth[inner] == 3) & (b[inner] == ord(opener)))
    seq_ends = start + 1 + np.flatnonzero(closes[inner] & (depth[inner] == 2))
    if seq_starts.size != seq_ends.size or not (
        np.all(seq_starts < seq_ends) and np.all(seq_ends[:-1] < seq_starts[1:])
    ):
        return None
    # Between sequences only commas and whitespace (one comma each), else let orjson judge.
    length = end - start - 1
    edges = np.zeros(length + 1, np.int32)
    edges[seq_starts - start - 1] += 1
    edges[seq_ends - start] -= 1
    gaps = b[inner][np.cumsum(edges[:length]) == 0]
    if not np.all(_WS_OR_COMMA[gaps]) or int(np.count_nonzero(gaps == ord(","))) != max(seq_starts.size - 1, 0):
        return None
    try:
        rest = orjson.loads(raw[:start] + _PLACEHOLDER + raw[end + 1 :])
    except orjson.JSONDecodeError:
        return None
    # The key spelled another way after this one (`"\u0069nputs"`) is what the whole decoder
    # would keep (the last one wins): left to it.
    if not isinstance(rest, dict) or rest.get(key) != _PLACEHOLDER_TEXT:
        return None
    rest[key] = []
    return rest, [raw[s : e + 1] for s, e in zip(seq_starts.tolist(), seq_ends.tolist(), strict=True)]


_PLACEHOLDER_TEXT = "split:" + os.urandom(8).hex()  # stands for the array while the rest is decoded
_PLACEHOLDER = orjson.dumps(_PLACEHOLDER_TEXT)


def _string_quotes(b: np.ndarray) -> np.ndarray:
    """Where the body's quotes open or close a string: every '"' except those escaped, i.e.
    right after an odd run of backslashes. Works on the backslashes' positions only."""
    quote = b == ord('"')
    slashes = np.flatnonzero(b == ord("\\"))
    if not slashes.size:
        return quote
    breaks = np.flatnonzero(np.diff(slashes) != 1)
    starts = np.concatenate((slashes[:1], slashes[breaks + 1]))
    ends = np.concatenate((slashes[breaks], slashes[-1:]))
    after = ends[((ends - starts) % 2 == 0) & (ends + 1 < b.size)] + 1  # an odd run escapes what follows
    quote[after] = False  # an escaped quote (any other escaped byte was not a quote anyway)
    return quote


def _array_value(raw: bytes, depth: np.ndarray, key: bytes) -> int | None:
    """Index of the '[' that opens the top-level `key`'s value (the key exactly once)."""
    found = None
    n = len(key)
    position = raw.find(key)
    while position != -1:
        if depth[position] == 1:
            tail = raw[position + n : position + 64].lstrip()
            if tail.startswith(b":"):
                if found is not None:
                    return None  # a duplicate key: orjson's rule (last wins) applies
                value = tail[1:].lstrip()
                if not value.startswith(b"["):
                    return None
                found = position + n + (len(raw[position + n : position + 64]) - len(value))
        position = raw.find(key, position + n)
    return found


class LazySequences(list):
    """inputs[i] as raw bytes, decoded one by one as they are iterated (len() needs none)."""

    def __iter__(self):  # type: ignore[override]
        for piece in list.__iter__(self):
            yield orjson.loads(piece)


def give_back_memory() -> None:
    """Return the heap freed by a large request to the OS (glibc keeps it otherwise)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")  # not find_library: it may run ldconfig or a compiler
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (musl, macOS): nothing to trim
        return None


_LIBC = _libc()
