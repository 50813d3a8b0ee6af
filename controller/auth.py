"""The admin token: where it comes from, and the check every admin RPC makes.

The token is read from a file (``admin_token_file``) or the environment (``TANDEM_ADMIN_TOKEN``); without either,
the controller makes one and writes it, readable only by its owner, beside its state file.  It is never logged or
exported; callers send it as ``authorization: Bearer TOKEN`` metadata.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from controller.config import ADMIN_TOKEN_ENV

MIN_TOKEN_LENGTH = 16


class TokenError(Exception):
    pass


def read_token_file(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as error:
        raise TokenError(f"cannot read the admin token file {path}: {error.strerror}") from None
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenError(f"the admin token in {path} is shorter than {MIN_TOKEN_LENGTH} characters")
    return token


def load_or_create_token(token_file: Path | None, state_path: Path) -> tuple[str, str]:
    """The admin token and a note on where it came from (for the start-up log; never the token itself)."""
    if token_file is not None:
        return read_token_file(token_file), f"admin token from {token_file}"
    if token := os.environ.get(ADMIN_TOKEN_ENV):
        if len(token) < MIN_TOKEN_LENGTH:
            raise TokenError(f"${ADMIN_TOKEN_ENV} is shorter than {MIN_TOKEN_LENGTH} characters")
        return token, f"admin token from ${ADMIN_TOKEN_ENV}"
    made = state_path.with_name(state_path.name + ".admin-token")
    if made.exists():
        return read_token_file(made), f"admin token from {made}"
    made.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(made, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_urlsafe(32) + "\n")
    return read_token_file(made), f"admin token made in {made}"


def client_token(token_file: Path | None) -> str | None:
    """The token an admin command sends: from ``--admin-token-file``, else the environment, else None."""
    if token_file is not None:
        return read_token_file(token_file)
    return os.environ.get(ADMIN_TOKEN_ENV)


def check_bearer(metadata, token: str) -> str | None:
    """None when the call carries the token, else the status name to refuse it with."""
    values = [value for key, value in (metadata or ()) if key == "authorization"]
    if not values:
        return "UNAUTHENTICATED"
    scheme, _, given = values[0].partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return "PERMISSION_DENIED"
    return None
