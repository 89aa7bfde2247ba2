"""The coalescing transport: one write per response, and nothing ever held back."""

from __future__ import annotations

import asyncio

from service.api.http_coalescing import _CoalescingTransport


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


async def test_headers_and_body_go_out_together():
    raw = FakeTransport()
    t = _CoalescingTransport(raw)
    t.write(HEAD)
    t.write(b"{}")
    assert raw.writes == [HEAD + b"{}"]
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert raw.writes == [HEAD + b"{}"]


async def test_headers_alone_are_flushed_on_the_next_loop_turn():
    raw = FakeTransport()
    t = _CoalescingTransport(raw)
    t.write(HEAD)  # e.g. a HEAD response: no body write follows
    assert raw.writes == []
    await asyncio.sleep(0)
    assert raw.writes == [HEAD]


async def test_close_flushes_and_other_statuses_pass_through():
    raw = FakeTransport()
    t = _CoalescingTransport(raw)
    t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    t.write(b"HTTP/1.1 404 Not Found\r\n\r\n")
    assert len(raw.writes) == 2
    t.write(HEAD)
    t.close()
    assert raw.writes[-1] == HEAD and raw.closed
    assert t.get_extra_info("peername") == "info:peername"


async def test_after_an_upgrade_the_frames_of_a_loop_turn_go_out_in_one_write():
    """A batch of WebSocket replies (one frame each, written in one turn) is one send; the
    101 itself passes at once; close sends what is held first."""
    raw = FakeTransport()
    t = _CoalescingTransport(raw)
    upgrade = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"
    t.write(upgrade)
    assert raw.writes == [upgrade]
    t.write(b"\x81\x02{}")
    t.write(bytearray(b"\x81\x03[1]"))
    assert raw.writes == [upgrade]
    await asyncio.sleep(0)
    assert raw.writes == [upgrade, b"\x81\x02{}\x81\x03[1]"]
    await asyncio.sleep(0)
    t.write(b"\x88\x00")  # a close frame, then the connection closes in the same turn
    t.close()
    assert raw.writes[-1] == b"\x88\x00" and raw.closed
