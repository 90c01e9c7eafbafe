"""Adding a statistic is one class plus one registry entry: the site agent, the wire protocol, secure
aggregation and the coordinator's unmasking need nothing else.

The toy statistic below (per-variant alternate-allele count and number of observed calls) is
registered for the test only, then run by two real site agents over gRPC in a secure round.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pytest

from engine.cohort.cohort import Cohort
from engine.io.bed_writer import MISSING_INT8
from engine.simulate import SimulationSpec, simulate_study
from engine.stats import registry
from engine.stats.statistic import InputSpec, flip_genotypes
from engine.tasks import CohortRequest, TaskSpec
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from site_agent.server import make_server
from tests.adversarial.harness import Coordinator, client_for
from tests.consortium import provision_sites

N_VARIANTS = 40


class AlleleCountStatistic:
    """Toy statistic: per variant, the counted allele's total over observed calls and the number observed."""

    name = "toy_allele_count"
    needs_phenotype = False
    inputs: Mapping[str, InputSpec] = {}

    def prepare(self, cohort: Cohort, inputs: Mapping[str, np.ndarray]) -> None:
        return None

    def width(self, state: Any) -> int:
        return 2

    def block(self, state: Any, genotypes: np.ndarray, flip: np.ndarray, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        oriented = flip_genotypes(genotypes, flip)
        observed = oriented != MISSING_INT8
        return np.column_stack([np.where(observed, oriented, 0).sum(axis=0), observed.sum(axis=0)]).astype(np.float64)


@pytest.fixture
def toy_statistic(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(registry.REGISTRY, AlleleCountStatistic.name, AlleleCountStatistic())  # the one line
    return AlleleCountStatistic.name


def test_a_registered_statistic_runs_at_real_sites_under_secure_aggregation(toy_statistic: str, tmp_path: Path) -> None:
    study = simulate_study(SimulationSpec(site_sizes=(60, 50), n_variants=N_VARIANTS, seed=4, write_pooled=False),
                           tmp_path / "sim")
    configs = provision_sites(tmp_path, {"site1": study.site_bfiles[0], "site2": study.site_bfiles[1]},
                              study.pheno_path, study.covar_path)
    datas = {name: load_site_data(load_site_config(path)) for name, path in configs.items()}
    servers, clients = [], {}
    for name, data in datas.items():
        server, port = make_server(data, "127.0.0.1:0")
        server.start()
        servers.append(server)
        clients[name] = client_for(name, port)
    try:
        flip = np.zeros(N_VARIANTS, bool)
        flip[::3] = True
        task = TaskSpec(study_id="toy", round=1, analysis=toy_statistic, cohort=CohortRequest(""), privacy="secagg",
                        participants=tuple(datas), block_size=16, variant_index=np.arange(N_VARIANTS), flip=flip,
                        parameters={"audit.request_id": uuid.uuid4().hex})
        result = Coordinator(clients, datas["site1"].require_roster(), {}).run({name: task for name in datas})
    finally:
        for client in clients.values():
            client.close()
        for server in servers:
            server.stop(grace=None)
    assert result.total is not None and not result.errors
    expected = np.zeros((N_VARIANTS, 2))
    for data in datas.values():  # the naive oracle: every site's genotypes, counted one by one
        genotypes = data.genotypes.read_block(np.arange(N_VARIANTS), np.arange(data.genotypes.n_samples))
        for j in range(N_VARIANTS):
            calls = [int(g) for g in genotypes[:, j] if g != MISSING_INT8]
            expected[j] += [sum(2 - g if flip[j] else g for g in calls), len(calls)]
    np.testing.assert_array_equal(result.total.reshape(N_VARIANTS, 2), expected)
