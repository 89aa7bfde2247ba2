"""API keys: the data plane's keys (several, each owning its sessions) and the admin key.

Keys are held as SHA-256 digests only. A configured entry is either `sha256:<64 hex>` (the
digest of the key, so the plaintext never reaches the server's configuration) or a plaintext
key, hashed as it is read and then forgotten. A request presents its key as `X-API-Key: <key>`
or `Authorization: Bearer <key>`; the server hashes what it was given and looks the digest
up. Looking up a SHA-256 digest leaks nothing useful through timing (an attacker cannot
steer the digest of a guess), and the admin key is compared with `secrets.compare_digest`.

A key's *owner id* (the first 128 bits of its digest, hex) is what sessions record as their
owner: it identifies the key without being the key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from service.core.errors import Unauthorized

if TYPE_CHECKING:
    from service.core.settings import Settings

HASHED = re.compile(r"sha256:([0-9a-fA-F]{64})")
MIN_PLAINTEXT_CHARS = 16
OWNER_HEX_CHARS = 32
HOW = "send it as X-API-Key: <key> or Authorization: Bearer <key>"


class KeyConfigError(ValueError):
    """A key setting that cannot be used; the server refuses to start with the reason."""


def digest_of(key: str | bytes) -> str:
    raw = key.encode() if isinstance(key, str) else key
    return hashlib.sha256(raw).hexdigest()


def owner_of(digest: str) -> str:
    return digest[:OWNER_HEX_CHARS]


def parse_entries(text: str, what: str) -> list[str]:
    """Digests of the keys in `text`: entries separated by commas, whitespace or newlines;
    `#` starts a comment (key files may hold one commented key per line)."""
    digests = []
    for line in text.splitlines():
        for entry in re.split(r"[\s,]+", line.split("#", 1)[0]):
            if not entry:
                continue
            hashed = HASHED.fullmatch(entry)
            if hashed:
                digests.append(hashed.group(1).lower())
            elif entry.startswith("sha256:"):
                raise KeyConfigError(f"{what}: a sha256: entry needs exactly 64 hex digits")
            elif len(entry) < MIN_PLAINTEXT_CHARS:
                raise KeyConfigError(f"{what}: plaintext keys need at least {MIN_PLAINTEXT_CHARS} characters")
            else:
                digests.append(digest_of(entry))
    return digests


def read_secret(value: str | None, file: Path | None, what: str) -> str | None:
    """A setting given inline or as a file (Docker/Kubernetes secrets are files); not both."""
    if value and file:
        raise KeyConfigError(f"{what}: give the value or the file, not both")
    if file is not None:
        try:
            return file.read_text()
        except OSError as exc:
            raise KeyConfigError(f"{what}: cannot read the file ({exc.strerror})") from None
    return value or None


SUBPROTOCOL_KEY = b"seqserve.key."


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key a request carries (raw ASGI headers), or None. Browsers cannot set headers on
    a WebSocket handshake, so there the key may also come as the offered subprotocol
    `seqserve.key.<key>` (the dashboard does this; the server never echoes it back)."""
    bearer = None
    for name, value in headers:
        if name == b"x-api-key":
            return value.strip()
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            bearer = value[7:].strip()
        elif name == b"sec-websocket-protocol" and bearer is None:
            for offered in value.split(b","):
                offered = offered.strip()
                if offered.startswith(SUBPROTOCOL_KEY):
                    bearer = offered[len(SUBPROTOCOL_KEY) :]
    return bearer


@dataclass(frozen=True)
class KeyRing:
    """The data plane's keys. Empty: no keys configured (anonymous mode, one shared owner)."""

    digests: frozenset[str]

    @classmethod
    def from_text(cls, text: str | None, what: str = "SEQSERVE_API_KEYS") -> KeyRing:
        return cls(frozenset(parse_entries(text or "", what)))

    def __bool__(self) -> bool:
        return bool(self.digests)

    def owner(self, headers: Iterable[tuple[bytes, bytes]]) -> str:
        """The owner id of the request's key; Unauthorized names what is wrong."""
        key = presented_key(headers)
        if not key:
            raise Unauthorized(f"this route needs an API key; {HOW}")
        digest = digest_of(key)
        if digest not in self.digests:
            raise Unauthorized("the API key is not valid")
        return owner_of(digest)


@dataclass(frozen=True)
class AdminKey:
    """The admin API's key (a digest), or none (loopback-only development runs)."""

    digest: str | None

    @classmethod
    def from_text(cls, text: str | None) -> AdminKey:
        digests = parse_entries(text or "", "SEQSERVE_ADMIN_KEY")
        if len(digests) > 1:
            raise KeyConfigError("SEQSERVE_ADMIN_KEY: give one key")
        return cls(digests[0] if digests else None)

    def check(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        if self.digest is None:
            return
        key = presented_key(headers)
        if not key:
            raise Unauthorized(f"the admin API needs the admin key; {HOW}")
        if not secrets.compare_digest(digest_of(key), self.digest):
            raise Unauthorized("the admin key is not valid")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Security:
    """Keys and secrets read once at start-up, and the checks that decide whether to start."""

    keys: KeyRing
    admin_key: AdminKey
    admin_enabled: bool
    redis_password: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Security:
        keys = KeyRing.from_text(read_secret(settings.api_keys, settings.api_keys_file, "SEQSERVE_API_KEYS"))
        admin_key = AdminKey.from_text(read_secret(settings.admin_key, settings.admin_key_file, "SEQSERVE_ADMIN_KEY"))
        password = read_secret(settings.redis_password, settings.redis_password_file, "SEQSERVE_REDIS_PASSWORD")
        return cls(keys, admin_key, settings.admin == "on", password.strip() if password else None)

    def refusals(self, settings: Settings) -> list[str]:
        """Why this configuration must not start; empty when it may.

        Open access is allowed only on loopback (a developer's `make run`): a server that
        listens on any other address needs an admin key (or SEQSERVE_ADMIN=off) and data-plane
        keys (or an explicit SEQSERVE_ALLOW_ANONYMOUS=true)."""
        problems = []
        admin_host = settings.admin_host or settings.host
        if self.admin_enabled and self.admin_key.digest is None and not is_loopback(admin_host):
            problems.append(
                f"the admin API would listen on {admin_host} without a key: set SEQSERVE_ADMIN_KEY "
                "(or SEQSERVE_ADMIN_KEY_FILE), or SEQSERVE_ADMIN=off"
            )
        if not self.keys and not settings.allow_anonymous and not is_loopback(settings.host):
            problems.append(
                f"the data plane would listen on {settings.host} without API keys: set SEQSERVE_API_KEYS "
                "(or SEQSERVE_API_KEYS_FILE), or SEQSERVE_ALLOW_ANONYMOUS=true"
            )
        if settings.admin_port == settings.port and settings.port != 0:
            problems.append("SEQSERVE_ADMIN_PORT must differ from SEQSERVE_PORT")
        return problems
