"""Position-less steps are "apply next": several replicas (each its own engine, locks and
connection pool) stepping one session in a real redis-server all get applied, each exactly once,
however often they lose the check-and-set to each other; none is refused 409."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.api.codecs import STEP_REPLY
from service.core.engine import StepRequest
from service.core.errors import REFUSALS, PositionConflict
from service.core.metrics import Metrics
from service.core.services import Services, build_services
from service.core.settings import Settings
from tests.support.counting import export_counting
from tests.support.redis import RedisProcess
from tests.support.tier import starts

REPLICAS = 6
STEPS = 30  # per replica, all on one session, concurrently


@pytest.fixture(scope="module")
@starts("redis-server")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    with RedisProcess(tmp_path_factory.mktemp("redis"), appendonly=False) as proc:
        yield proc


@pytest.mark.e2e
def test_positionless_steps_from_many_replicas_are_all_applied(redis_server: RedisProcess, tmp_path: Path) -> None:
    export_counting(tmp_path / "repo", "count", 1)
    settings = Settings(model_repository=tmp_path / "repo", session_store=redis_server.url, inline_max_cost=0)

    async def main() -> None:
        replicas: list[Services] = [build_services(settings, Metrics(), STEP_REPLY) for _ in range(REPLICAS)]
        try:
            sid = (await replicas[0].sessions.create("count")).session_id

            async def stepping(svc: Services, value: float) -> list[BaseException]:
                errors: list[BaseException] = []
                for _ in range(STEPS):
                    try:
                        await svc.engine.step(StepRequest(sid, [[value]]))
                    except PositionConflict as exc:
                        errors.append(exc)
                return errors

            outcomes = await asyncio.gather(*(stepping(svc, float(k + 1)) for k, svc in enumerate(replicas)))
            refused = [e for errors in outcomes for e in errors]
            record = await replicas[0].store.load(sid)
            count, total = record.state[0][0]
            applied = REPLICAS * STEPS - len(refused)
            assert (int(count), record.position) == (applied, applied)  # never doubled
            assert not refused, f"{len(refused)} of {REPLICAS * STEPS} position-less steps refused 409"
            assert float(total) == STEPS * sum(range(1, REPLICAS + 1))
        finally:
            for svc in replicas:
                await svc.store.close()
                svc.executor.shutdown(wait=True)

    asyncio.run(main())


@pytest.mark.e2e
def test_a_refusal_after_the_last_round_is_a_409_and_counted(redis_server: RedisProcess, tmp_path: Path) -> None:
    """With one round only (SEQSERVE_APPLY_ATTEMPTS=1) contending replicas do get 409s: each is
    counted under seqserve_refusals_total{limit="apply_attempts"}, and none was applied."""
    export_counting(tmp_path / "repo", "count", 1)
    settings = Settings(
        model_repository=tmp_path / "repo", session_store=redis_server.url, inline_max_cost=0, apply_attempts=1
    )
    before = REFUSALS["apply_attempts"]

    async def main() -> tuple[int, int]:
        replicas = [build_services(settings, Metrics(), STEP_REPLY) for _ in range(REPLICAS)]
        try:
            sid = (await replicas[0].sessions.create("count")).session_id

            async def stepping(svc: Services) -> int:
                conflicts = 0
                for _ in range(STEPS):
                    try:
                        await svc.engine.step(StepRequest(sid, [[1.0]]))
                    except PositionConflict:
                        conflicts += 1
                return conflicts

            conflicts = sum(await asyncio.gather(*(stepping(svc) for svc in replicas)))
            record = await replicas[0].store.load(sid)
            assert int(record.state[0][0][0]) == REPLICAS * STEPS - conflicts
            return conflicts, int(record.position)
        finally:
            for svc in replicas:
                await svc.store.close()
                svc.executor.shutdown(wait=True)

    conflicts, _ = asyncio.run(main())
    assert conflicts > 0 and REFUSALS["apply_attempts"] - before == conflicts
    text = Metrics().render().decode()
    assert f'seqserve_refusals_total{{limit="apply_attempts"}} {float(REFUSALS["apply_attempts"])}' in text
