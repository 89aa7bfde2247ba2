"""Access to the app's services from a route: the one object built at start-up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from service.app import Services


def services(conn: HTTPConnection) -> Services:
    return conn.app.state.services
