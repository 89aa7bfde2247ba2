"""The client's typed errors and the server's domain errors come from one table
(models/error_codes.py): every code the server can answer maps in the client to a class with
the table's status, and the server's error classes take their statuses from it too."""

from __future__ import annotations

import pytest

import seqserve.errors as client_errors
from models.error_codes import CODES, TABLE, status_of
from seqserve.errors import SeqserveError, error_from_body


def server_error_classes() -> list[type]:
    """Every domain error class of the server (core errors and the transports' own)."""
    import service.api.admin
    import service.api.middleware
    import service.core.v2  # noqa: F401  (InferenceRequestError)
    from service.core.errors import ServiceError

    found, todo = [], [ServiceError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_server_code_is_in_the_table_with_its_status() -> None:
    classes = server_error_classes()
    assert len(classes) > 15
    for cls in classes:
        assert cls.code in CODES, cls
        assert cls.status == status_of(cls.code), cls


def test_the_transports_refusals_are_in_the_table() -> None:
    """Codes the HTTP layer writes itself (before or outside the domain errors)."""
    from service.api.errors import CODES as HTTP_CODES

    for status, code in HTTP_CODES.items():
        assert status_of(code) == status
    for code in ("invalid_request", "too_many_connections", "headers_too_large", "header_timeout"):
        assert code in CODES


@pytest.mark.parametrize("entry", TABLE, ids=lambda e: e.code)
def test_every_code_maps_to_a_client_class_with_the_table_status(entry) -> None:
    error = error_from_body(entry.status, {"error": "x", "code": entry.code})
    assert error.status == entry.status and error.code == entry.code
    own = SeqserveError._by_code.get(entry.code)
    if own is not None:
        assert type(error) is own and own.status == entry.status
    elif entry.family is not None:
        assert isinstance(error, SeqserveError._by_code[entry.family])  # e.g. session_evicted: SessionExpired


def test_client_classes_of_table_codes_take_the_table_status() -> None:
    for cls in vars(client_errors).values():
        if isinstance(cls, type) and issubclass(cls, SeqserveError) and cls.code in CODES:
            assert cls.status == CODES[cls.code].status, cls


def test_model_changed_is_not_a_lost_session() -> None:
    error = error_from_body(410, {"error": "x", "code": "model_changed"})
    assert isinstance(error, client_errors.ModelChanged)
    assert not isinstance(error, client_errors.SessionLost)
    evicted = error_from_body(410, {"error": "x", "code": "session_evicted"})
    assert isinstance(evicted, client_errors.SessionExpired)
