"""Test helper: provision in-process sites that pin one roster (each other's identity keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from engine.privacy import secagg
from engine.privacy.secagg import RoundMasker
from site_agent.provision import init_site, provision_roster


def provision_sites(root: Path, bfiles: Mapping[str, Any], pheno: Any, covar: Any, *,
                    per_site: Mapping[str, dict[str, Any]] | None = None, **init_kwargs: Any) -> dict[str, Path]:
    """``init_site`` for each ``{name: genotype path}`` in ``root/<name>``, all pinning ``root/roster.toml``;
    returns ``{name: config path}``. ``per_site`` adds keyword arguments for single sites."""
    directories = {name: root / name for name in bfiles}
    tls = init_kwargs.get("tls_by_site")
    roster = provision_roster(directories, root / "roster.toml", tls)
    init_kwargs.pop("tls_by_site", None)
    configs = {}
    for name, bfile in bfiles.items():
        extra = {**init_kwargs, **((per_site or {}).get(name, {}))}
        if tls is not None:
            extra["tls"] = tls[name]
        configs[name] = init_site(name, str(bfile), str(pheno), None if covar is None else str(covar),
                                  directories[name], "127.0.0.1:0", roster=roster, **extra)
    return configs


def pairwise_maskers(n: int, self_mask: bool = False, context: bytes = b"c" * 32) -> tuple[list[str], list[RoundMasker]]:
    """Maskers of ``n`` sites from fresh X25519 keys, as a round's key exchange derives them (self seed b"s"*32)."""
    names = [f"site{i}" for i in range(n)]
    keys = [secagg.generate_private_key() for _ in names]
    public = {name: secagg.public_key_bytes(key) for name, key in zip(names, keys)}
    maskers = []
    for name, key in zip(names, keys):
        pairs = {other: secagg.pair_key(key, name, other, public[other], context) for other in names if other != name}
        maskers.append(RoundMasker(name, b"s" * 32 if self_mask else None, pairs, context))
    return names, maskers
