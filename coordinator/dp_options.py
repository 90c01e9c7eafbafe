"""DP and variant-selection options of a study: command-line flags, ``[dp]`` in a study TOML, ``--extract``.

Command line (``fedgwas local``)::

    --dp-epsilon E --dp-delta D [--dp-mechanism gaussian|laplace] [--dp-collusion T]
    [--dp-bounds QT=-3:3,AGE=20:70,...] [--site-budget-epsilon B [--site-budget-delta D]]
    [--extract IDS.txt]

Study TOML::

    [analysis]
    extract = "ids.txt"          # PLINK's --extract: only these variant IDs (relative to the study file)

    [dp]
    epsilon = 1.0                # per release (each round of an analysis is one release)
    delta = 1e-6
    mechanism = "gaussian"       # or "laplace" (pure epsilon-DP)
    collusion = 1                # sites that may pool their noise shares with the coordinator
    bounds = { QT = [-3, 3], AGE = [20, 70] }   # clipping ranges (linear regression needs them all)
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from engine.privacy import dp
from engine.privacy.dp_release import DpRequest
from engine.config_tables import checked_table
from engine.errors import ConfigError, InputError, ProtocolError
from engine.cohort.harmonise import Harmonisation, SiteAlignment
from engine.privacy.budget import BudgetPolicy


def add_options(parser: argparse.ArgumentParser) -> None:
    """The DP, budget and ``--extract`` flags of ``fedgwas local``."""
    group = parser.add_argument_group(
        "differential privacy",
        "Each site adds its share of calibrated OpenDP noise before its statistics are protected, and "
        "charges its own budget first (see docs/privacy.md). Before anything is spent, the coordinator "
        "prints the noise scale, the expected loss of precision and each site's remaining budget.")
    group.add_argument("--dp-epsilon", type=float, metavar="E", help="privacy loss epsilon of each release")
    group.add_argument("--dp-delta", type=float, default=1e-6, metavar="D",
                       help="delta of each release (Gaussian noise; default 1e-6)")
    group.add_argument("--dp-mechanism", choices=list(dp.MECHANISMS), default="gaussian",
                       help="gaussian ((epsilon, delta)-DP via zCDP, default) or laplace (pure epsilon-DP)")
    group.add_argument("--dp-collusion", type=int, default=0, metavar="T",
                       help="sites that may collude with the coordinator; the other sites alone carry the "
                            "full noise (default 0)")
    group.add_argument("--dp-bounds", default="", metavar="NAME=LO:HI,...",
                       help="clipping ranges of the phenotype and every covariate (needed by --glm linear)")
    group.add_argument("--site-budget-epsilon", type=float, metavar="B",
                       help="local runs: give every site a DP budget of epsilon B (spending is kept in "
                            "OUT/sites/<site>/ledger.sqlite across runs)")
    group.add_argument("--site-budget-delta", type=float, metavar="D",
                       help="delta of the sites' budget (default: --dp-delta)")
    parser.add_argument("--extract", metavar="IDS.txt",
                        help="analyse only the variants whose IDs are listed in this file (as PLINK's --extract)")


def parse_bounds(text: str) -> tuple[tuple[str, float, float], ...]:
    """``"QT=-3:3,AGE=20:70"`` as ``(("QT", -3.0, 3.0), ("AGE", 20.0, 70.0))``."""
    bounds = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, limits = item.partition("=")
        lo, sep, hi = limits.rpartition(":")
        try:
            if not name or not sep:
                raise ValueError
            bounds.append((name.strip(), float(lo), float(hi)))
        except ValueError:
            raise InputError(f"--dp-bounds item {item!r} must read NAME=LO:HI, e.g. QT=-3:3") from None
    return tuple(sorted(bounds))


def dp_table_from_args(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``[dp]`` table of a ``local`` run (``None`` without ``--dp-epsilon``), validated by
    :func:`request_from_toml` as a study file's."""
    if getattr(args, "dp_epsilon", None) is None:
        if getattr(args, "dp_bounds", "") or getattr(args, "dp_collusion", 0):
            raise InputError("--dp-bounds and --dp-collusion need --dp-epsilon")
        return None
    bounds = parse_bounds(args.dp_bounds)
    try:  # checked here too, so that a message names the flag rather than the table key
        DpRequest(epsilon=args.dp_epsilon, delta=args.dp_delta, mechanism=args.dp_mechanism,
                  collusion=args.dp_collusion, bounds=bounds)
    except ProtocolError as error:
        raise InputError(str(error).replace("dp.", "--dp-")) from None
    return {"epsilon": args.dp_epsilon, "delta": args.dp_delta, "mechanism": args.dp_mechanism,
            "collusion": args.dp_collusion, "bounds": {name: [lo, hi] for name, lo, hi in bounds}}


