"""Private files: TLS keys and admin token files that other users can read (or that belong to someone else) are
refused with a clear error, and the CLIs exit 2; the verification log is written 0600 (tandem/private_files.py,
tandem/tls.py, tandem/auth.py, tandem/verification_log.py). Unit tests and CLI runs, no daemons."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tandem.auth import TokenError, load_or_create_token, read_token_file
from toolbox.certs import CertError, init_certs, issue_certificate
from tandem.private_files import PrivateFileError, read_private, write_private
from tandem.tls import TlsError, TlsSettings, load_transport
from tandem.verification_log import open_for_append
from harness.clients import run_tandem
from harness.paths import REPO

TOKEN = "private-files-test-token-0123"
NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def tls_dir(tmp_path) -> Path:
    init_certs(tmp_path / "tls", edges=1, devices=1)
    return tmp_path / "tls"


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_a_file_others_can_read_or_write_is_refused(tmp_path, loose):
    path = tmp_path / "secret"
    write_private(path, b"s3cret")
    assert read_private(path, "test secret") == b"s3cret"
    path.chmod(loose)
    with pytest.raises(PrivateFileError, match="open to other users") as refused:
        read_private(path, "test secret")
    assert f"{loose:04o}" in str(refused.value) and "chmod 600" in str(refused.value)


def test_a_file_of_another_user_is_refused(tmp_path):
    if os.getuid() != 0:
        pytest.skip("only root can give a file to another user")
    path = tmp_path / "secret"
    write_private(path, b"s3cret")
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(PrivateFileError, match="belongs to another user"):
        read_private(path, "test secret")


def test_a_root_owned_file_may_be_readable_by_its_group(tmp_path, monkeypatch):
    """Container secrets: root owns the key and hands it to the service's group (PostgreSQL's rule)."""
    if os.getuid() != 0:
        pytest.skip("only root can make a root-owned file for this test")
    path = tmp_path / "secret"
    write_private(path, b"s3cret", 0o640)
    monkeypatch.setattr(os, "getuid", lambda: 1000)  # this process as a service user, the file root's
    assert read_private(path, "test secret") == b"s3cret"
    path.chmod(0o644)
    with pytest.raises(PrivateFileError, match="belongs to root"):
        read_private(path, "test secret")


def test_write_private_is_atomic_and_exact(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(b"old")
    path.chmod(0o644)
    write_private(path, b"new")
    assert path.read_bytes() == b"new" and mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key"]  # no temporary file left


def test_a_tls_key_readable_by_others_is_refused(tls_dir):
    assert load_transport(TlsSettings(dir=tls_dir), "edge-0").key is not None
    (tls_dir / "edge-0.key").chmod(0o644)
    with pytest.raises(TlsError, match="TLS key .*edge-0.key is open to other users"):
        load_transport(TlsSettings(dir=tls_dir), "edge-0")


def test_a_key_that_is_not_the_certificates_is_refused(tls_dir):
    settings = TlsSettings(ca=tls_dir / "ca.pem", cert=tls_dir / "edge-0.pem", key=tls_dir / "device-0.key")
    with pytest.raises(TlsError, match="not the certificate's"):
        load_transport(settings, "edge-0")


def test_a_ca_key_readable_by_others_is_refused(tls_dir):
    (tls_dir / "ca.key").chmod(0o640)
    with pytest.raises(CertError, match="CA key .* is open to other users"):
        issue_certificate(tls_dir, "device-5")


def test_token_files_must_be_private(tmp_path):
    path = tmp_path / "admin-token"
    path.write_text(TOKEN)
    path.chmod(0o644)
    with pytest.raises(TokenError, match="admin token file .* is open to other users"):
        read_token_file(path)
    path.chmod(0o600)
    assert read_token_file(path) == TOKEN


def test_the_controller_makes_its_token_private(tmp_path, monkeypatch):
    monkeypatch.delenv("TANDEM_ADMIN_TOKEN", raising=False)
    token, note = load_or_create_token(None, tmp_path / "state.sqlite")
    made = tmp_path / "state.sqlite.admin-token"
    assert mode(made) == 0o600 and "made in" in note
    assert load_or_create_token(None, tmp_path / "state.sqlite")[0] == token  # read back: it passes the check


def test_clis_exit_2_on_a_readable_key_or_token(tls_dir, tmp_path):
    (tls_dir / "admin.key").chmod(0o644)
    done = run_tandem("health", "127.0.0.1:9", "--tls-dir", str(tls_dir))
    assert done.returncode == 2 and "open to other users" in done.stderr, done.stderr
    token = tmp_path / "admin-token"
    token.write_text(TOKEN)
    token.chmod(0o644)
    done = run_tandem("policy", "list", "--controller", "127.0.0.1:9", "--insecure", "--admin-token-file", str(token))
    assert done.returncode == 2 and "open to other users" in done.stderr, done.stderr
    done = run_tandem("controller", "serve", "--config", str(REPO / "configs" / "controller.yaml"), "--insecure",
                      "--state", str(tmp_path / "c.sqlite"), "--admin-token-file", str(token))
    assert done.returncode == 2 and "open to other users" in done.stderr, done.stderr


def test_the_verification_log_is_private(tmp_path):
    """It holds every prompt and answer token: 0600 whatever the umask, and an existing log is narrowed to it."""
    old = os.umask(0o000)
    try:
        path = tmp_path / "logs" / "verification.jsonl"
        with open_for_append(path) as log:
            log.write("{}\n")
        assert mode(path) == 0o600
        path.chmod(0o644)
        with open_for_append(path) as log:
            log.write("{}\n")
        assert mode(path) == 0o600 and path.read_text() == "{}\n{}\n"  # appended, not truncated
    finally:
        os.umask(old)
