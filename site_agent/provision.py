"""Provisioning a site: its config file and its long-term secure-aggregation key pair."""

from __future__ import annotations

from pathlib import Path

from engine import secagg
from site_agent.config import render_site_config


def init_site(name: str, genotypes: str, pheno: str, covar: str | None, directory: Path, listen: str,
              allow_plaintext: bool = False, threads: int | None = None, genotype_format: str = "plink1") -> Path:
    """Create ``directory/site.toml`` and ``directory/keys/secagg.key``; returns the config path.

    ``genotypes`` is a PLINK 1 or PLINK 2 prefix or a VCF/BCF file, per ``genotype_format``.

    An existing key is kept (so re-running never changes a site's identity); an existing config is
    rewritten.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / "keys" / "secagg.key"
    if not key_path.exists():
        secagg.save_private_key(secagg.generate_private_key(), key_path)
    modes = ("secagg", "plaintext") if allow_plaintext else ("secagg",)
    config_path = directory / "site.toml"
    config_path.write_text(render_site_config(
        name=name, listen=listen, genotypes=str(Path(genotypes).resolve()), genotype_format=genotype_format,
        pheno=str(Path(pheno).resolve()),
        covar=None if covar is None else str(Path(covar).resolve()),
        secagg_private_key="keys/secagg.key", privacy_modes=modes, threads=threads,
    ), encoding="utf-8")
    return config_path
