"""A development certificate authority: keys and certificates for pacsd's TLS.

``pacsctl certs init`` / ``pacsctl certs issue`` are thin wrappers over this module so
that tests, fixtures and provisioning scripts get the same certificates as people do.
The profile is chosen to be accepted by every TLS stack pacsd meets: Python's ``ssl``
(OpenSSL 3, also with ``VERIFY_X509_STRICT``), gRPC (BoringSSL) and DCMTK 3.6.7's
BCP 195 profile, whose cipher lists are RSA-authenticated -- hence RSA 2048 by default.

This module is not imported by ``pacsd.client`` itself, so ``cryptography`` may be
imported at the top: the SDK stays importable with only grpcio and protobuf.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

KeyType = Literal["rsa", "ec"]
Usage = Literal["server", "client", "both"]
KEY_TYPES: tuple[str, ...] = ("rsa", "ec")
USAGES: tuple[str, ...] = ("server", "client", "both")

CA_CERT = "ca.crt"
CA_KEY = "ca.key"

#: Peers' clocks drift; a certificate valid only from "now" fails on a peer a few
#: seconds behind.
BACKDATE = timedelta(minutes=5)
#: RFC 5280's upper bound for a commonName (ub-common-name).
MAX_CN = 64
#: Longest validity accepted; beyond it datetimes stop being meaningful for X.509
#: (GeneralizedTime ends at 9999) and nobody means it.
MAX_DAYS = 100 * 366
RSA_BITS = 2048

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_STEM = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


#: CertsError reasons: stable names for scripts (messages may change).
BAD_INPUT = "CERTS_BAD_INPUT"
EXISTS = "CERTS_EXISTS"
CA_NOT_FOUND = "CERTS_CA_NOT_FOUND"
NOT_FOUND = "CERTS_NOT_FOUND"
BAD_FILE = "CERTS_BAD_FILE"
IO_ERROR = "CERTS_IO_ERROR"


class CertsError(Exception):
    """A request this module refuses, with a one-line message naming what to fix.

    ``reason`` is one of the constants above, so callers (pacsctl's exit status and
    JSON errors) branch on it rather than on the message. Messages name files and values
    given by the caller, never key material."""

    def __init__(self, message: str, reason: str = BAD_INPUT, path: Path | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.path = path


@dataclass(frozen=True)
class Issued:
    """What was written: the files and the facts a person checks before using them."""

    cert: Path
    key: Path
    ca_cert: Path
    subject: str
    not_after: datetime
    fingerprint_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "cert": str(self.cert),
            "key": str(self.key),
            "ca_cert": str(self.ca_cert),
            "subject": self.subject,
            "not_after": _iso(self.not_after),
            "fingerprint_sha256": self.fingerprint_sha256,
        }


@dataclass(frozen=True)
class CertificateInfo:
    """A certificate's identity and purpose, as ``describe`` reads it from a PEM file."""

    path: Path
    subject: str
    issuer: str
    serial: str
    not_before: datetime
    not_after: datetime
    fingerprint_sha256: str
    sans: tuple[str, ...]
    is_ca: bool
    usages: tuple[str, ...]
    key_type: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "fingerprint_sha256": self.fingerprint_sha256,
            "sans": list(self.sans),
            "is_ca": self.is_ca,
            "usages": list(self.usages),
            "key_type": self.key_type,
        }


# -- public API ----------------------------------------------------------------------------


def create_ca(
    directory: Path,
    common_name: str = "pacsd development CA",
    *,
    days: int = 3650,
    key_type: KeyType = "rsa",
    force: bool = False,
) -> Issued:
    """Create a self-signed CA as ``directory/ca.crt`` and ``directory/ca.key``.

    Refuses to replace an existing CA unless ``force``: every certificate it signed would
    stop verifying against the new one."""
    directory = Path(directory)
    cn = _common_name(common_name)
    _check_days(days)
    _check_key_type(key_type)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not force:
        _refuse_existing(cert_path, key_path)
    _make_dir(directory, private=True)

    key = _new_key(key_type)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        # path_length=0: this CA signs leaves only, so a stolen leaf key cannot mint more.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    _write_pair(cert_path, key_path, cert, key, force=force)
    issued = _issued(cert, cert_path, key_path, cert_path)
    log.info("created CA %s (%s) in %s", issued.subject, issued.fingerprint_sha256, directory)
    return issued


