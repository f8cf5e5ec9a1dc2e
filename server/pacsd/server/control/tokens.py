"""Bearer tokens for the control plane: how they are made and how they are stored.

A token is 32 random bytes (``secrets.token_urlsafe``) behind a ``pacsd_`` prefix, so
secret scanners and people recognise one in a leaked file. The server only ever holds
its SHA-256: a settings file, a backup or a GetSettings answer gives nobody a working
token. A plain hash (no salt, no slow KDF) is enough because the input is random and
high-entropy, not a password someone could guess.
"""

from __future__ import annotations

import hashlib
import re
import secrets

TOKEN_PREFIX = "pacsd_"
#: 64 lowercase hex digits: what ``control_tokens[].sha256`` must hold.
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
#: A token's name: it shows in audit records and is pasted into TOML unquoted-safe.
TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The SHA-256 hex digest stored in the settings in place of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def toml_entry(name: str, role: str, digest: str) -> str:
    """The ``[[control_tokens]]`` table an operator pastes into the settings file."""
    return f'[[control_tokens]]\nname = "{name}"\nrole = "{role}"\nsha256 = "{digest}"\n'
