"""What a client session knows about its own progress, shared by REST stepping
(seqserve/aio.py) and the WebSocket stream (seqserve/_stream.py): the acknowledged position,
where the current server-side session started, the checkpoint to recover from and the
readings acknowledged since it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from seqserve._protocol import Intervals
from seqserve.errors import ModelChanged, PositionConflict, ProtocolError, SeqserveError, SessionLost

State = dict[str, np.ndarray]


class Progress:
    """`position` counts the steps acknowledged over the whole life of the stream (a recreated
    session continues it); `base` is the logical position at which the current server-side
    session started, so the server's position is `position - base`. `checkpoint` is an
    exported (position, state), `journal` the readings acknowledged since it, `upcoming` a
    checkpoint exported ahead of what is acknowledged (adopted once the position reaches it)."""

    def __init__(self, session_id: str, position: int, checkpoint_every: int) -> None:
        self.session_id = session_id
        self.position = position
        self.base = 0
        self.checkpoint_every = max(1, checkpoint_every)
        self.checkpoint: tuple[int, State] | None = None
        self.journal: list[np.ndarray] = []
        self.upcoming: tuple[int, State] | None = None
        self.last_intervals: Intervals | None = None  # of the last reply accepted
        # [time][lead] times of the last reply accepted (a session created with a start time)
        self.last_forecast_times: list[list[str]] | None = None
        # logical position -> the time of the reading there, as the service said with an export
        # (its next_time): a session recreated from that checkpoint resumes its clock from it
        self.times: dict[int, str] = {}

    def on_server(self, position: int | None = None) -> int:
        """A logical position (default: the acknowledged one) as the server counts it."""
        return (self.position if position is None else position) - self.base

    def acknowledge(self, steps: np.ndarray) -> None:
        """The server applied `steps` right after `position`."""
        self.position += len(steps)
        if self.checkpoint is not None:
            self.journal.append(steps)

    def accept(self, steps: np.ndarray, reply: Mapping[str, Any]) -> np.ndarray:
        """A step reply for `steps`: check it is the one expected, move the position on."""
        expected = self.on_server() + len(steps)
        if reply.get("position") != expected:
            raise ProtocolError(f"step reply says position {reply.get('position')}, expected {expected}")
        outputs = np.asarray(reply["outputs"], dtype=np.float32)
        self.last_intervals = Intervals.of(reply)
        self.last_forecast_times = reply.get("forecast_times")
        self.acknowledge(steps)
        return outputs

    def annotate(self, error: SeqserveError, pending: np.ndarray | None) -> SeqserveError:
        """What the client knew when the error came: the session, its position, the readings
        not applied."""
        if isinstance(error, SessionLost | ModelChanged):
            error.session_id, error.position, error.pending = self.session_id, self.position, pending
        if isinstance(error, PositionConflict):
            error.client_position = self.on_server()
        return error

    def due(self) -> bool:
        """Enough steps acknowledged since the checkpoint to export a new one."""
        return self.checkpoint is not None and self.position - self.checkpoint[0] >= self.checkpoint_every

    def adopt(self, position: int, state: State) -> bool:
        """Make (position, state) the point to recover from, keeping the acknowledged readings
        after it. False when it lies ahead of what is acknowledged (adopt it later); True when
        adopted or of no use (older than the current one)."""
        if position > self.position:
            return False
        if self.checkpoint is None:
            if position == self.position:
                self.checkpoint, self.journal = (position, state), []
            return True
        start = self.checkpoint[0]
        if position < start:
            return True
        rest = np.concatenate(self.journal)[position - start :] if self.journal else None
        self.journal = [rest] if rest is not None and len(rest) else []
        self.checkpoint = (position, state)
        return True

    def since_checkpoint(self, steps: np.ndarray) -> tuple[State, np.ndarray]:
        """The checkpoint's state and the readings from it through `steps` (which follow the
        acknowledged position): what a stateless predict needs to recompute their outputs."""
        if self.checkpoint is None:
            raise ProtocolError("no exported state to recompute from")
        inputs = np.concatenate([*self.journal, steps]) if self.journal else steps
        return self.checkpoint[1], inputs

    def restart(self, session_id: str) -> np.ndarray | None:
        """A new server-side session, created from the checkpoint: the position goes back to
        the checkpoint's; returns the acknowledged readings since it, to apply again."""
        if self.checkpoint is None:
            raise SessionLost("session lost before any state was exported; cannot recreate", status=410)
        start = self.checkpoint[0]
        journal = np.concatenate(self.journal) if self.journal else None
        self.session_id, self.base, self.position = session_id, start, start
        self.journal, self.upcoming = [], None
        return journal

    def copy(self, session_id: str, server_position: int) -> Progress:
        """The progress of a fork of this session (same base, checkpoint and journal)."""
        child = Progress(session_id, self.base + server_position, self.checkpoint_every)
        child.base, child.checkpoint, child.journal = self.base, self.checkpoint, list(self.journal)
        child.times = dict(self.times)
        return child
