"""The OpenAPI document is drawn from the shapes that validate request bodies, and lists the
statuses every operation can answer; checked on the app itself (no server)."""

from __future__ import annotations

import pytest

from service.api import schemas
from service.app import create_app
from service.core.errors import InvalidInput
from service.core.settings import Settings


def _document(**settings) -> dict:
    return create_app(Settings(**settings)).openapi()


def test_request_bodies_are_the_validating_shapes() -> None:
    document = _document()
    components = document["components"]["schemas"]
    for shape in schemas.REQUEST_SHAPES:
        drawn = schemas.request_schema(shape)
        drawn.pop("$defs", None)
        assert components[shape.__name__] == drawn, shape.__name__
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            media = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if media is not None:
                name = media["schema"]["$ref"].rsplit("/", 1)[-1]
                assert any(shape.__name__ == name for shape in schemas.REQUEST_SHAPES), (method, path)


def test_every_body_example_passes_its_own_validation() -> None:
    for shape in schemas.REQUEST_SHAPES:
        for example in schemas.request_schema(shape).get("examples", []):
            assert schemas.validate(shape, example) == example, shape.__name__


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"inputs": [[1.0]], "position": "0"}, "position must be an integer"),
        ({"inputs": [[1.0]], "position": True}, "position must be an integer"),
        (
            {"inputs": [[1.0]], "position": -1},
            "position -1 is out of range: it must be an integer from 0 to 9007199254740991",
        ),
        (
            {"inputs": [[1.0]], "position": 1e30},
            "position 1e+30 is out of range: it must be an integer from 0 to 9007199254740991",
        ),
        ({"inputs": [[1.0]], "extra": 1}, "unknown fields ['extra']"),
        ({"position": 0}, "inputs is required"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_a_bad_step_body_is_refused_naming_the_field(body, words: str) -> None:
    with pytest.raises(InvalidInput) as info:
        schemas.validate(schemas.StepRequest, body)
    assert words in info.value.message


def test_401_is_documented_only_with_api_keys_and_never_on_public_paths() -> None:
    plain = _document()
    assert all("401" not in op["responses"] for ops in plain["paths"].values() for op in ops.values())
    keyed = _document(api_keys="a-key-of-some-length-0123456789")
    assert "401" in keyed["paths"]["/v1/models"]["get"]["responses"]
    assert "401" in keyed["paths"]["/v1/sessions/{session_id}/steps"]["post"]["responses"]
    assert "401" not in keyed["paths"]["/v2/health/live"]["get"]["responses"]


def test_the_plot_route_documents_the_content_types_it_answers(tmp_path) -> None:
    """200 is image/png, its 404 JSON (schemathesis found a PNG answer documented as JSON)."""
    from starlette.testclient import TestClient

    from service.app import create_asgi
    from tests.support.models import export_model

    export_model(tmp_path, "m", 1, "gru")
    (tmp_path / "m" / "1" / "forecast.png").write_bytes(b"\x89PNG\r\n\x1a\n not a real plot")
    settings = Settings(model_repository=tmp_path, grpc_port=0)
    operation = _document(model_repository=tmp_path, grpc_port=0)["paths"][
        "/v1/models/{name}/versions/{version}/files/{filename}"
    ]["get"]
    documented = {status: set(answer.get("content", {})) for status, answer in operation["responses"].items()}
    assert documented["200"] == {"image/png"} and documented["404"] == {"application/json"}
    with TestClient(create_asgi(settings)) as client:
        plot = client.get("/v1/models/m/versions/1/files/forecast.png")
        assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
        missing = client.get("/v1/models/m/versions/1/files/other.png")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
