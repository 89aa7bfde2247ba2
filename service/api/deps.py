"""Access to the app's services from a route: the one object built at start-up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from service.api.gate import owner_of
from service.core.errors import NotReady

if TYPE_CHECKING:
    from service.core.services import Services


def services(conn: HTTPConnection) -> Services:
    svc = getattr(conn.app.state, "services", None)
    if svc is None:  # the admin listener can be asked before the data app has started
        raise NotReady("the service is starting")
    return svc


def owner(conn: HTTPConnection) -> str:
    """The session owner of this request: its API key's owner id ("" without keys)."""
    return owner_of(conn.scope)
