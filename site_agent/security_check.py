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
from site_agent.policy import ANY
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
    lines += permissive_warnings(config, data)
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


def permissive_warnings(config: SiteConfig, data: SiteData) -> list[str]:
    """One ``WARNING:`` line per permissive setting (``fedgwas-site check``)."""
    access, warnings = config.access, []
    if data.roster is None:
        warnings.append("no consortium roster ([keys] roster): secure-aggregation and HE tasks are refused")
    if access.any_study:
        warnings.append("[access] any_study = true (or no [access] section): every study id is served")
    if ANY in access.requesters or any(s.requesters and ANY in s.requesters for s in access.studies):
        warnings.append("[access] requesters includes \"*\": any certificate of the consortium CA may request")
    if access.min_cohort == 0:
        warnings.append("[access] min_cohort = 0: cohorts of any size are released")
    if access.allow_cohort_differencing:
        warnings.append("[access] allow_cohort_differencing: a study may release over any number of sample sets")
    if any(s.purpose is None for s in access.studies):
        warnings.append("an [[access.study]] has no purpose: its studies may declare any data use")
    if "plaintext" in config.privacy_modes:
        warnings.append("[policy] privacy_modes accepts \"plaintext\": statistics may leave in the clear")
    if config.min_participants < 3:
        warnings.append(f"[policy] min_participants = {config.min_participants}: a sum over {config.min_participants} "
                        f"sites exposes this site to one colluding site")
    if config.max_colluding_sites == 0:
        warnings.append("[policy] max_colluding_sites = 0: secure rounds at a majority threshold are accepted, which "
                        "a participating site colluding with the coordinator could defeat (see docs/threat-model.md)")
    return [f"WARNING: {w}" for w in warnings]
