"""A model trained on a monthly file with default flags, served by a real server: `start_time` in
every format training reads, forecast times in the predict reply, and `client.forecast`
returning a future-indexed DataFrame equal to the stateless predict."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import pandas as pd
import pytest

from seqserve import Client
from seqserve.cli import main
from tests.support.servers import ServiceProcess
from tests.support.tier import starts

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def monthly(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    n = 72
    t = np.arange(n)
    rng = np.random.default_rng(4)
    return pd.DataFrame(
        {
            "month": pd.period_range("1990-01", periods=n, freq="M").strftime("%Y-%m"),
            "sales": 100 + 0.5 * t + 10 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 1, n),
        }
    )


@pytest.fixture(scope="module")
@starts("a service process")
def server(monthly: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    work = tmp_path_factory.mktemp("monthly")
    monthly.to_csv(work / "sales.csv", index=False)
    repo = work / "repo"
    argv = ["train", "--data", str(work / "sales.csv"), "--target", "sales", "--repository", str(repo)]
    assert main([*argv, "--quiet", "--epochs", "4", "--baselines", "naive", "--allow-worse"]) == 0
    with ServiceProcess(repo, work) as proc:
        yield proc


def post(server: ServiceProcess, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/sales/predict", json=body, timeout=30)


@pytest.mark.parametrize(
    "start",
    ["1990-01", "1990-01-01", "1990/01/01 00:00", "1990Q1", 631152000, "1990-01-01T01:00:00+01:00", "1990"],
)
def test_start_time_formats_and_forecast_times(server: ServiceProcess, monthly: pd.DataFrame, start: object) -> None:
    x = monthly[["sales"]].to_numpy()[:5].tolist()
    reply = post(server, {"inputs": [x], "start_time": start})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["forecast_times"][0] == [[f"1990-0{m}-01T00:00:00Z"] for m in range(2, 7)]
    reference = post(server, {"inputs": [x], "start_time": "1990-01-01T00:00:00Z"}).json()
    assert body["outputs"] == reference["outputs"]


def test_without_a_start_time_there_are_no_forecast_times(server: ServiceProcess, monthly: pd.DataFrame) -> None:
    body = post(server, {"inputs": [monthly[["sales"]].to_numpy()[:3].tolist()]}).json()
    assert body.get("forecast_times") is None


def test_a_bad_start_time_is_a_422_naming_the_formats(server: ServiceProcess) -> None:
    reply = post(server, {"inputs": [[[1.0]]], "start_time": "1990Q5"})
    assert reply.status_code == 422 and reply.json()["field"] == "start_time"
    assert "1990Q1" in reply.json()["error"]


def test_client_forecast_is_future_indexed_and_equals_predict(server: ServiceProcess, monthly: pd.DataFrame) -> None:
    with Client(server.url) as api:
        frame = api.forecast("sales", monthly, time_column="month")
        assert frame.columns[0] == "sales@t+1"
        # The quantile columns and anomaly flags, as predict returns them for a DataFrame.
        assert {"sales@t+1:q0.1", "sales@t+1:q0.9", "outside_95"} <= set(frame.columns)
        whole = api.predict("sales", monthly[["sales"]], start_time="1990-01")
        pd.testing.assert_frame_equal(frame.reset_index(drop=True), whole.reset_index(drop=True))
        frame = frame[["sales@t+1"]]
        assert frame.index[0] == pd.Timestamp("1990-02-01", tz="UTC")
        assert frame.index[-1] == pd.Timestamp("1996-01-01", tz="UTC")  # after the last month, 1995-12
        predicted = api.predict("sales", monthly[["sales"]].to_numpy(np.float32), start_time="1990-01")
        np.testing.assert_array_equal(frame.to_numpy(), predicted)
        indexed = api.forecast("sales", monthly.set_index(pd.DatetimeIndex(pd.to_datetime(monthly["month"]))))
        np.testing.assert_array_equal(indexed[["sales@t+1"]].to_numpy(), predicted)


def test_v2_stateless_reply_carries_the_forecast_times(server: ServiceProcess, monthly: pd.DataFrame) -> None:
    x = monthly["sales"].to_numpy()[:3].tolist()
    body = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 1], "data": x}],
        "parameters": {"start_time": "1990Q1"},
    }
    reply = httpx.post(f"{server.url}/v2/models/sales/infer", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    times = json.loads(reply.json()["parameters"]["forecast_times"])
    assert times == [[["1990-02-01T00:00:00Z"], ["1990-03-01T00:00:00Z"], ["1990-04-01T00:00:00Z"]]]
    plain = httpx.post(f"{server.url}/v2/models/sales/infer", json={"inputs": body["inputs"]}, timeout=30).json()
    assert "forecast_times" not in (plain.get("parameters") or {})


def test_a_start_time_too_late_to_label_is_a_422_not_a_500(server: ServiceProcess) -> None:
    """9999-12-31's first forecast is for January 10000; 9999-01 with 12 readings forecasts
    it too: refused naming start_time at predict, at session creation and over V2."""
    for start, readings in (("9999-12-31", 1), ("9999-01", 12)):
        reply = post(server, {"inputs": [[[1.0]] * readings], "start_time": start})
        assert reply.status_code == 422, reply.text
        assert reply.json()["field"] == "start_time" and "too late" in reply.json()["error"]
    assert post(server, {"inputs": [[[1.0]] * 11], "start_time": "9999-01"}).status_code == 200
    created = httpx.post(f"{server.url}/v1/models/sales/sessions", json={"start_time": "9999-12-31"}, timeout=30)
    assert created.status_code == 422 and created.json()["field"] == "start_time", created.text
    body = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 1], "data": [1.0]}],
        "parameters": {"start_time": "9999-12-31"},
    }
    reply = httpx.post(f"{server.url}/v2/models/sales/infer", json=body, timeout=30)
    assert reply.status_code == 400 and "start_time" in reply.text, reply.text


def test_any_day_of_a_month_gets_that_months_phase(server: ServiceProcess, monthly: pd.DataFrame) -> None:
    """The phase follows the calendar month (as the forecast times do): 1990-01-31 is January,
    so its phase and forecasts equal 1990-01's; 1990-02-01 is one month on."""
    x = [monthly[["sales"]].to_numpy()[:13].tolist()]

    def reply(start: str) -> dict:
        return post(server, {"inputs": x, "start_time": start, "return_state": True}).json()

    january = reply("1990-01")
    for start in ("1990-01-31", "1990-01-31T23:30:00Z", "1990-01-15"):
        assert reply(start)["outputs"] == january["outputs"]
        assert reply(start)["state"]["phase"] == january["state"]["phase"]
    february = reply("1990-02-01")["state"]["phase"][0][0][0]
    assert february == (january["state"]["phase"][0][0][0] + 1) % 12


