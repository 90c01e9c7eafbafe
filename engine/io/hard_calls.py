"""PLINK 2's hard-call rules for imported dosages: ``--hard-call-threshold`` and ``--dosage-erase-threshold``.

Dosages live on PLINK 2's grid of 1/16384 (``k`` units, 0..32768 for an ALT dosage 0..2). PLINK 2 on
import (``--bgen``, ``--vcf ... dosage=DS|GP``):

* stores a hard call where the dosage's distance from the nearest integer is at most the hard-call
  threshold ``X`` (default 0.1), else a missing hard call; the hard call is ``(k + 8192) // 16384``
  (a dosage exactly halfway rounds up);
* erases the dosage (keeps only the hard call, so dosage computations see the integer) where that
  distance is at most the erase threshold ``Y`` (default 0, i.e. never: an integer dosage already is
  its hard call). PLINK 2 requires ``Y <= X``.

Both thresholds become integer units as PLINK 2 makes them, ``floor(T * 16384)`` (``0.1`` is 1638
units); PLINK 2 accepts ``0 <= T < 0.5``. PLINK 2 applies neither to a ``.pgen`` it reads (only
when it writes one, ``--make-pgen``), so a site reading a ``.pgen`` keeps the hard calls stored there.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from engine.errors import InputError
from engine.io.plink import MISSING_INT8

#: PLINK 2's dosage units per allele (kDosageMid) and half of that (kDosage4th).
DOSAGE_UNITS = 16384
_QUARTER = DOSAGE_UNITS // 2
DEFAULT_HARD_CALL_THRESHOLD = 0.1


def _units(threshold: float) -> int:
    """PLINK 2's integer threshold: ``floor(T * 16384)`` (a relative epsilon keeps exact grid values exact)."""
    return int(threshold * DOSAGE_UNITS * (1.0 + 1e-9))


@dataclass(frozen=True)
class HardCallRules:
    """``--hard-call-threshold`` and ``--dosage-erase-threshold`` of a site's dosage import."""

    hard_call_threshold: float = DEFAULT_HARD_CALL_THRESHOLD
    dosage_erase_threshold: float = 0.0

    @classmethod
    def checked(cls, hard_call_threshold: float | None, dosage_erase_threshold: float | None,
                names: tuple[str, str] = ("--hard-call-threshold", "--dosage-erase-threshold"),
                error: type[Exception] = InputError) -> "HardCallRules":
        """The rules, or ``error`` naming the flag/key (``names``) and PLINK 2's range when a value is bad.

        None means PLINK 2's default (0.1 and 0).
        """
        hard = DEFAULT_HARD_CALL_THRESHOLD if hard_call_threshold is None else hard_call_threshold
        erase = 0.0 if dosage_erase_threshold is None else dosage_erase_threshold
        for name, value in zip(names, (hard, erase)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 0.5:
                raise error(f"{name} must be a number with 0 <= value < 0.5 (PLINK 2's range), got {value!r}")
        if erase > hard:
            raise error(f"{names[1]} ({erase:g}) cannot be larger than {names[0]} ({hard:g}), as in PLINK 2")
        return cls(float(hard), float(erase))

    def check_applies(self, fmt: str, vcf_dosage: str | None, names: str = "--hard-call-threshold/"
                      "--dosage-erase-threshold") -> None:
        """InputError when non-default rules are given for a source that is not a dosage import (a BGEN, or a
        VCF read through ``vcf_dosage``): PLINK 2 applies neither to the ``.pgen`` or hard calls it reads."""
        if not self.default and not (fmt == "bgen" or (fmt == "vcf" and vcf_dosage)):
            raise InputError(f"{names} apply to dosage imports (--bgen, or --vcf with --vcf-dosage), not to genotype "
                             f"format {fmt!r}: PLINK 2 applies neither to the .pgen or hard calls it reads")

    @property
    def default(self) -> bool:
        """True for PLINK 2's defaults (hard calls within 0.1, no dosage erased)."""
        return self == HardCallRules()

    @property
    def default_hard_calls(self) -> bool:
        """True when hard calls follow PLINK 2's default threshold (what pgenlib's writer stores)."""
        return _units(self.hard_call_threshold) == _units(DEFAULT_HARD_CALL_THRESHOLD)

    def erase(self, dosage: np.ndarray) -> None:
        """Replace, in place, the dosages ``(n,)`` float64 (NaN missing) within the erase threshold of their
        hard call by that hard call (PLINK 2's ``--dosage-erase-threshold``), on the 1/16384 grid."""
        limit = _units(self.dosage_erase_threshold)
        if limit == 0:
            return  # only integer dosages are within 0 of a hard call: they are their hard call already
        units = np.rint(dosage * DOSAGE_UNITS)
        finite = np.isfinite(units)
        rem = np.where(finite, units, 0.0) % DOSAGE_UNITS
        erased = finite & (np.abs(rem - _QUARTER) >= _QUARTER - limit)
        dosage[erased] = np.floor((units[erased] + _QUARTER) / DOSAGE_UNITS)

    def hard_calls(self, dosages: np.ndarray) -> np.ndarray:
        """int8 hard calls (-127 missing) of dosages (any shape, float, NaN missing, on the 1/16384 grid)."""
        units = np.rint(np.asarray(dosages, dtype=np.float64) * DOSAGE_UNITS)
        finite = np.isfinite(units)
        safe = np.where(finite, units, 0.0)
        called = finite & (np.abs(safe % DOSAGE_UNITS - _QUARTER) >= _QUARTER - _units(self.hard_call_threshold))
        calls = np.floor((safe + _QUARTER) / DOSAGE_UNITS).astype(np.int8)
        calls[~called] = MISSING_INT8
        return calls


def add_hard_call_options(parser: argparse.ArgumentParser, what: str) -> None:
    """``--hard-call-threshold`` and ``--dosage-erase-threshold`` of a command importing ``what``."""
    parser.add_argument("--hard-call-threshold", type=float, metavar="X",
                        help=f"hard calls of {what} where the dosage is within X of an integer, else missing "
                             f"(PLINK 2's flag, 0 <= X < 0.5, default 0.1)")
    parser.add_argument("--dosage-erase-threshold", type=float, metavar="Y",
                        help=f"erase the dosages of {what} within Y of their hard call, keeping the hard call "
                             f"(PLINK 2's flag, 0 <= Y <= --hard-call-threshold, default 0)")


def hard_call_rules(args: argparse.Namespace) -> HardCallRules:
    """The rules of :func:`add_hard_call_options`' flags (InputError naming the flag when a value is bad)."""
    return HardCallRules.checked(args.hard_call_threshold, args.dosage_erase_threshold)
