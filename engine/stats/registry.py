"""The per-round site statistics, registered by name.

A new statistic is one folder under ``engine/stats/`` (its site kernel and its coordinator solver
side by side) plus one entry here. The site agent runs any registered statistic the same way (read a
block of the requested variants for the cohort's samples, compute, protect, stream); the wire
protocol carries its inputs as named arrays; the coordinator's driver turns aggregated totals into
results (:mod:`engine.stats.statistic` says what a statistic looks like).
"""

from __future__ import annotations

from engine.errors import ProtocolError
from engine.stats.ld.kernel import LdPairsStatistic
from engine.stats.linear.statistic import LinearCompleteStatistic, LinearStatistic, LinearTotalsStatistic
from engine.stats.logistic.statistics import (CovariateFitStatistic, ExactLogisticStatistic, FirthStatistic,
                                              LogisticStartStatistic, LogisticStatistic)
from engine.stats.moments import MomentsStatistic
from engine.stats.pca.kernel import PcaStatistic
from engine.stats.qc.counts import QcStatistic
from engine.stats.qc.dosage import DosageSumsStatistic
from engine.stats.statistic import SiteStatistic

REGISTRY: dict[str, SiteStatistic] = {statistic.name: statistic for statistic in (
    LinearStatistic(), QcStatistic(), LogisticStatistic(), ExactLogisticStatistic(), LogisticStartStatistic(),
    FirthStatistic(), CovariateFitStatistic(), LdPairsStatistic(), PcaStatistic(), MomentsStatistic(),
    DosageSumsStatistic(), LinearCompleteStatistic(), LinearTotalsStatistic())}


def get_statistic(name: str) -> SiteStatistic:
    """The registered statistic ``name``; a ProtocolError naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ProtocolError(f"task.analysis {name!r} is not one of {sorted(REGISTRY)}") from None
