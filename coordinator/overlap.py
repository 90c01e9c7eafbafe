"""The study's private overlap check: how many participants each pair of sites shares (never which).

For every pair of live sites (A, B), three calls relay blinded IDs (:mod:`engine.overlap`): A blinds its
IDs; B blinds them again and blinds its own; A counts the matches. The counts go into the summary,
the GWAS-SSF metadata and the report. The study decides what to do about shared participants: by
default they are analysed twice (a warning in the summary gives the counts); with ``drop_shared_from``
that site counts every pair it is in by the one-sided exchange (``drop_shared``), learns which of its
own participants are shared and leaves them out of every cohort of the study. The coordinator and the
other sites still learn only the counts.
"""

from __future__ import annotations

import itertools
import logging

from coordinator.rounds import RoundExecutor
from engine.cohort.harmonise import VariantManifest
from engine.tasks import SiteDescription

log = logging.getLogger("coordinator")


def pairwise_overlaps(executor: RoundExecutor) -> dict[str, int]:
    """``{"A+B": shared participants}`` for every pair of live sites, in study order (with
    ``drop_shared_from``, the pairs of that site count what it left out)."""
    config = executor.config
    cohort = config.describe_cohort
    keys = {name: (executor.descriptions[name].overlap_public_key, executor.descriptions[name].overlap_key_signature)
            for name in executor.live_sites}
    out: dict[str, int] = {}
    for first, second in itertools.combinations(executor.clients, 2):
        drop = config.drop_shared_from in (first.name, second.name)
        a, b = (second, first) if second.name == config.drop_shared_from else (first, second)  # a counts
        blinded, _, _ = a.compare_cohorts(config.study_id, "blind", b.name, keys[b.name], cohort,
                                          requester=config.requester, drop_shared=drop)
        double, single, _ = b.compare_cohorts(config.study_id, "reblind", a.name, keys[a.name], cohort,
                                              first=blinded, requester=config.requester, drop_shared=drop)
        _, _, count = a.compare_cohorts(config.study_id, "count", b.name, keys[b.name], cohort, first=double,
                                        second=single, requester=config.requester, drop_shared=drop)
        out[f"{first.name}+{second.name}"] = count
        log.info("sites %s and %s share %d participants%s", first.name, second.name, count,
                 f" (left out at {a.name})" if drop else "")
    return out


def describe_after_drop(executor: RoundExecutor) -> tuple[SiteDescription, VariantManifest] | None:
    """The study's dropping site described again after the exchange (its analysed samples without the
    ones it left out), or None when the study drops nobody or that site is gone."""
    client = next((c for c in executor.clients if c.name == executor.config.drop_shared_from), None)
    if client is None:
        return None
    described = client.describe(executor.config.study_id, executor.config.describe_cohort)
    executor.descriptions[client.name] = described[0]
    return described
