"""The service against its own OpenAPI document (schemathesis, over a real uvicorn process).

Every operation in the served /openapi.json gets generated requests, valid and invalid (bounded
per operation); each response must not be a 5xx (`not_a_server_error`), its status must be one
the operation documents (`status_code_conformance`), and it must conform to the schema the
document declares for that status (`response_schema_conformance`). Random path
parameters would only ever reach 404s, so about half of the cases are pointed at things that
exist: a loaded model name and version, and a fresh real session (one per case, so a DELETE or
a step in one case cannot disturb the next).

schemathesis 4.x's pytest plugin (`schemathesis.pytest.from_fixture`) does not work with the
installed pytest 9 (AttributeError: 'Function' object has no attribute '_nodeid'), so operations
are parametrized here (labels from the app's own document, collected without a server) and each
runs one Hypothesis test over `operation.as_strategy(...)` of the schema loaded from the server
with `schemathesis.openapi.from_url`.
"""

from __future__ import annotations

import contextlib
import random

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    FailureGroup,
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.openapi.checks import UndefinedStatusCode

from service.app import create_app
from service.core.settings import Settings

pytestmark = pytest.mark.e2e

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
PLOT = "forecast.png"  # written next to lstm v1, so that the plot route answers its PNG too
MAX_EXAMPLES = 25


def _labels() -> list[str]:
    doc = create_app(Settings()).openapi()
    return [r.ok().label for r in schemathesis.openapi.from_dict(doc).get_all_operations()]


LABELS = _labels()


@pytest.fixture(scope="module")
def api_schema(server, repository):
    (repository / "lstm" / "1" / PLOT).write_bytes(b"\x89PNG\r\n\x1a\n(a plot)")
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def _point_at_real_things(case, base_url: str, rng: random.Random) -> None:
    params = case.path_parameters
    if not params:
        return
    if "name" in params and rng.random() < 0.6:
        params["name"] = rng.choice(["lstm", "gru"])
        if "version" in params and rng.random() < 0.7:
            params["version"] = "1"
            if "filename" in params and rng.random() < 0.7:
                params["filename"] = PLOT
    if "session_id" in params and rng.random() < 0.6:
        r = httpx.post(f"{base_url}/v1/models/{rng.choice(['lstm', 'gru'])}/sessions", timeout=10)
        assert r.status_code == 201, r.text
        params["session_id"] = r.json()["session_id"]


def _strategy(operation):
    strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
    with contextlib.suppress(Exception):  # an operation with nothing to negate
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
    return st.one_of(strategies)


def test_every_operation_is_covered(api_schema) -> None:
    served = [r.ok().label for r in api_schema.get_all_operations()]
    assert sorted(served) == sorted(LABELS)


@pytest.mark.parametrize("label", LABELS)
def test_operation_conforms_to_its_openapi_document(api_schema, server, label: str) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label
    rng = random.Random(label)

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    @given(case=_strategy(operation))
    def check(case) -> None:
        _point_at_real_things(case, server.url, rng)
        case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=30)

    check()


def test_server_healthy_after_fuzzing(server) -> None:
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200


# Cases generation reaches only by chance, pinned so that they are checked on every run.
EXPLICIT = [
    # a bulk entry without a session_id string: its result says "session_id": null
    ("POST /v1/models/{name}/sessions/steps", {"name": "lstm"}, {"steps": [{"inputs": [[1.0, 2.0, 3.0]]}]}),
    ("POST /v1/models/{name}/sessions/steps", {"name": "lstm"}, {"steps": [5]}),
]


@pytest.mark.parametrize(("label", "path_parameters", "body"), EXPLICIT, ids=["bulk entry without id", "bulk entry 5"])
def test_explicit_cases_conform(api_schema, server, label, path_parameters, body) -> None:
    operation = api_schema.find_operation_by_label(label)
    case = operation.Case(path_parameters=path_parameters, body=body, media_type="application/json")
    case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=30)


def test_an_undocumented_status_is_caught(server) -> None:
    """The conformance check is live: with 409 taken out of the steps operation's document, a
    position conflict (a real 409 from the server) fails the checks."""
    document = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    del document["paths"]["/v1/sessions/{session_id}/steps"]["post"]["responses"]["409"]
    operation = schemathesis.openapi.from_dict(document).find_operation_by_label("POST /v1/sessions/{session_id}/steps")
    sid = httpx.post(f"{server.url}/v1/models/lstm/sessions", timeout=10).json()["session_id"]
    body = {"inputs": [[20.0, 500.0, 12.0]], "position": 7}
    case = operation.Case(path_parameters={"session_id": sid}, body=body, media_type="application/json")
    with pytest.raises(FailureGroup) as info:
        case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=30)
    assert info.group_contains(UndefinedStatusCode, match="Undocumented status code")
