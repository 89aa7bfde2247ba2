"""Create and fork with a client-chosen id are idempotent, on the memory store and a real
redis-server: a resend (its first reply lost) gets the session the first attempt created, so
no orphan is left counted against the quotas; another key's id or another model is a 409."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from seqserve import _requests
from service.api.codecs import STEP_REPLY
from service.core.engine import StepRequest
from service.core.errors import SessionExists
from service.core.metrics import Metrics
from service.core.services import build_services
from service.core.settings import Settings
from tests.support.counting import export_counting
from tests.support.redis import RedisProcess

pytestmark = pytest.mark.e2e  # a real redis-server

ID = "client-chosen-id-0123456789"
FORK = "client-chosen-fork-0123456789"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    with RedisProcess(tmp_path_factory.mktemp("redis"), appendonly=False) as proc:
        yield proc


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_a_resent_create_or_fork_finds_the_first_ones_session(
    store: str, redis_server: RedisProcess, tmp_path: Path
) -> None:
    export_counting(tmp_path / "repo", "count", 1)
    export_counting(tmp_path / "repo", "other", 1)
    url = "memory" if store == "memory" else redis_server.url + f"?prefix={tmp_path.name}:"
    settings = Settings(model_repository=tmp_path / "repo", session_store=url, max_sessions_per_key=2)
    svc = build_services(settings, Metrics(), STEP_REPLY)
    await svc.store.start()
    try:
        first = await svc.sessions.create("count", owner="a", request_id=ID)
        await svc.engine.step(StepRequest(ID, [[2.0]]), owner="a")
        again = await svc.sessions.create("count", owner="a", request_id=ID)  # the reply was lost
        assert again.session_id == first.session_id == ID and again.position == 1  # the same session
        fork = await svc.sessions.fork(ID, owner="a", request_id=FORK)
        fork_again = await svc.sessions.fork(ID, owner="a", request_id=FORK)
        assert fork.session_id == fork_again.session_id == FORK and fork_again.position == 1
        # Two sessions, the key's whole quota: the resends took no slot.
        with pytest.raises(Exception) as full:
            await svc.sessions.create("count", owner="a")
        assert getattr(full.value, "code", "") == "too_many_sessions"
        with pytest.raises(SessionExists):  # another key's id: not its session
            await svc.sessions.create("count", owner="b", request_id=ID)
        with pytest.raises(SessionExists):  # the same id for another model
            await svc.sessions.create("other", owner="a", request_id=FORK)
    finally:
        await svc.store.close()
        svc.executor.shutdown(wait=True)


def test_the_client_names_its_new_sessions_and_resends_the_same_id() -> None:
    create = _requests.create("count", ttl=60)
    fork = _requests.fork("parent")
    assert len(create.body["session_id"]) == 22 and len(fork.body["session_id"]) == 22
    assert create.content() == create.content()  # built once: every retry sends the same id
    assert _requests.create("count").body["session_id"] != create.body["session_id"]
