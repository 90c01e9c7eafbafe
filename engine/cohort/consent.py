"""Participant consent as GA4GH Data Use Ontology (DUO) codes, matched against a study's data use.

Each site keeps a consent table ``#FID IID DUO`` (or ``#IID DUO``): one entry per participant, a
primary permission optionally followed by modifiers, separated by ``;`` (e.g. ``HMB;NPU``).

Permissions: ``GRU`` (general research use), ``HMB`` (health/medical/biomedical research),
``DS:<term>`` (disease-specific research, e.g. ``DS:MONDO:0005148``), ``NONE``/``WITHDRAWN`` (no use).
Modifiers: ``NPU`` (not-for-profit use only), ``NCU`` (treated like NPU: non-commercial use only).

A study declares a :class:`DataUse`: a purpose (``GRU`` general research, ``HMB`` health research,
``POA`` population origins or ancestry, ``DS:<term>`` research on one disease) and whether the use is
commercial. A participant is included exactly when (docs/consent.md):

- the permission covers the purpose: ``GRU`` covers every purpose; ``HMB`` covers ``HMB`` and any
  ``DS:<term>`` but not ``GRU`` or ``POA``; ``DS:X`` covers only ``DS:X`` (the same term: ontology
  subclasses are not expanded, which can only exclude more participants);
- and no modifier forbids it: ``NPU``/``NCU`` exclude commercial studies;
- a modifier without a permission (``NPU`` alone), ``NONE``/``WITHDRAWN``, an unknown code and a
  participant without an entry are never included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from engine.errors import InputError, ProtocolError

PURPOSES = ("GRU", "HMB", "POA")
PERMISSIONS = ("GRU", "HMB")
WITHDRAWN = ("NONE", "WITHDRAWN")
NON_COMMERCIAL = ("NPU", "NCU", "NPUNCU")
_DISEASE = re.compile(r"^DS:[A-Za-z][A-Za-z0-9_]*:[A-Za-z0-9_.]+$")


@dataclass(frozen=True)
class DataUse:
    """What a study uses the data for: ``purpose`` (GRU, HMB, POA or DS:<term>) and ``commercial``."""

    purpose: str
    commercial: bool = False

    def __post_init__(self) -> None:
        if self.purpose not in PURPOSES and not _DISEASE.match(self.purpose):
            raise ProtocolError(f"data use purpose {self.purpose!r} must be one of {list(PURPOSES)} or DS:<ontology "
                                f"term> (e.g. DS:MONDO:0005148)")


@dataclass(frozen=True)
class Consent:
    """One participant's consent: a permission (None when absent or withdrawn) and its modifiers."""

    permission: str | None
    modifiers: tuple[str, ...] = ()

    def covers(self, use: DataUse) -> bool:
        """True when this consent allows ``use`` (rules in the module docstring)."""
        if self.permission is None:
            return False
        if use.commercial and any(m in NON_COMMERCIAL for m in self.modifiers):
            return False
        if self.permission == "GRU":
            return True
        if self.permission == "HMB":
            return use.purpose == "HMB" or use.purpose.startswith("DS:")
        return self.permission == use.purpose  # DS:X covers DS:X only


def parse_duo(text: str, where: str = "consent") -> Consent:
    """A consent entry such as ``GRU``, ``HMB;NPU``, ``DS:MONDO:0005148`` or ``NONE``.

    Raises InputError for an unknown code (a typo must not silently change who is included).
    """
    codes = [c.strip().upper() for c in text.split(";") if c.strip()]
    if not codes:
        raise InputError(f"{where}: empty DUO entry")
    permission: str | None = None
    modifiers = []
    for code in codes:
        if code in WITHDRAWN:
            return Consent(None)
        if code in PERMISSIONS or _DISEASE.match(code):
            if permission is not None:
                raise InputError(f"{where}: DUO entry {text!r} has two permissions ({permission}, {code})")
            permission = code
        elif code in NON_COMMERCIAL:
            modifiers.append(code)
        else:
            raise InputError(f"{where}: unknown DUO code {code!r} in {text!r}; expected GRU, HMB, DS:<term>, NONE, "
                             f"optionally with ;NPU or ;NCU")
    return Consent(permission, tuple(modifiers))


def consent_mask(fam_fid: np.ndarray, fam_iid: np.ndarray, table_fid: np.ndarray | None, table_iid: np.ndarray,
                 codes: np.ndarray, use: DataUse, where: str = "consent") -> np.ndarray:
    """Boolean ``(n_fam,)``: the .fam samples whose consent entry covers ``use`` (no entry: excluded).

    ``table_fid`` None keys the table by IID alone.
    """
    def keys(fid: np.ndarray | None, iid: np.ndarray) -> list[str]:
        return [str(i) for i in iid] if fid is None else [f"{f}\x00{i}" for f, i in zip(fid, iid)]

    parsed = {code: parse_duo(code, where) for code in set(codes.tolist())}
    covered = {key: parsed[code].covers(use) for key, code in zip(keys(table_fid, table_iid), codes.tolist())}
    fam_keys = keys(None if table_fid is None else fam_fid, fam_iid)
    return np.fromiter((covered.get(key, False) for key in fam_keys), dtype=bool, count=len(fam_keys))