def site_budget_from_args(args: argparse.Namespace) -> BudgetPolicy | None:
    """Every local site's budget (``None`` without ``--site-budget-epsilon``: sites refuse DP)."""
    epsilon = getattr(args, "site_budget_epsilon", None)
    if epsilon is None:
        return None
    delta = args.site_budget_delta if args.site_budget_delta is not None else args.dp_delta
    if not (math.isfinite(epsilon) and 0.0 < epsilon <= dp.MAX_EPSILON) or not 0.0 < delta < 1.0:
        raise InputError(f"--site-budget-epsilon {epsilon!r} must be in (0, {dp.MAX_EPSILON:g}] and its delta "
                         f"{delta!r} in (0, 1)")
    return BudgetPolicy(epsilon=epsilon, delta=delta)


def read_extract(path: Path | str) -> tuple[str, ...]:
    """Variant IDs listed in a PLINK ``--extract`` file (whitespace-separated; order and repeats ignored)."""
    path = Path(path)
    try:
        ids = path.read_text(encoding="utf-8").split()
    except FileNotFoundError:
        raise InputError(f"--extract file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--extract file {str(path)!r} cannot be read: {exc}") from None
    if not ids:
        raise InputError(f"--extract file {str(path)!r} lists no variant IDs")
    return tuple(dict.fromkeys(ids))


def restrict_to_ids(harmonised: Harmonisation, ids: tuple[str, ...]) -> Harmonisation:
    """The harmonised variants whose ID (the first site's) is in ``ids``; an error if none is."""
    keep = np.isin(harmonised.variants.variant_id, np.array(ids, dtype=str))
    if not keep.any():
        raise InputError(f"none of the {len(ids)} --extract IDs (e.g. {ids[0]!r}) is among the "
                         f"{len(keep)} variants the sites share")
    return Harmonisation(
        variants=harmonised.variants.take(keep),
        alignments=tuple(SiteAlignment(index=a.index[keep], flip=a.flip[keep]) for a in harmonised.alignments),
        dropped={**harmonised.dropped, "extract": int((~keep).sum())}, id_mismatches=harmonised.id_mismatches)


def request_from_toml(table: Any, where: str) -> DpRequest | None:
    """``[dp]`` of a study file (``None`` when absent); errors name the key."""
    if table is None:
        return None
    checked_table(table, f"{where} [dp]", {"epsilon", "delta", "mechanism", "collusion", "bounds"})
    bounds_table = table.get("bounds", {})
    if not isinstance(bounds_table, dict) or any(
            not isinstance(v, list) or len(v) != 2 or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in v)
            for v in bounds_table.values()):
        raise ConfigError(f"{where}: [dp] bounds must map names to [lo, hi], e.g. {{ QT = [-3, 3] }}")
    values = {"epsilon": table.get("epsilon"), "delta": table.get("delta", 1e-6),
              "collusion": table.get("collusion", 0)}
    for key, value in values.items():
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (key == "collusion" and not isinstance(value, int)):
            raise ConfigError(f"{where}: [dp] {key} must be a number, got {value!r}")
    mechanism = table.get("mechanism", "gaussian")
    try:
        return DpRequest(epsilon=float(values["epsilon"]), delta=float(values["delta"]), mechanism=str(mechanism),
                         collusion=int(values["collusion"]),
                         bounds=tuple(sorted((str(n), float(v[0]), float(v[1])) for n, v in bounds_table.items())))
    except ProtocolError as error:
        raise ConfigError(f"{where}: [dp] {error}") from None
