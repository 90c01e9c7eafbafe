"""A development certificate authority for fedgwas's mutual TLS (``fedgwas keys tls``).

A consortium normally issues its parties' certificates from its own CA. For tests, the demo, local
runs and pilots this module creates one: an ECDSA P-256 CA and, per party, a certificate whose
subject CN and DNS subject-alternative name are the party's name (a site name, the coordinator's
identity, the key holder). Private keys are written owner-only (0600); an existing CA or party key is
never overwritten, so re-running adds missing parties and keeps every identity stable.

Layout of the directory::

    ca.pem, ca.key          the CA certificate and its key (keep ca.key offline in a real consortium)
    NAME.pem, NAME.key      one certificate and key per party
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from engine.errors import ConfigError, InputError

CA_CERT, CA_KEY = "ca.pem", "ca.key"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class TlsFiles:
    """One party's TLS material: the consortium CA it trusts, its own certificate and key (PEM)."""

    ca: Path
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        """``(ca, cert, key)`` bytes; raises ConfigError naming a missing or unreadable file."""
        out = []
        for what, path in (("ca", self.ca), ("cert", self.cert), ("key", self.key)):
            try:
                out.append(path.read_bytes())
            except OSError as exc:
                raise ConfigError(f"TLS {what} file {str(path)!r} cannot be read: {exc.strerror}") from None
        return out[0], out[1], out[2]


def check_name(name: str) -> str:
    """A party name usable as a certificate CN and DNS name (letters, digits, '.', '_', '-')."""
    if not _NAME.match(name):
        raise InputError(f"party name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return name


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _load_private(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{str(path)!r} is not an EC private key")
    return key


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedgwas development CA"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def create_ca(directory: Path, common_name: str = "fedgwas-dev-ca", days: int = 3650) -> tuple[Path, Path]:
    """The CA in ``directory`` (created if missing, else kept); returns ``(ca.pem, ca.key)``."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    key_path.unlink(missing_ok=True)
    _write_private(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def issue(directory: Path, name: str, *, days: int = 825, not_before: datetime.datetime | None = None,
          overwrite: bool = False) -> TlsFiles:
    """A certificate for party ``name`` signed by the CA in ``directory`` (CN and DNS SAN = ``name``).

    Usable for both TLS server and client authentication. An existing certificate is kept unless
    ``overwrite``. ``not_before``/``days`` let tests make expired certificates.
    """
    check_name(name)
    ca_cert_path, ca_key_path = directory / CA_CERT, directory / CA_KEY
    if not ca_cert_path.exists() or not ca_key_path.exists():
        raise ConfigError(f"no CA in {str(directory)!r}: create it first (fedgwas keys tls --out {directory})")
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    files = TlsFiles(ca_cert_path, cert_path, key_path)
    if cert_path.exists() and key_path.exists() and not overwrite:
        return files
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = _load_private(ca_key_path)
    if overwrite:
        key_path.unlink(missing_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_private(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def dev_pki(directory: Path, names: list[str]) -> dict[str, TlsFiles]:
    """A development CA in ``directory`` (reused if present) and a certificate for each name."""
    create_ca(directory)
    return {name: issue(directory, name) for name in names}


def certificate_identity(path: Path) -> str:
    """The subject CN of a PEM certificate (the party name it certifies)."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""