def test_start_time_takes_the_day_first_dates_training_reads(server: ServiceProcess, monthly: pd.DataFrame) -> None:
    """31/01/1990 trains (a day/month/year column): as a start_time it is 31 January 1990, in
    January's phase; 01/02/1990 alone is ambiguous and refused naming start_time."""
    x = [monthly[["sales"]].to_numpy()[:4].tolist()]
    january = post(server, {"inputs": x, "start_time": "1990-01"}).json()
    reply = post(server, {"inputs": x, "start_time": "31/01/1990"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"] == january["outputs"]
    assert reply.json()["forecast_times"][0][0] == ["1990-02-28T00:00:00Z"]
    ambiguous = post(server, {"inputs": x, "start_time": "01/02/1990"})
    assert ambiguous.status_code == 422 and ambiguous.json()["field"] == "start_time"
    assert "ambiguous" in ambiguous.json()["error"]


def test_client_forecast_reads_the_time_column_as_training_does(server: ServiceProcess, monthly: pd.DataFrame) -> None:
    """A day-first column (01/02/1990 = 1 February, decided by the column), a newest-first
    frame (sorted, with a warning) and duplicated times (refused naming the rows)."""
    with Client(server.url) as api:
        reference = api.forecast("sales", monthly, time_column="month")
        day_first = monthly.assign(month=pd.to_datetime(monthly["month"]).dt.strftime("%d/%m/%Y"))
        pd.testing.assert_frame_equal(api.forecast("sales", day_first, time_column="month"), reference)
        with pytest.warns(UserWarning, match="newest first"):
            reversed_frame = api.forecast("sales", monthly.iloc[::-1], time_column="month")
        pd.testing.assert_frame_equal(reversed_frame, reference)
        doubled = pd.concat([monthly.iloc[:3], monthly.iloc[2:5]])
        with pytest.raises(ValueError, match=r"duplicated times: rows \[3, 4\] are all at 1990-03-01"):
            api.forecast("sales", doubled, time_column="month")
        with pytest.raises(ValueError, match="does not hold times"):
            api.forecast("sales", monthly.assign(month="soon"), time_column="month")


def test_client_forecast_fills_missing_months_as_training_does(server: ServiceProcess, monthly: pd.DataFrame) -> None:
    """Two months dropped from the frame: filled by linear interpolation against the model's
    monthly period (with a warning naming how many), so the forecasts and their labels equal
    those of the frame with those months filled in; the last row is still labelled for the
    month after the last one. Daily rows for this monthly model are refused."""
    gappy = monthly.drop(index=[10, 40]).reset_index(drop=True)
    filled = monthly.copy()
    for i in (10, 40):
        filled.loc[i, "sales"] = (monthly["sales"][i - 1] + monthly["sales"][i + 1]) / 2
    with Client(server.url) as api:
        with pytest.warns(UserWarning, match=r"misses 2 time\(s\) of model 'sales''s monthly period, first 1990-11-01"):
            frame = api.forecast("sales", gappy, time_column="month")
        reference = api.forecast("sales", filled, time_column="month")
        pd.testing.assert_frame_equal(frame, reference, check_exact=False, rtol=1e-6)
        assert frame.index[-1] == pd.Timestamp("1996-01-01", tz="UTC")
        assert frame.attrs["filled"] == ["1990-11-01T00:00:00Z", "1993-05-01T00:00:00Z"]
        daily = monthly.iloc[:5].assign(month=pd.date_range("1990-01-01", periods=5, freq="D").strftime("%Y-%m-%d"))
        with pytest.raises(ValueError, match="do not fit model 'sales''s monthly period: row 2"):
            api.forecast("sales", daily, time_column="month")


def _session(server: ServiceProcess, **body: object) -> str:
    created = httpx.post(f"{server.url}/v1/models/sales/sessions", json=body, timeout=30)
    assert created.status_code == 201, created.text
    return created.json()["session_id"]


def _step(server: ServiceProcess, sid: str, rows: list, position: int | None = None) -> dict:
    body: dict = {"inputs": rows} if position is None else {"inputs": rows, "position": position}
    reply = httpx.post(f"{server.url}/v1/sessions/{sid}/steps", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_session_steps_carry_the_times_predict_gives_the_whole_sequence(
    server: ServiceProcess, monthly: pd.DataFrame
) -> None:
    """Streaming a series in uneven chunks labels every forecast as predict labels the whole
    sequence: reading i at start + i months, whatever the chunk it came in."""
    x = monthly[["sales"]].to_numpy()[:14].tolist()
    whole = post(server, {"inputs": [x], "start_time": "1990-03-31"}).json()
    sid = _session(server, start_time="1990-03-31")
    outputs, times = [], []
    for lo, hi in ((0, 1), (1, 5), (5, 6), (6, 14)):
        reply = _step(server, sid, x[lo:hi])
        assert reply["position"] == hi and len(reply["forecast_times"]) == hi - lo
        outputs += reply["outputs"]
        times += reply["forecast_times"]
    assert times == whole["forecast_times"][0]
    assert times[0] == ["1990-04-30T00:00:00Z"] and times[2] == ["1990-06-30T00:00:00Z"]
    np.testing.assert_allclose(outputs, whole["outputs"][0], rtol=1e-5, atol=1e-4)
    plain = _session(server)
    assert "forecast_times" not in _step(server, plain, x[:2])


def test_fork_export_import_and_replayed_retry_keep_the_times(server: ServiceProcess, monthly: pd.DataFrame) -> None:
    x = monthly[["sales"]].to_numpy()[:8].tolist()
    whole = post(server, {"inputs": [x], "start_time": "1990-01"}).json()["forecast_times"][0]
    sid = _session(server, start_time="1990-01")
    _step(server, sid, x[:3], position=0)
    first = _step(server, sid, x[3:5], position=3)
    assert first["forecast_times"] == whole[3:5]
    retried = httpx.post(f"{server.url}/v1/sessions/{sid}/steps", json={"inputs": x[3:5], "position": 3}, timeout=30)
    assert retried.status_code == 200 and retried.json() == first  # the replay: same reply, same times
    fork = httpx.post(f"{server.url}/v1/sessions/{sid}/fork", timeout=30).json()["session_id"]
    assert _step(server, fork, x[5:8])["forecast_times"] == whole[5:8]
    info = httpx.get(f"{server.url}/v1/sessions/{sid}", params={"include_state": "true"}, timeout=30).json()
    assert info["start_time"] == "1990-01-01T00:00:00Z" and info["next_time"] == "1990-06-01T00:00:00Z"
    imported = _session(server, state=info["state"], resume_time=info["next_time"])
    assert _step(server, imported, x[5:8])["forecast_times"] == whole[5:8]
    assert _step(server, sid, x[5:8])["forecast_times"] == whole[5:8]


def test_websocket_and_bulk_steps_carry_the_times(server: ServiceProcess, monthly: pd.DataFrame) -> None:
    from websockets.sync.client import connect

    x = monthly[["sales"]].to_numpy()[:4].tolist()
    whole = post(server, {"inputs": [x], "start_time": "1990Q2"}).json()["forecast_times"][0]
    sid = _session(server, start_time="1990Q2")
    with connect(f"ws://127.0.0.1:{server.port}/v1/sessions/{sid}/stream") as ws:
        ws.send(json.dumps({"inputs": x[:2]}))
        assert json.loads(ws.recv())["forecast_times"] == whole[:2]
    bulk = httpx.post(
        f"{server.url}/v1/models/sales/sessions/steps",
        json={"steps": [{"session_id": sid, "inputs": x[2:4]}]},
        timeout=30,
    )
    assert bulk.status_code == 200, bulk.text
    assert bulk.json()["results"][0]["forecast_times"] == whole[2:4]


def test_v2_sequence_steps_carry_the_times_over_http_and_grpc(server: ServiceProcess, monthly: pd.DataFrame) -> None:
    import tritonclient.grpc as grpcclient

    x = monthly["sales"].to_numpy(np.float32)[:5]
    whole = post(server, {"inputs": [x[:, None].tolist()], "start_time": "1990-01"}).json()["forecast_times"][0]

    def tensor(chunk: np.ndarray) -> dict:
        return {"name": "input", "datatype": "FP32", "shape": [1, len(chunk), 1], "data": chunk.tolist()}

    times = []
    for lo, hi in ((0, 2), (2, 5)):
        params: dict = {"sequence_id": "st", "sequence_position": lo}
        if lo == 0:
            params |= {"sequence_start": True, "start_time": "1990-01"}
        body = {"inputs": [tensor(x[lo:hi])], "parameters": params}
        reply = httpx.post(f"{server.url}/v2/models/sales/infer", json=body, timeout=30)
        assert reply.status_code == 200, reply.text
        times += json.loads(reply.json()["parameters"]["forecast_times"])[0]
        if lo == 2:  # a resend of the step (its reply lost): replayed, with the same times
            again = httpx.post(f"{server.url}/v2/models/sales/infer", json=body, timeout=30)
            assert again.status_code == 200 and again.json()["parameters"] == reply.json()["parameters"]
    assert times == whole
    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as triton:
        got = []
        for lo, hi in ((0, 3), (3, 5)):
            data = grpcclient.InferInput("input", [1, hi - lo, 1], "FP32")
            data.set_data_from_numpy(x[None, lo:hi, None])
            extra = {"start_time": "1990-01"} if lo == 0 else {}
            result = triton.infer("sales", [data], sequence_id=7, sequence_start=lo == 0, parameters=extra)
            got += json.loads(result.get_response().parameters["forecast_times"].string_param)[0]
    assert got == whole


def test_client_predict_picks_the_model_columns_of_a_frame(server: ServiceProcess, monthly: pd.DataFrame) -> None:
    """A frame that still holds its time column: predict reads the model's features by name;
    a frame without them is a ValueError naming them, not numpy's 'could not convert'."""
    with Client(server.url) as api:
        whole = api.predict("sales", monthly)  # month, sales
        pd.testing.assert_frame_equal(whole, api.predict("sales", monthly[["sales"]]))
        assert whole.index.equals(monthly.index) and whole.columns[0] == "sales@t+1"
        assert str(whole["outside_95"].dtype) == "boolean"
        with pytest.raises(ValueError, match=r"lacks the model's input column\(s\) \['sales'\]"):
            api.predict("sales", monthly.rename(columns={"sales": "pax"}))


def test_resume_time_is_checked_like_start_time(server: ServiceProcess) -> None:
    state = httpx.get(f"{server.url}/v1/sessions/{_session(server)}", params={"include_state": "true"}, timeout=30)
    exported = state.json()["state"]
    url = f"{server.url}/v1/models/sales/sessions"
    for body, why in (
        ({"resume_time": "1990-01"}, "with state"),
        ({"state": exported, "resume_time": "1990Q5"}, "1990Q1"),
        ({"state": exported, "resume_time": "9999-12-31"}, "too late"),
    ):
        reply = httpx.post(url, json=body, timeout=30)
        assert reply.status_code == 422 and reply.json()["field"] == "resume_time", reply.text
        assert why in reply.json()["error"]


def test_a_stream_run_past_year_9999_steps_without_labels(server: ServiceProcess) -> None:
    """Created in November 9999 (its first forecast, December, can be written), a session may
    run on: the step whose forecasts would fall in year 10000 is answered, unlabelled."""
    sid = _session(server, start_time="9999-11")
    assert _step(server, sid, [[1.0]])["forecast_times"] == [["9999-12-01T00:00:00Z"]]
    assert "forecast_times" not in _step(server, sid, [[1.0]])
    info = httpx.get(f"{server.url}/v1/sessions/{sid}", timeout=30).json()
    assert info["start_time"] == "9999-11-01T00:00:00Z" and "next_time" not in info


def test_the_client_session_keeps_its_times_through_a_recreation(server: ServiceProcess, monthly: pd.DataFrame) -> None:
    """A recreate=True session whose server-side session is lost resumes from its last export,
    labelled from the time the service gave with it (resume_time)."""
    x = monthly[["sales"]].to_numpy()[:6]
    whole = post(server, {"inputs": [x.tolist()], "start_time": "1990-01"}).json()["forecast_times"][0]
    with Client(server.url) as api:
        session = api.session("sales", recreate=True, checkpoint_every=2, start_time="1990-01")
        session.step(x[:2])
        assert session.last_forecast_times == whole[:2]
        session.step(x[2:4])
        assert httpx.delete(f"{server.url}/v1/sessions/{session.session_id}", timeout=30).status_code == 204
        session.step(x[4:6])
        assert session.aio.recreated == 1 and session.position == 6
        assert session.last_forecast_times == whole[4:6]
