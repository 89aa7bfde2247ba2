"""The client's protocol handling against a scripted fake service (tests/client/fake.py):
every fault ends with each reading applied exactly once and the outputs of exactly those
readings returned, or with a typed error that says what was not applied."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from seqserve import (
    AsyncClient,
    BulkStepError,
    Client,
    ModelChanged,
    PositionConflict,
    RetryPolicy,
    SessionExpired,
    SessionLost,
    SessionNotFound,
    TransportFailure,
)
from seqserve.errors import (
    LimitExceeded,
    ModelNotFound,
    NotReady,
    PayloadTooLarge,
    ServerError,
    TooManySessions,
    Unauthorized,
    error_from_body,
)
from tests.client.fake import FakeService

FAST = RetryPolicy(attempts=6, base=0.001, cap=0.005, deadline=5.0)


@pytest.fixture
def fake() -> FakeService:
    return FakeService()


@pytest.fixture
def client(fake: FakeService):
    with Client("http://fake", transport=fake.transport(), retry=FAST) as c:
        yield c


def test_lost_response_is_resent_and_applied_once(fake, client):
    session = client.session("sum")
    fake.script = ["lose"]
    y = session.step([[1.0], [2.0]])
    np.testing.assert_array_equal(y, [[1.0], [3.0]])
    assert fake.applied == 2 and fake.step_requests == 2  # the resend was answered from the record
    assert session.position == 2
    np.testing.assert_array_equal(session.step([[4.0]]), [[7.0]])


def test_connection_failure_before_the_server_is_resent(fake, client):
    session = client.session("sum")
    fake.script = ["drop", "drop"]
    np.testing.assert_array_equal(session.step([[5.0]]), [[5.0]])
    assert fake.applied == 1 and fake.step_requests == 3


def test_409_after_a_lost_response_fetches_the_replay(fake, client):
    session = client.session("sum")
    session.step([[1.0]])
    # applied + reply lost; the resend loses a race to the original and gets 409 with the
    # position our own request explains; the identical request again gets the recorded reply
    fake.script = ["lose", "race"]
    y = session.step([[10.0], [20.0]])
    np.testing.assert_array_equal(y, [[11.0], [31.0]])
    assert fake.applied == 3 and session.position == 3


def test_409_from_a_competing_writer_raises_and_applies_nothing(fake, client):
    session = client.session("sum")
    session.step([[1.0]])
    fake.competing_step(session.session_id, 100.0)
    with pytest.raises(PositionConflict) as caught:
        session.step([[1.0]])
    assert caught.value.server_position == 2 and caught.value.client_position == 1
    assert session.position == 1 and fake.applied == 2  # ours was not applied, nothing skipped


def test_409_from_a_competing_writer_with_the_same_step_count_is_not_taken_for_ours(fake, client):
    session = client.session("sum")
    fake.competing_step(session.session_id, 100.0)  # one step, like ours, but other readings
    with pytest.raises(PositionConflict):
        session.step([[1.0]])
    assert fake.applied == 1


def test_410_raises_with_what_was_lost(fake, client):
    session = client.session("sum")
    session.step([[1.0], [2.0]])
    fake.sessions[session.session_id].expired = True
    with pytest.raises(SessionExpired) as caught:
        session.step([[3.0]])
    assert caught.value.position == 2 and caught.value.session_id == session.session_id
    np.testing.assert_array_equal(caught.value.pending, [[3.0]])


def test_404_raises_session_not_found(fake, client):
    session = client.session("sum")
    del fake.sessions[session.session_id]
    with pytest.raises(SessionNotFound) as caught:
        session.step([[3.0]])
    assert caught.value.position == 0


def test_410_with_recreate_continues_from_the_last_exported_state(fake, client):
    session = client.session("sum", recreate=True, checkpoint_every=3)
    outputs = [session.step([[float(v)]]) for v in range(1, 6)]  # checkpoint at 3, journal 4, 5
    old = session.session_id
    fake.sessions[old].expired = True
    y = session.step([[6.0]])
    assert session.session_id != old and session.position == 6
    np.testing.assert_array_equal(np.concatenate([*outputs, y]).ravel(), np.cumsum(np.arange(1, 7)))
    new = fake.sessions[session.session_id]
    assert new.position == 3 and new.total == 21.0  # re-applied 4, 5 onto the checkpoint, then 6


@pytest.mark.parametrize("bulk", [False, True])
def test_model_changed_with_recreate_raises_and_rebuilds_nothing(fake, client, bulk):
    """410 model_changed is not a lost session: the exported state belongs to the graph that
    was replaced, so a recreate=True session raises ModelChanged instead of creating a new
    session from it."""
    session = client.session("sum", recreate=True, checkpoint_every=2)
    for v in (1.0, 2.0, 3.0):
        session.step([[v]])
    fake.sessions[session.session_id].model_changed = True
    with pytest.raises(ModelChanged) as caught:
        if bulk:
            try:
                client.step_many({session: [[4.0]]})
            except BulkStepError as exc:
                raise exc.errors[session] from None
        else:
            session.step([[4.0]])
    assert not isinstance(caught.value, SessionLost)
    assert caught.value.status == 410 and caught.value.position == 3
    np.testing.assert_array_equal(caught.value.pending, [[4.0]])
    assert len(fake.sessions) == 1 and session.aio.recreated == 0 and fake.applied == 3


def test_503_then_success(fake, client):
    session = client.session("sum")
    fake.script = [503, 502, 504, 429]
    np.testing.assert_array_equal(session.step([[2.0]]), [[2.0]])
    assert fake.step_requests == 5 and fake.applied == 1


def test_retry_budget_is_bounded(fake, client):
    session = client.session("sum")
    fake.script = [503] * 20
    with pytest.raises(TransportFailure) as caught:
        session.step([[2.0]])
    assert caught.value.status == 503
    assert fake.step_requests == FAST.attempts and fake.applied == 0 and session.position == 0
    fake.script = []
    np.testing.assert_array_equal(session.step([[2.0]]), [[2.0]])  # the same readings again: safe


def test_backoff_is_jittered_and_capped():
    policy = RetryPolicy(base=0.1, cap=0.4)
    delays = [policy.delay(k) for k in range(8) for _ in range(50)]
    assert max(delays) <= 0.4 and min(delays) >= 0.0
    assert len({round(d, 6) for d in delays}) > 100  # random, not a fixed schedule


def test_bulk_lost_reply_applies_each_entry_once(fake, client):
    a, b = client.session("sum"), client.session("sum")
    fake.script = ["lose"]
    out = client.step_many({a: [[1.0]], b: [[2.0], [3.0]]})
    np.testing.assert_array_equal(out[a], [[1.0]])
    np.testing.assert_array_equal(out[b], [[2.0], [5.0]])
    assert fake.applied == 3 and (a.position, b.position) == (1, 2)


def test_bulk_reports_failed_entries_and_keeps_the_rest(fake, client):
    a, b = client.session("sum"), client.session("sum")
    fake.sessions[b.session_id].expired = True
    with pytest.raises(BulkStepError) as caught:
        client.step_many({a: [[1.0]], b: [[2.0]]})
    assert isinstance(caught.value.errors[b], SessionExpired)
    np.testing.assert_array_equal(caught.value.results[a], [[1.0]])


def test_context_manager_deletes_the_session(fake, client):
    with client.session("sum") as session:
        session.step([[1.0]])
        sid = session.session_id
    assert sid not in fake.sessions


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (401, "unauthorized", Unauthorized),
        (404, "model_not_found", ModelNotFound),
        (413, "payload_too_large", PayloadTooLarge),
        (422, "limit_exceeded", LimitExceeded),
        (429, "too_many_sessions", TooManySessions),
        (503, "not_ready", NotReady),
        (500, "internal_error", ServerError),
        (502, None, ServerError),
    ],
)
def test_error_codes_map_to_types(status, code, cls):
    error = error_from_body(status, {"error": "x", "code": code} if code else "<html>bad gateway</html>")
    assert type(error) is cls and error.status == status


async def test_async_client_same_protocol(fake):
    async with AsyncClient("http://fake", transport=fake.transport(), retry=FAST) as client:
        async with client.session("sum") as session:
            fake.script = ["lose", "race", 503]
            y = await session.step([[1.5], [1.5]])
            np.testing.assert_array_equal(y, [[1.5], [3.0]])
        assert fake.applied == 2 and not fake.sessions


@pytest.mark.parametrize(
    ("header", "sent"),
    [("authorization", ("authorization", "Bearer k-1")), ("x-api-key", ("x-api-key", "k-1"))],
)
def test_api_key_goes_on_every_request(fake, header, sent):
    seen = []
    inner = fake.transport()

    def spy(request):
        seen.append(request.headers.get(sent[0]))
        return inner.handler(request)

    client = Client("http://fake", api_key="k-1", auth_header=header, transport=httpx.MockTransport(spy))
    with client, client.session("sum") as session:
        session.step([[1.0]])
    assert seen == [sent[1]] * 3  # create, step, delete
