"""Files only their owner may read: private keys and admin tokens, read with a check and written atomically 0600.

Why: a key or token that other users of the machine can read is no longer a credential of this process.  Like
ssh and PostgreSQL, Tandem refuses to use one rather than warn: ``read_private`` accepts a file only when

* it belongs to the user running this process and neither its group nor others have any access (mode & 0o077 == 0),
  or
* it belongs to root and others have no access, its group at most read (mode & 0o037 == 0): the layout of container
  secrets and of PostgreSQL's rule, where root hands a key to a service's group on purpose.

The file is opened first and checked through its descriptor (fstat), so what is checked is what is read.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

__all__ = ["PrivateFileError", "read_private", "write_private"]

_OWNER_ONLY = 0o077  # no bit for group or others
_ROOT_GROUP_READ = 0o037  # root-owned: the group may read, nothing more


class PrivateFileError(Exception):
    """A private file cannot be used: unreadable, or others can read it (the message says what to do)."""


def read_private(path: Path, what: str) -> bytes:
    """The bytes of ``path``, a file only its owner (this user, or root with its group) may read.  ``what`` names
    it in errors ("TLS key", "admin token file")."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError as error:
        raise PrivateFileError(f"cannot read the {what} {path}: {error.strerror}") from None
    with os.fdopen(descriptor, "rb") as file:
        status = os.fstat(file.fileno())
        refusal = _refusal(status)
        if refusal is not None:
            raise PrivateFileError(f"the {what} {path} {refusal}")
        try:
            return file.read()
        except OSError as error:
            raise PrivateFileError(f"cannot read the {what} {path}: {error.strerror}") from None


def _refusal(status: os.stat_result) -> str | None:
    mode = stat.S_IMODE(status.st_mode)
    if status.st_uid == os.getuid():
        if mode & _OWNER_ONLY:
            return f"is open to other users (mode {mode:04o}); make it private: chmod 600"
        return None
    if status.st_uid == 0:
        if mode & _ROOT_GROUP_READ:
            return (f"belongs to root with mode {mode:04o}: others (or the group, beyond reading) have access; "
                    "chmod 640 at most")
        return None
    return (f"belongs to another user (uid {status.st_uid}, not {os.getuid()}): whoever owns it can replace it; "
            "give it to the user this process runs as (chown), mode 600")


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` with exactly ``mode``, replacing any old file atomically.

    The bytes go to a fresh temporary file created with O_EXCL and the final mode, so a key is never readable by
    others, not even for a moment, and never written into a file someone else created; a rename then puts it in
    place, so a reader sees the old file or the new one, never half of one.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), mode)  # the umask may have removed bits we want (0644 for certificates)
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
