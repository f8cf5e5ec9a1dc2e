"""Passcode hashes for DICOM User Identity negotiation (``dicom_users``).

The settings file holds hashes, never passcodes, so a leaked file or a settings dump
gives nothing a peer can present. stdlib scrypt keeps the server free of another
dependency; the string carries its own parameters
(``scrypt$N$r$p$salt$hash``, salt and hash in base64) so the cost can be raised later
without invalidating hashes already written.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SCHEME = "scrypt"
#: Cost parameters for new hashes: about 32 MiB and a few tens of ms per check, which an
#: association can afford and an offline guesser cannot multiply cheaply.
DEFAULT_N = 2**15
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
#: Refuse parameters that would let a crafted settings file exhaust memory or CPU.
MAX_N = 2**20
MAX_R = 32
MAX_P = 16


class InvalidPasscodeHash(ValueError):
    """A ``dicom_users`` value that is not a hash this module wrote (message has no secret)."""


@dataclass(frozen=True, slots=True)
class PasscodeHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def encode(self) -> str:
        salt = base64.b64encode(self.salt).decode("ascii")
        digest = base64.b64encode(self.digest).decode("ascii")
        return f"{SCHEME}${self.n}${self.r}${self.p}${salt}${digest}"


def hash_passcode(
    passcode: str, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P
) -> str:
    """A new self-describing hash of ``passcode`` with a random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(passcode.encode("utf-8"), salt, n, r, p, HASH_BYTES)
    return PasscodeHash(n, r, p, salt, digest).encode()


def parse_hash(text: str) -> PasscodeHash:
    """The parts of a hash string; raises InvalidPasscodeHash saying what is wrong."""
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise InvalidPasscodeHash(
            f"not a {SCHEME}$N$r$p$salt$hash string (make one with 'pacsd hash-password')"
        )
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error) as exc:
        raise InvalidPasscodeHash("malformed parameters, salt or hash") from exc
    if n < 2 or n > MAX_N or n & (n - 1):
        raise InvalidPasscodeHash(f"N must be a power of two from 2 to {MAX_N}")
    if not 1 <= r <= MAX_R or not 1 <= p <= MAX_P:
        raise InvalidPasscodeHash(f"r must be 1-{MAX_R} and p 1-{MAX_P}")
    if len(salt) < 8 or len(digest) < 16:
        raise InvalidPasscodeHash("salt or hash too short")
    return PasscodeHash(n, r, p, salt, digest)


def verify_passcode(passcode: bytes | str, stored: str) -> bool:
    """True when ``passcode`` matches ``stored``; compared in constant time."""
    parsed = parse_hash(stored)
    raw = passcode.encode("utf-8") if isinstance(passcode, str) else passcode
    candidate = _scrypt(raw, parsed.salt, parsed.n, parsed.r, parsed.p, len(parsed.digest))
    return hmac.compare_digest(candidate, parsed.digest)


def _scrypt(secret: bytes, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # scrypt needs 128 * r * N bytes (plus slack); OpenSSL's default cap is 32 MiB.
    maxmem = 128 * r * n * 2 + 1024 * 1024
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length)
