"""Provisioning a site: its config file and its long-term secure-aggregation key pair."""

from __future__ import annotations

from pathlib import Path

from engine.privacy import secagg
from engine.errors import InputError
from engine.privacy.budget import BudgetPolicy
from site_agent.config import render_site_config
from protos.pki import TlsFiles
from site_agent.policy import AccessPolicy


def he_context_pin(path: Path) -> str:
    """SHA-256 of a key holder's public CKKS context file, after checking that it is one.

    Refuses (PrivacyError) a file holding a secret key, too little security or parameters other than
    the protocol's, so a site never pins a context it would later refuse.
    """
    from engine.privacy.he import PublicContext  # imports tenseal: only when HE is set up

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"--he-context {str(path)!r} cannot be read: {exc.strerror}") from None
    return PublicContext(data).fingerprint


def init_site(name: str, genotypes: str, pheno: str, covar: str | None, directory: Path, listen: str,
              allow_plaintext: bool = False, threads: int | None = None, genotype_format: str = "plink1",
              he_context_sha256: str | None = None, budget: BudgetPolicy | None = None,
              tls: TlsFiles | None = None, access: AccessPolicy | None = None, consent: str | None = None,
              sample: str | None = None, vcf_dosage: str | None = None) -> Path:
    """Create ``directory/site.toml`` and ``directory/keys/secagg.key``; returns the config path.

    ``genotypes`` is a PLINK 1 or PLINK 2 prefix, a VCF/BCF or a BGEN file, per ``genotype_format``;
    ``sample`` a BGEN's .sample file, ``vcf_dosage`` ("DS"/"GP") a VCF's dosage field.

    An existing key is kept (so re-running never changes a site's identity); an existing config is
    rewritten. ``he_context_sha256`` pins a key holder's public CKKS context and enables mode "he".
    ``budget`` writes a ``[budget]`` section (the ledger next to the config keeps what was spent, so a
    rewritten config never resets the spending).

    ``tls`` is the site's mutual-TLS material; None writes ``[tls] insecure = true`` (development and
    in-process tests only: ``fedgwas-site init`` asks for one or the other explicitly). ``access``
    writes an ``[access]`` section (site_agent/policy.py); ``consent`` the ``#FID IID DUO`` table.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / "keys" / "secagg.key"
    if not key_path.exists():
        secagg.save_private_key(secagg.generate_private_key(), key_path)
    modes = ("secagg", "plaintext") if allow_plaintext else ("secagg",)
    if he_context_sha256 is not None:
        modes += ("he",)
    if tls is not None:  # the config's relative paths are read from its own directory: write absolute ones
        tls = TlsFiles(Path(tls.ca).resolve(), Path(tls.cert).resolve(), Path(tls.key).resolve())
    config_path = directory / "site.toml"
    config_path.write_text(render_site_config(
        name=name, listen=listen, genotypes=str(Path(genotypes).resolve()), genotype_format=genotype_format,
        pheno=str(Path(pheno).resolve()),
        covar=None if covar is None else str(Path(covar).resolve()),
        secagg_private_key="keys/secagg.key", privacy_modes=modes, threads=threads,
        he_context_sha256=he_context_sha256, budget=budget, tls=tls, access=access,
        consent=None if consent is None else str(Path(consent).resolve()),
        sample=None if sample is None else str(Path(sample).resolve()), vcf_dosage=vcf_dosage,
    ), encoding="utf-8")
    return config_path
