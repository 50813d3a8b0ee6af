"""The admin token: the credential of admin and control RPCs in plaintext development (over TLS roles come from
certificates alone and a token grants nothing: tandem/rpc.py).

The token is read from a file (``--admin-token-file``) or the environment (``TANDEM_ADMIN_TOKEN``); without either,
a plaintext controller makes one and writes it, readable only by its owner, beside its state file (a plaintext edge
or link emulator without one refuses its admin-only services).  It is never logged
or exported; callers send it as ``authorization: Bearer TOKEN`` metadata and tandem/rpc.py checks it.  A token file
that other users can read is refused (tandem/private_files.py): the token would no longer be a secret.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from tandem.private_files import PrivateFileError, read_private

ADMIN_TOKEN_ENV = "TANDEM_ADMIN_TOKEN"
MIN_TOKEN_LENGTH = 16


class TokenError(Exception):
    pass


def read_token_file(path: Path) -> str:
    try:
        token = read_private(path, "admin token file").decode().strip()
    except PrivateFileError as error:
        raise TokenError(str(error)) from None
    except UnicodeDecodeError:
        raise TokenError(f"the admin token file {path} is not UTF-8 text") from None
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenError(f"the admin token in {path} is shorter than {MIN_TOKEN_LENGTH} characters")
    return token


def load_or_create_token(token_file: Path | None, state_path: Path) -> tuple[str, str]:
    """The admin token and a note on where it came from (for the start-up log; never the token itself)."""
    if (token := client_token(token_file)) is not None:
        return token, f"admin token from {token_file or '$' + ADMIN_TOKEN_ENV}"
    made = state_path.with_name(state_path.name + ".admin-token")
    if made.exists():
        return read_token_file(made), f"admin token from {made}"
    made.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(made, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_urlsafe(32) + "\n")
    return read_token_file(made), f"admin token made in {made}"


def client_token(token_file: Path | None) -> str | None:
    """The token an admin command (or a daemon's control RPCs) uses: from ``--admin-token-file``, else the
    environment, else None."""
    if token_file is not None:
        return read_token_file(token_file)
    if token := os.environ.get(ADMIN_TOKEN_ENV):
        if len(token) < MIN_TOKEN_LENGTH:
            raise TokenError(f"${ADMIN_TOKEN_ENV} is shorter than {MIN_TOKEN_LENGTH} characters")
        return token
    return None
