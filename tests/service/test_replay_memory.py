"""The replay record's cost in a real redis-server: long replies on a wide model (48 outputs)
cost each session at most its state, `replay_max_bytes` and a fixed overhead (the write tokens,
the fields, the expiry marker), measured as `used_memory` growth, not the replies' size. The
previous record kept the last four replies whole: about 900 KB per session here."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from service.api.codecs import STEP_REPLY
from service.core.engine import StepRequest
from service.core.metrics import Metrics
from service.core.services import build_services
from service.core.settings import Settings
from tests.support.models import export_wide
from tests.support.redis import RedisProcess
from tests.support.tier import starts

SESSIONS = 16
STEPS = 4  # positioned steps per session: the whole replay window
LENGTH = 400  # time steps per request: 400 x 48 float32 outputs = 76.8 KB per reply (raw)
# Per session beyond its state and the replay budget: 1.7-2.1 KB of write tokens, the fields,
# the expiry marker and Redis's own per-key bookkeeping (docs/scaling.md measures ~2.2 KB for
# an idle session of the default model, state included).
OVERHEAD = 4096


@pytest.fixture(scope="module")
@starts("redis-server")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    with RedisProcess(tmp_path_factory.mktemp("redis"), appendonly=False) as proc:
        yield proc


def wide_model(root: Path) -> Path:
    export_wide(root, hidden=16)
    return root


@pytest.mark.e2e
def test_redis_memory_per_session_is_bounded_by_the_replay_budget(redis_server: RedisProcess, tmp_path: Path) -> None:
    repository = wide_model(tmp_path / "repo")
    budget = Settings().replay_max_bytes
    settings = Settings(model_repository=repository, session_store=redis_server.url)
    direct = redis.Redis.from_url(redis_server.url)
    rng = np.random.default_rng(0)

    async def main() -> tuple[int, list[bytes]]:
        svc = build_services(settings, Metrics(), STEP_REPLY)
        await svc.store.start()
        try:
            state_bytes = svc.registry.get("wide", 1).state_bytes
            # Warm up first (connections opened, scripts cached): the growth is the sessions'.
            warm = (await svc.sessions.create("wide")).session_id
            await svc.engine.step(StepRequest(warm, rng.standard_normal((LENGTH, 1)).astype(np.float32), position=0))
            before = int(direct.info("memory")["used_memory"])
            ids = [(await svc.sessions.create("wide")).session_id for _ in range(SESSIONS)]
            replies = []
            for sid in ids:
                for k in range(STEPS):
                    steps = rng.standard_normal((LENGTH, 1)).astype(np.float32)
                    result = await svc.engine.step(StepRequest(sid, steps, position=k * LENGTH))
                    replies.append(result.payload)
            # A retry of the last step still gets its reply, byte for byte (recomputed).
            again = await svc.engine.step(StepRequest(sid, steps, position=(STEPS - 1) * LENGTH))
            assert again.replayed and again.payload == replies[-1]
            grown = int(direct.info("memory")["used_memory"]) - before
            per_session = grown / SESSIONS
            bound = state_bytes + max(budget, state_bytes) + OVERHEAD
            assert per_session <= bound, (per_session, bound)
            for sid in ids:  # and no one session's hash is larger
                assert direct.memory_usage(f"seqserve:s:{{{sid}}}") <= bound
            return state_bytes, replies
        finally:
            await svc.store.close()
            svc.executor.shutdown(wait=True)

    state_bytes, replies = asyncio.run(main())
    # What the bound is measured against: the replies a record of whole replies would keep.
    assert sum(len(r) for r in replies[-STEPS:]) > 50 * (state_bytes + budget + OVERHEAD)
