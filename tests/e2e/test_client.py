"""The Python client against one real server: predict, sessions (step, fork, export, close),
bulk, the WebSocket stream, and recreate after a real expiry, each compared with a
stateless predict of the same readings."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest

from seqserve import AsyncClient, Client, InvalidInput, ModelNotFound, SessionExpired, SessionNotFound, Unauthorized
from tests.support.models import raw_inputs
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.e2e


def close(a, b) -> None:
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(1.0, float(np.abs(b).max())))


@pytest.fixture
def api(server):
    with Client(server.url) as c:
        yield c


def test_models_and_predict_forms(api):
    names = [m["name"] for m in api.models()]
    assert names == ["gru", "lstm"]
    assert api.model("lstm")["latest"] == 2
    x = raw_inputs(np.random.default_rng(1), 7).astype(np.float32)
    one = api.predict("lstm", x)
    assert one.shape == (7, 2)
    batch = api.predict("lstm", np.stack([x, x]))
    assert batch.shape == (2, 7, 2)
    close(batch[1], one)
    ragged = api.predict("lstm", [x, x[:3]])
    close(ragged[1], one[:3])  # same start state: a prefix gives the prefix's outputs
    frame = pd.DataFrame(x, columns=["temp", "load", "hour"], index=pd.RangeIndex(10, 17))
    out = api.predict("lstm", frame)
    assert list(out.columns) == ["y@t+1", "y@t+2"] and list(out.index) == list(range(10, 17))
    outputs, state = api.predict("lstm", x, version=1, return_state=True)
    assert outputs.shape == (7, 2)
    assert set(state) == {"h", "c"} and state["h"].shape == (2, 1, 16)
    with pytest.raises(ModelNotFound):
        api.predict("nope", x)
    with pytest.raises(InvalidInput):
        api.predict("lstm", x[:, :2])


def test_session_step_fork_export_close(api):
    x = raw_inputs(np.random.default_rng(2), 12).astype(np.float32)
    whole = api.predict("gru", x)
    with api.session("gru") as session:
        first = session.step(x[:5])
        fork = session.fork()
        state = session.export_state()
        rest = session.step(x[5:])
        close(np.concatenate([first, rest]), whole)
        assert session.position == 12
        close(fork.step(x[5:]), whole[5:])  # the fork continues from the same state
        moved = api.session("gru", state=state)  # exported state resumes elsewhere
        close(moved.step(x[5:]), whole[5:])
        moved.close()
        fork.close()
    with pytest.raises(SessionNotFound):  # the context manager deleted it
        session.info()


def test_bulk_step_many(api):
    rng = np.random.default_rng(3)
    xs = [raw_inputs(rng, 4).astype(np.float32) for _ in range(3)]
    sessions = [api.session("lstm") for _ in xs]
    out = api.step_many({s: x[:2] for s, x in zip(sessions, xs, strict=True)})
    out2 = api.step_many({s: x[2:] for s, x in zip(sessions, xs, strict=True)})
    for s, x in zip(sessions, xs, strict=True):
        close(np.concatenate([out[s], out2[s]]), api.predict("lstm", x))
        assert s.position == 4


def test_recreate_after_a_real_expiry(api):
    x = raw_inputs(np.random.default_rng(4), 10).astype(np.float32)
    whole = api.predict("lstm", x)
    session = api.session("lstm", ttl=1.0, recreate=True, checkpoint_every=4)
    outputs = [session.step(x[i : i + 1]) for i in range(6)]  # checkpoint at 4, 5 and 6 after it
    time.sleep(2.2)
    outputs.append(session.step(x[6:]))
    assert session.aio.recreated == 1 and session.position == 10
    close(np.concatenate(outputs), whole)
    plain = api.session("lstm", ttl=1.0)
    plain.step(x[:2])
    time.sleep(2.2)
    with pytest.raises((SessionExpired, SessionNotFound)) as caught:
        plain.step(x[2:4])
    assert caught.value.position == 2
    np.testing.assert_array_equal(caught.value.pending, x[2:4])


async def test_async_stream_in_chunks(server):
    x = raw_inputs(np.random.default_rng(5), 40).astype(np.float32)
    async with AsyncClient(server.url) as client:
        whole = await client.predict("lstm", x)
        async with client.session("lstm") as session:
            head = await session.step(x[:3])
            chunks = [x[i : i + 5] for i in range(3, 40, 5)]
            streamed = [y async for y in session.stream(chunks, window=4)]
            close(np.concatenate([head, *streamed]), whole)
            assert session.position == 40 and (await session.info())["position"] == 40


def test_stream_recreates_an_expired_session_and_continues(api):
    x = raw_inputs(np.random.default_rng(6), 16).astype(np.float32)
    whole = api.predict("lstm", x)

    def readings():
        for i, row in enumerate(x):
            if i == 9:
                time.sleep(2.2)  # idle past the TTL: the next message finds the session gone
            yield row

    session = api.session("lstm", ttl=1.0, recreate=True, checkpoint_every=4)
    outputs = list(session.stream(readings(), window=3))
    assert session.aio.recreated == 1 and session.position == 16
    close(np.stack(outputs), whole)


def test_stream_delivers_replies_while_the_source_waits(api):
    """A live source produces its next reading only after the previous output arrived: the
    stream must read replies while it waits for readings, not only when its window is full."""
    x = raw_inputs(np.random.default_rng(7), 6).astype(np.float32)
    delivered = threading.Event()

    def sensor():
        for i, row in enumerate(x):
            if i:
                assert delivered.wait(10), f"output {i - 1} was not delivered before reading {i} was asked for"
                delivered.clear()
            yield row

    session = api.session("lstm")
    outputs = []
    for y in session.stream(sensor(), window=16):
        outputs.append(y)
        delivered.set()
    close(np.stack(outputs), api.predict("lstm", x))


def test_stream_reraises_the_source_error(api):
    def broken():
        yield np.zeros(3, np.float32)
        raise OSError("sensor unplugged")

    session = api.session("lstm")
    outputs = []
    with pytest.raises(OSError, match="sensor unplugged"):
        for y in session.stream(broken()):
            outputs.append(y)
    assert len(outputs) == 1 and session.position == 1  # what was sent is finished first
    assert session.info()["position"] == 1


def test_leaving_a_stream_early_keeps_the_session_in_step(api):
    x = raw_inputs(np.random.default_rng(8), 40).astype(np.float32)
    session = api.session("lstm")
    for i, _ in enumerate(session.stream(x[:30], window=16)):
        if i == 4:
            break  # messages are still in flight
    assert session.position == session.info()["position"] >= 5
    rest = session.step(x[session.position :])
    close(rest, api.predict("lstm", x)[40 - len(rest) :])


def test_api_keys_on_rest_and_websocket(repository, tmp_path_factory):
    key = "client-test-key-0123456789"
    env = {"SEQSERVE_API_KEYS": key, "SEQSERVE_ADMIN_KEY": "client-test-admin-0123456789"}
    x = raw_inputs(np.random.default_rng(9), 6).astype(np.float32)
    with ServiceProcess(repository, tmp_path_factory.mktemp("keyed"), env) as server:
        with Client(server.url) as anonymous, pytest.raises(Unauthorized):
            anonymous.models()
        for header in ("authorization", "x-api-key"):
            with Client(server.url, api_key=key, auth_header=header) as api, api.session("gru") as session:
                head = session.step(x[:2])
                tail = list(session.stream(x[2:], window=4))  # the handshake carries the key too
                close(np.concatenate([head, np.stack(tail)]), api.predict("gru", x))


def test_model_changed_is_raised_not_recreated_from_the_old_graphs_state(tmp_path):
    """A session in Redis outlives a rebuild that made its model version another graph: the
    step is 410 model_changed, and a `recreate=True` session raises ModelChanged (with its
    position and the readings not applied) instead of rebuilding a session from a state
    exported from the old graph (which would be garbage, or the wrong shape, to the new one)."""
    from seqserve import ModelChanged
    from tests.support.counting import export_counting
    from tests.support.redis import RedisProcess
    from tests.support.servers import free_port

    repository = tmp_path / "repository"
    export_counting(repository, "counting", width=2)
    redis = RedisProcess(tmp_path / "redis").start()
    env = {"SEQSERVE_SESSION_STORE": redis.url + "?prefix=changed:"}
    port = free_port()
    try:
        before = ServiceProcess(repository, tmp_path, env, port=port).start()
        try:
            client = Client(before.url)
            session = client.session("counting", recreate=True, checkpoint_every=2)
            for reading in (1, 2, 3):
                session.step([[reading]])
        finally:
            before.stop()
        export_counting(repository, "counting", width=3)  # rebuilt: version 1 is another graph now
        after = ServiceProcess(repository, tmp_path, env, port=port).start()
        try:
            with pytest.raises(ModelChanged) as caught:
                session.step([[4]])
            assert caught.value.status == 410 and caught.value.code == "model_changed"
            assert caught.value.position == 3 and caught.value.session_id == session.session_id
            np.testing.assert_array_equal(caught.value.pending, [[4]])
            assert session.aio.recreated == 0 and session.position == 3
            import redis as redis_py

            keys = redis_py.Redis.from_url(redis.url).keys("changed:s:*")
            assert len(keys) == 1  # no session was created from the old state
            with pytest.raises(ModelChanged):  # the stream refuses the same way
                list(session.stream([[5]]))
            client.close()
        finally:
            after.stop()
    finally:
        redis.stop()
