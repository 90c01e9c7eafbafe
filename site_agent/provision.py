"""Provisioning a site: its config file, its Ed25519 identity key and its pinned consortium roster."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import shutil

from engine.audit.heads import create_signing_key
from engine.privacy import roster as roster_module
from engine.errors import InputError
from engine.io.hard_calls import HardCallRules
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


IDENTITY_KEY = Path("keys") / "identity.key"
ROSTER_FILE = "roster.toml"


def ensure_identity_key(directory: Path) -> bytes:
    """Create ``directory/keys/identity.key`` unless it exists (a site's identity never changes by
    re-running init); returns its raw public key (what the consortium puts in its roster)."""
    key_path = directory / IDENTITY_KEY
    if not key_path.exists():
        roster_module.save_identity_key(roster_module.generate_identity_key(), key_path)
    return roster_module.public_bytes(roster_module.load_identity_key(key_path))


def provision_roster(directories: Mapping[str, Path], path: Path,
                     tls: Mapping[str, TlsFiles] | None = None) -> Path:
    """Write a roster at ``path`` listing each ``{site name: site directory}`` with its identity key
    (created there if missing) and, given ``tls``, its certificate's fingerprint. For consortia run by
    one operator (``fedgwas local``, tests); a real consortium collects the keys ``init`` prints."""
    entries = []
    for name, directory in directories.items():
        cert = None if tls is None else roster_module.certificate_sha256(Path(tls[name].cert).read_bytes())
        entries.append(roster_module.RosterEntry(name, ensure_identity_key(directory), cert))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(roster_module.render_roster(entries), encoding="utf-8")
    return path


def init_site(name: str, genotypes: str, pheno: str, covar: str | None, directory: Path, listen: str,
              allow_plaintext: bool = False, threads: int | None = None, genotype_format: str = "plink1",
              he_context_sha256: str | None = None, budget: BudgetPolicy | None = None,
              tls: TlsFiles | None = None, access: AccessPolicy | None = None, consent: str | None = None,
              witness: str | None = None, roster: Path | None = None, min_participants: int = 2,
              genotyping_technology: str | None = None, workers: int | str | None = None,
              scheduler: str | None = None, sample: str | None = None, vcf_dosage: str | None = None,
              hard_calls: HardCallRules = HardCallRules()) -> Path:
    """Create ``directory/site.toml``, ``directory/keys/identity.key`` and the ledger signing key
    ``directory/keys/ledger-signing.key`` (Ed25519, 0600, public key beside it as ``.pub``); returns the
    config path.

    ``genotypes`` is a PLINK 1 or PLINK 2 prefix, a VCF/BCF or a BGEN file, per ``genotype_format``;
    ``sample`` a BGEN's .sample file, ``vcf_dosage`` ("DS"/"GP") a VCF's dosage field, ``hard_calls``
    the hard-call rules of a BGEN or dosage-VCF import (InputError for any other format).

    An existing key is kept (so re-running never changes a site's identity); an existing config is
    rewritten. ``he_context_sha256`` pins a key holder's public CKKS context and enables mode "he".
    ``budget`` writes a ``[budget]`` section (the ledger next to the config keeps what was spent, so a
    rewritten config never resets the spending).

    ``tls`` is the site's mutual-TLS material; None writes ``[tls] insecure = true`` (development and
    in-process tests only: ``fedgwas-site init`` asks for one or the other explicitly). ``access``
    writes an ``[access]`` section (site_agent/policy.py); ``consent`` the ``#FID IID DUO`` table;
    ``witness`` the address of a ledger-head witness (``[witness] address``); ``genotyping_technology``
    the site's declared technology (reported in the GWAS-SSF metadata).
    ``roster`` is the consortium roster file: it is validated, copied to ``directory/roster.toml`` and
    pinned (without one the site serves no secure-aggregation or HE task until it gets one).
    ``workers`` (a number or "auto") or ``scheduler`` ("tcp://host:port") write the ``[compute]``
    backend (site_agent/compute/settings.py); neither: blocks are computed in the agent process.
    """
    hard_calls.check_applies(genotype_format, vcf_dosage)
    directory.mkdir(parents=True, exist_ok=True)
    ensure_identity_key(directory)
    create_signing_key(directory / "keys" / "ledger-signing.key")  # kept if it exists
    roster_path = None
    if roster is not None:
        roster_module.load_roster(Path(roster))  # refuse a malformed roster before pinning it
        roster_path = directory / ROSTER_FILE
        if Path(roster).resolve() != roster_path.resolve():
            shutil.copyfile(roster, roster_path)
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
        identity_key=str(IDENTITY_KEY), roster=None if roster_path is None else ROSTER_FILE,
        min_participants=min_participants, privacy_modes=modes, threads=threads,
        he_context_sha256=he_context_sha256, budget=budget, tls=tls, access=access,
        consent=None if consent is None else str(Path(consent).resolve()),
        ledger_signing_key="keys/ledger-signing.key", witness=witness,
        genotyping_technology=genotyping_technology,
        workers=workers, scheduler=scheduler,
        sample=None if sample is None else str(Path(sample).resolve()), vcf_dosage=vcf_dosage,
        hard_calls=hard_calls,
    ), encoding="utf-8")
    return config_path
