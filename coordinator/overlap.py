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
from coordinator.study import StudyConfig

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


def describe_after_drop(executor: RoundExecutor) -> None:
    """The study's dropping site described again after the exchange, in ``executor.descriptions`` (its
    analysed samples without the ones it left out); nothing when that site is gone."""
    client = next((c for c in executor.clients if c.name == executor.config.drop_shared_from), None)
    if client is not None:
        executor.descriptions[client.name] = client.describe(executor.config.study_id,
                                                             executor.config.describe_cohort)[0]


def overlap_notes(config: StudyConfig, overlaps: dict[str, int]) -> tuple[str, ...]:
    """The summary's notes on participants shared between sites: the counts, what was left out, and a
    warning for every pair whose shared participants are analysed twice."""
    if not overlaps:
        return ()
    notes = ("participants shared between sites (private set intersection on IIDs): "
             + ", ".join(f"{pair}: {n}" for pair, n in overlaps.items()),)
    drop = config.drop_shared_from
    if drop:
        left_out = sum(n for pair, n in overlaps.items() if drop in pair.split("+"))
        notes += (f"{left_out} participant(s) shared with other sites left out at {drop} before any statistic "
                  f"(only {drop} knows which)",)
    twice = {pair: n for pair, n in overlaps.items() if n and drop not in pair.split("+")}
    if twice:
        notes += ("warning: participants shared between sites are analysed twice ("
                  + ", ".join(f"{pair}: {n}" for pair, n in twice.items())
                  + "); --drop-shared-from SITE (study: drop_shared_from) leaves them out at one site",)
    return notes