def issue_certificate(
    ca_dir: Path,
    name: str,
    common_name: str,
    sans: Sequence[str] = (),
    *,
    out_dir: Path | None = None,
    usage: Usage = "both",
    days: int = 825,
    key_type: KeyType = "rsa",
    force: bool = False,
) -> Issued:
    """Issue a leaf certificate signed by the CA in ``ca_dir`` as ``NAME.crt`` / ``NAME.key``.

    A SAN that parses as an IP address becomes an IPAddress SAN, any other a DNSName
    (``DNS:`` / ``IP:`` prefixes force the kind). Without SANs the common name is used,
    because modern TLS stacks match host names against SANs only; a client certificate
    whose common name is neither a host name nor an address gets no SAN (clients are
    not matched by name). The validity is capped at the CA's, past which the chain
    fails anyway."""
    ca_dir = Path(ca_dir)
    out = Path(out_dir) if out_dir is not None else ca_dir
    cn = _common_name(common_name)
    stem = _file_stem(name)
    if stem == "ca" and out.resolve() == ca_dir.resolve():
        raise CertsError(f"name 'ca' would overwrite the CA in {ca_dir}; choose another --name")
    _check_days(days)
    _check_key_type(key_type)
    if usage not in USAGES:
        raise CertsError(f"unknown usage {usage!r}; expected one of {', '.join(USAGES)}")
    general_names = _general_names(sans, cn, usage)
    cert_path, key_path = out / f"{stem}.crt", out / f"{stem}.key"
    if not force:
        _refuse_existing(cert_path, key_path)
    ca_cert, ca_key = _load_ca(ca_dir)
    now = datetime.now(UTC)
    ca_not_after = ca_cert.not_valid_after_utc
    if ca_not_after <= now:
        raise CertsError(
            f"the CA in {ca_dir} expired on {_iso(ca_not_after)}", BAD_FILE, ca_dir / CA_CERT
        )
    not_after = min(now + timedelta(days=days), ca_not_after)
    _make_dir(out, private=False)

    key = _new_key(key_type)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(key_type), critical=True)
        .add_extension(x509.ExtendedKeyUsage(_eku(usage)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )
    if general_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(general_names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_pair(cert_path, key_path, cert, key, force=force)
    issued = _issued(cert, cert_path, key_path, ca_dir / CA_CERT)
    log.info(
        "issued %s certificate %s (%s) as %s",
        usage,
        issued.subject,
        issued.fingerprint_sha256,
        cert_path,
    )
    return issued


def describe(cert_path: Path) -> CertificateInfo:
    """Read the first certificate of a PEM file: who it names, who signed it, what for."""
    path = Path(cert_path)
    cert = _read_cert(path)
    try:
        sans = _san_strings(
            cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        )
    except x509.ExtensionNotFound:
        sans = ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        usages = tuple(_EKU_NAMES.get(oid, oid.dotted_string) for oid in ekus)
    except x509.ExtensionNotFound:
        usages = ()
    return CertificateInfo(
        path=path,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=f"{cert.serial_number:X}",
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint_sha256=fingerprint(cert),
        sans=sans,
        is_ca=is_ca,
        usages=usages,
        key_type=_key_type_name(cert.public_key()),
    )


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as ``openssl x509 -fingerprint -sha256`` prints it."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


# -- validation ----------------------------------------------------------------------------


def _common_name(value: str) -> str:
    cn = value.strip()
    if not cn:
        raise CertsError("the common name must not be empty")
    if len(cn) > MAX_CN:
        raise CertsError(f"the common name is {len(cn)} characters; X.509 allows {MAX_CN}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in cn):
        raise CertsError(f"the common name {cn!r} contains control characters")
    return cn


def _file_stem(value: str) -> str:
    if not _STEM.match(value):
        raise CertsError(
            f"invalid name {value!r}: use letters, digits, '.', '_' or '-' "
            "(it becomes NAME.crt and NAME.key)"
        )
    return value


def _check_days(days: int) -> None:
    if not 1 <= days <= MAX_DAYS:
        raise CertsError(f"days must be between 1 and {MAX_DAYS}, not {days}")


def _check_key_type(key_type: str) -> None:
    if key_type not in KEY_TYPES:
        raise CertsError(f"unknown key type {key_type!r}; expected one of {', '.join(KEY_TYPES)}")


def _dns_name(value: str) -> str | None:
    """The name if it is a valid (ASCII, optionally wildcard) DNS name, else None."""
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253 or not name.isascii():
        return None
    labels = name.split(".")
    if labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    return name.lower() if all(_LABEL.match(label) for label in labels) else None


def _parse_san(text: str) -> x509.GeneralName:
    value = text.strip()
    kind, _, rest = value.partition(":")
    forced = kind.upper() if rest and kind.upper() in ("DNS", "IP") else None
    if forced:
        value = rest.strip()
    if forced != "DNS":
        try:
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError:
            if forced == "IP":
                raise CertsError(f"invalid SAN {text!r}: not an IP address") from None
    dns = _dns_name(value)
    if dns is None:
        hint = " (use the IDNA 'xn--' form)" if not value.isascii() else ""
        raise CertsError(f"invalid SAN {text!r}: not an IP address or DNS name{hint}")
    return x509.DNSName(dns)


def _general_names(sans: Sequence[str], cn: str, usage: Usage) -> list[x509.GeneralName]:
    if isinstance(sans, str):  # a lone string would be split into characters
        sans = [sans]
    names: list[x509.GeneralName] = []
    for text in sans:
        name = _parse_san(text)
        if name not in names:
            names.append(name)
    if names:
        return names
    try:
        return [_parse_san(cn)]
    except CertsError:
        if usage == "client":
            return []
        raise CertsError(
            f"the common name {cn!r} is not a DNS name or IP address, and a server "
            "certificate needs one: give it with --san"
        ) from None


# -- building ------------------------------------------------------------------------------

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
}


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


def _leaf_key_usage(key_type: KeyType) -> x509.KeyUsage:
    # keyEncipherment is RSA key transport; it is meaningless (and flagged) for EC keys.
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_type == "rsa",
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _eku(usage: Usage) -> list[x509.ObjectIdentifier]:
    oids = []
    if usage in ("server", "both"):
        oids.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if usage in ("client", "both"):
        oids.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    return oids


def _issued(cert: x509.Certificate, cert_path: Path, key_path: Path, ca_cert: Path) -> Issued:
    return Issued(
        cert=cert_path,
        key=key_path,
        ca_cert=ca_cert,
        subject=cert.subject.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        fingerprint_sha256=fingerprint(cert),
    )


def _san_strings(san: x509.SubjectAlternativeName) -> tuple[str, ...]:
    out = []
    for name in san:
        if isinstance(name, x509.DNSName):
            out.append(f"DNS:{name.value}")
        elif isinstance(name, x509.IPAddress):
            out.append(f"IP:{name.value}")
        else:
            out.append(f"{type(name).__name__}:{name.value}")
    return tuple(out)


def _key_type_name(public_key: Any) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa{public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"ec-{public_key.curve.name}"
    return type(public_key).__name__


# -- files ---------------------------------------------------------------------------------


def _read_cert(path: Path) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CertsError(f"no certificate at {path}", NOT_FOUND, path) from None
    except OSError as exc:
        raise CertsError(f"cannot read {path}: {exc.strerror}", IO_ERROR, path) from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise CertsError(f"{path} is not a PEM certificate", BAD_FILE, path) from None


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, PrivateKey]:
    cert_path, key_path = ca_dir / CA_CERT, ca_dir / CA_KEY
    if not cert_path.exists() or not key_path.exists():
        raise CertsError(
            f"no CA in {ca_dir} (expected {CA_CERT} and {CA_KEY}); "
            "create one with 'pacsctl certs init'",
            CA_NOT_FOUND,
            ca_dir,
        )
    cert = _read_cert(cert_path)
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        ski_present = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        basic, ski_present = None, None
    if basic is None or not basic.ca or ski_present is None:
        raise CertsError(f"{cert_path} is not a CA certificate", BAD_FILE, cert_path)
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except TypeError:
        raise CertsError(
            f"{key_path} is encrypted; only unencrypted development CA keys are supported",
            BAD_FILE,
            key_path,
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertsError(f"{key_path} is not a PEM private key", BAD_FILE, key_path) from None
    except OSError as exc:
        raise CertsError(f"cannot read {key_path}: {exc.strerror}", IO_ERROR, key_path) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertsError(f"{key_path} is neither an RSA nor an EC key", BAD_FILE, key_path)
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*raw) != cert.public_key().public_bytes(*raw):
        raise CertsError(f"{key_path} does not belong to {cert_path}", BAD_FILE, key_path)
    return cert, key


def _refuse_existing(*paths: Path) -> None:
    for path in paths:
        if path.exists() or path.is_symlink():
            raise CertsError(f"{path} already exists; use --force to replace it", EXISTS, path)


def _make_dir(directory: Path, *, private: bool) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700 if private else 0o755)
    except OSError as exc:
        raise CertsError(
            f"cannot create {directory}: {exc.strerror}", IO_ERROR, directory
        ) from None
    if not directory.is_dir():
        raise CertsError(f"{directory} is not a directory", IO_ERROR, directory)


def _write_pair(
    cert_path: Path,
    key_path: Path,
    cert: x509.Certificate,
    key: PrivateKey,
    *,
    force: bool,
) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # The key first: a certificate whose key is missing is worse than a stray key.
    _write_atomic(key_path, key_pem, mode=0o600, replace=force)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644, force)


def _write_atomic(path: Path, data: bytes, mode: int, replace: bool) -> None:
    """Write to a temporary file created with ``mode`` (so a key is never readable by
    others, not even briefly), fsync, then rename -- or hard-link when not replacing,
    which fails atomically if someone created ``path`` meanwhile."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise CertsError(
                    f"{path} already exists; use --force to replace it", EXISTS, path
                ) from None
            os.unlink(tmp)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise CertsError(f"cannot write {path}: {exc.strerror}", IO_ERROR, path) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
