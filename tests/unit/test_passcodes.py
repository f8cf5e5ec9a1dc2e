"""Passcode hashes for DICOM User Identity: format, verification, refusal of bad input,
the settings check, and ``pacsd hash-password`` (which never echoes the passcode)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pacsd.server.config import ConfigError, Settings, load_settings
from pacsd.server.passcodes import (
    InvalidPasscodeHash,
    hash_passcode,
    parse_hash,
    verify_passcode,
)

from tests.conftest import console_script

# Cheap parameters keep the unit tests fast; the format and code path are the same.
FAST = {"n": 2**10, "r": 8, "p": 1}


def load_settings_from(tmp_path: Path, text: str) -> Settings:
    """Settings as ``pacsd serve`` validates them from a settings file."""
    path = tmp_path / "pacsd.toml"
    path.write_text(text)
    return load_settings({}, path, environ={})


def test_hash_is_self_describing_salted_and_verifies() -> None:
    first = hash_passcode("correct horse", **FAST)
    second = hash_passcode("correct horse", **FAST)
    assert first.startswith("scrypt$1024$8$1$")
    assert first != second  # a fresh salt each time
    assert "correct horse" not in first
    for stored in (first, second):
        assert verify_passcode("correct horse", stored)
        assert verify_passcode(b"correct horse", stored)
        assert not verify_passcode("correct hors", stored)
        assert not verify_passcode("", stored)


def test_default_cost_is_the_documented_one() -> None:
    parsed = parse_hash(hash_passcode("x"))
    assert (parsed.n, parsed.r, parsed.p, len(parsed.salt), len(parsed.digest)) == (
        2**15,
        8,
        1,
        16,
        32,
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plaintext-password",
        "bcrypt$12$abc",
        "scrypt$1024$8$1$c2FsdHNhbHQ=",  # hash missing
        "scrypt$1000$8$1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==",  # N not a power of two
        "scrypt$1024$99$1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==",  # r too large
        "scrypt$1024$8$1$not base64!$aGFzaGhhc2hoYXNoaGFzaA==",
        "scrypt$1024$8$1$c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",  # salt too short
        f"scrypt${2**24}$8$1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==",  # memory bomb
    ],
)
def test_malformed_hashes_are_refused(text: str) -> None:
    with pytest.raises(InvalidPasscodeHash):
        parse_hash(text)
    with pytest.raises(InvalidPasscodeHash):
        verify_passcode("anything", text)


def test_settings_refuse_a_plaintext_passcode_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings_from(tmp_path, '[dicom_users]\nalice = "hunter2-plain"\n')
    message = str(err.value)
    assert "dicom_users" in message and "'alice'" in message
    assert "hunter2-plain" not in message


def test_settings_accept_hashes_and_username_only_users(tmp_path: Path) -> None:
    stored = hash_passcode("s3cret", **FAST)
    settings = load_settings_from(tmp_path, f'[dicom_users]\nalice = "{stored}"\nscanner = ""\n')
    assert settings.dicom_users == {"alice": stored, "scanner": ""}


def test_require_user_identity_needs_users(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="require_user_identity needs"):
        load_settings_from(tmp_path, "require_user_identity = true\n")


def test_hash_password_reads_stdin_and_prints_only_the_hash() -> None:
    run = subprocess.run(
        [console_script("pacsd"), "hash-password"],
        input="my passcode\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    stored = run.stdout.strip()
    assert "my passcode" not in run.stdout + run.stderr
    assert len(run.stdout.splitlines()) == 1
    assert verify_passcode("my passcode", stored)  # the newline is not part of it
    assert not verify_passcode("my passcode\n", stored)


def test_hash_password_refuses_an_empty_passcode() -> None:
    run = subprocess.run(
        [console_script("pacsd"), "hash-password"],
        input="\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 1
    assert run.stdout == ""
    assert "empty" in run.stderr
