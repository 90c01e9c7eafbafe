"""What ``fedgwas-site check`` verifies and reports about transport security, access rules and consent.

Problems raise :class:`~engine.errors.ConfigError` naming the file, so a site never starts serving
with a certificate that cannot work (expired, not for this site, not from its CA, key mismatch).
"""

from __future__ import annotations

import datetime

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from engine.errors import ConfigError
from site_agent.config import SiteConfig
from site_agent.data import SiteData
from protos.pki import TlsFiles


def check_certificates(name: str, tls: TlsFiles) -> str:
    """Validate this site's certificate against its CA and name; returns a one-line description."""
    ca_bytes, cert_bytes, key_bytes = tls.read()
    try:
        ca = x509.load_pem_x509_certificate(ca_bytes)
        cert = x509.load_pem_x509_certificate(cert_bytes)
    except ValueError as exc:
        raise ConfigError(f"[tls] ca {str(tls.ca)!r} or cert {str(tls.cert)!r} is not a PEM certificate: {exc}") from None
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"[tls] key {str(tls.key)!r} is not an unencrypted PEM private key: {exc}") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, public) != \
            cert.public_key().public_bytes(serialization.Encoding.PEM, public):
        raise ConfigError(f"[tls] key {str(tls.key)!r} does not belong to the certificate {str(tls.cert)!r}")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, Exception) as exc:  # InvalidSignature has no common base worth naming
        raise ConfigError(f"[tls] cert {str(tls.cert)!r} was not issued by the CA {str(tls.ca)!r}: {exc or 'bad signature'}") from None
    now = datetime.datetime.now(datetime.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ConfigError(f"[tls] cert {str(tls.cert)!r} is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d} "
                          f"to {cert.not_valid_after_utc:%Y-%m-%d})")
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        sans = []
    if name not in sans:
        raise ConfigError(f"[tls] cert {str(tls.cert)!r} names {sans or 'no DNS name'}, not this site {name!r}: "
                          f"coordinators check that the certificate names the site they asked for")
    return f"mutual TLS: certificate for {name!r}, valid until {cert.not_valid_after_utc:%Y-%m-%d}"


def check_security(config: SiteConfig, data: SiteData) -> list[str]:
    """Lines for ``fedgwas-site check``: transport, authorisation and consent (raises on problems)."""
    lines = [check_certificates(config.name, config.tls) if config.tls is not None else
             "INSECURE: plaintext gRPC ([tls] insecure = true), for development machines only"]
    access = config.access
    studies = ", ".join(s.study_id for s in access.studies) or "none listed"
    lines.append(f"studies: {'ANY (any_study = true)' if access.any_study else 'approved: ' + studies}")
    lines.append(f"requesters: {', '.join(access.requesters)}; minimum cohort {access.min_cohort}, minimum allele "
                 f"count {access.min_allele_count}, minimum cohort difference {access.min_cohort_difference}")
    if data.consent is None:
        lines.append("consent: no consent table ([data] consent): every sample may be analysed")
    else:
        codes, counts = np.unique(data.consent.columns["DUO"], return_counts=True)
        listed = ", ".join(f"{c} {n}" for c, n in zip(codes.tolist(), counts.tolist()))
        lines.append(f"consent: {len(data.consent.iid)} participants listed ({listed})")
    return lines
