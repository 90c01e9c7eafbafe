"""The study's private overlap check: how many participants each pair of sites shares (never which).

For every pair of live sites (A, B), three calls relay blinded IDs (:mod:`engine.overlap`): A blinds its
IDs; B blinds them again and blinds its own; A counts the matches. The counts go into the summary,
the GWAS-SSF metadata and the report; the study then decides what to do about shared participants
(fedgwas does not drop them: doing so would tell a site which of its participants are shared).
"""

from __future__ import annotations

import itertools
import logging

from coordinator.rounds import RoundExecutor

log = logging.getLogger("coordinator")


def pairwise_overlaps(executor: RoundExecutor) -> dict[str, int]:
    """``{"A+B": shared participants}`` for every pair of live sites, in study order."""
    config = executor.config
    cohort = config.describe_cohort
    keys = {name: (executor.descriptions[name].overlap_public_key, executor.descriptions[name].overlap_key_signature)
            for name in executor.live_sites}
    out: dict[str, int] = {}
    for a, b in itertools.combinations(executor.clients, 2):
        blinded, _, _ = a.compare_cohorts(config.study_id, "blind", b.name, keys[b.name], cohort,
                                          requester=config.requester)
        double, single, _ = b.compare_cohorts(config.study_id, "reblind", a.name, keys[a.name], cohort,
                                              first=blinded, requester=config.requester)
        _, _, count = a.compare_cohorts(config.study_id, "count", b.name, keys[b.name], cohort, first=double,
                                        second=single, requester=config.requester)
        out[f"{a.name}+{b.name}"] = count
        log.info("sites %s and %s share %d participants", a.name, b.name, count)
    return out
