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
between sequences, the key spelled twice, invalid JSON anywhere) is refused by
`split_or_refuse` with a 4xx naming what is wrong, never decoded whole: a body the scan cannot
split is malformed (no client writes one on purpose), and decoding it whole would bring back
the stall this module exists to prevent (~1 s with the GIL held for 8 MB). Bodies too small to
stall anything are not split at all: the caller decodes them whole.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import numpy as np
import orjson

from service.core.errors import InvalidInput, MalformedJSON, ServiceError, json_problem

_WS_OR_COMMA = np.zeros(256, bool)
_WS_OR_COMMA[[ord(c) for c in " \t\r\n,"]] = True


def split_or_refuse(raw: bytes, key: str, opener: str) -> tuple[dict[str, Any], list[bytes]]:
    """raw JSON object -> (the object with the array `key` replaced by [], each of its elements
    as bytes), every element opening with `opener` ("[" arrays, "{" objects); or the error
    (400 invalid JSON, 422 misshapen) that names why the body cannot be split, raised without
    decoding the body whole."""
    found = _split(raw, key, opener)
    if isinstance(found, ServiceError):
        raise found
    return found


def _split(raw: bytes, key: str, opener: str) -> tuple[dict[str, Any], list[bytes]] | ServiceError:
    kind = "JSON array (a sequence)" if opener == "[" else "JSON object (an entry)"
    if not raw.lstrip().startswith(b"{"):
        return InvalidInput("request body must be a JSON object")
    b = np.frombuffer(raw, np.uint8)
    # One byte per input byte for the masks and 4 for the depth: ~6x the body, transient.
    quote = _string_quotes(b)
    in_string = np.bitwise_xor.accumulate(quote.view(np.uint8)).view(bool) | quote
    opens = ((b == ord("[")) | (b == ord("{"))) & ~in_string
    closes = ((b == ord("]")) | (b == ord("}"))) & ~in_string
    depth = np.cumsum(opens.view(np.int8) - closes.view(np.int8), dtype=np.int32)  # depth after each byte
    start = _array_value(raw, depth, b'"' + key.encode() + b'"')
    if isinstance(start, ServiceError):
        return start
    after = np.flatnonzero((depth[start:] == 1) & closes[start:])
    if not after.size:
        return MalformedJSON(f"request body is not valid JSON: the {key} array is never closed")
    end = start + int(after[0])  # the ']' closing inputs
    inner = slice(start + 1, end)
    seq_starts = start + 1 + np.flatnonzero(opens[inner] & (depth[inner] == 3) & (b[inner] == ord(opener)))
    seq_ends = start + 1 + np.flatnonzero(closes[inner] & (depth[inner] == 2))
    if seq_starts.size != seq_ends.size or not (
        np.all(seq_starts < seq_ends) and np.all(seq_ends[:-1] < seq_starts[1:])
    ):
        return InvalidInput(f"every element of {key} must be a {kind}", field=key)
    # Between sequences only commas and whitespace (one comma each).
    length = end - start - 1
    edges = np.zeros(length + 1, np.int32)
    edges[seq_starts - start - 1] += 1
    edges[seq_ends - start] -= 1
    gaps = b[inner][np.cumsum(edges[:length]) == 0]
    if not np.all(_WS_OR_COMMA[gaps]) or int(np.count_nonzero(gaps == ord(","))) != max(seq_starts.size - 1, 0):
        return InvalidInput(
            f"every element of {key} must be a {kind}, separated by single commas; found something else between them",
            field=key,
        )
    try:
        rest = orjson.loads(raw[:start] + _PLACEHOLDER + raw[end + 1 :])
    except orjson.JSONDecodeError as exc:
        return MalformedJSON(f"request body is not valid JSON outside {key}: {_bounded(json_problem(exc, raw))}")
    # The key spelled another way after this one (`"\u0069nputs"`): orjson would keep the
    # last one; refused rather than guessed.
    if not isinstance(rest, dict) or rest.get(key) != _PLACEHOLDER_TEXT:
        return InvalidInput(f"{key} appears more than once in the request body", field=key)
    rest[key] = []
    return rest, [raw[s : e + 1] for s, e in zip(seq_starts.tolist(), seq_ends.tolist(), strict=True)]


def _bounded(message: str, limit: int = 200) -> str:
    """An error message that may quote client input, cut to a bounded length."""
    return message if len(message) <= limit else message[:limit] + "..."


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


def _array_value(raw: bytes, depth: np.ndarray, key: bytes) -> int | ServiceError:
    """Index of the '[' that opens the top-level `key`'s value (the key exactly once)."""
    name = key.decode().strip('"')
    found = None
    n = len(key)
    position = raw.find(key)
    while position != -1:
        if depth[position] == 1:
            tail = raw[position + n : position + 64].lstrip()
            if tail.startswith(b":"):
                if found is not None:
                    return InvalidInput(f"{name} appears more than once in the request body", field=name)
                value = tail[1:].lstrip()
                if not value.startswith(b"["):
                    return InvalidInput(f"{name} must be a JSON array", field=name)
                found = position + n + (len(raw[position + n : position + 64]) - len(value))
        position = raw.find(key, position + n)
    if found is None:
        return InvalidInput(f"{name} is required: the request body has no top-level {name} array", field=name)
    return found


class LazySequences(list):
    """inputs[i] as raw bytes, decoded one by one as they are iterated (len() needs none)."""

    key = "inputs"

    def __iter__(self):  # type: ignore[override]
        for i, piece in enumerate(list.__iter__(self)):
            yield decode_element(piece, self.key, i)


def decode_element(piece: bytes, key: str, index: int) -> Any:
    """One split element decoded; invalid JSON is a 400 naming the element."""
    try:
        return orjson.loads(piece)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"{key}[{index}] is not valid JSON: {_bounded(json_problem(exc, piece))}") from None


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
