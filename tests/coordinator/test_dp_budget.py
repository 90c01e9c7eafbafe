"""Site-enforced DP budgets end to end: charge before release, refusal at every site, crashes, audit.

Three in-process site agents on port 0 run DP studies from a study file (``fedgwas run``). The budget
test counts genotype reads at every site to show that a refused request computes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from engine.audit.coordinator_log import read_log
from fedgwas.cli import main
from engine.errors import ConfigError, PrivacyError
from engine.simulate import SimulationSpec, simulate_study
from engine.tasks import CohortRequest, ResultBlock, TaskDone, TaskSpec
from site_agent import handlers
from engine.privacy.budget import BudgetPolicy
from site_agent.config import load_site_config
from site_agent.data import SiteData, load_site_data
from engine.audit.ledger import open_entries, verify
from tests.consortium import provision_sites
from site_agent.server import make_server

ROOT = Path(__file__).resolve().parents[2]
EPSILON = 1.0
#: Two releases of epsilon 1 at delta 1e-6 compose (zCDP) to epsilon ~1.44; a third would need ~1.78.
BUDGET = BudgetPolicy(epsilon=1.6, delta=1e-6)


class Sites:
    def __init__(self, study, datas: list[SiteData], endpoints: list[tuple[str, str]], reads: dict[str, int]) -> None:
        self.study, self.datas, self.endpoints, self.reads = study, datas, endpoints, reads

    def study_file(self, path: Path, extra: str, out: str = "out") -> Path:
        sites = "".join(f'[[sites]]\nname = "{n}"\naddress = "{a}"\n\n' for n, a in self.endpoints)
        path.write_text(f'[study]\nid = "dp-test"\nrequester = "analyst@example.org"\n{extra}\n'
                        f'[network]\ntimeout_seconds = 60\n[output]\ndir = "{out}"\n\n{sites}')
        return path


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[Sites]:
    study = simulate_study(SimulationSpec(site_sizes=(160, 140, 120), n_variants=200, seed=11, write_pooled=False),
                           tmp_path / "sim")
    servers, datas, endpoints, reads = [], [], [], {}
    configs = provision_sites(tmp_path, {f"hosp{i + 1}": b for i, b in enumerate(study.site_bfiles)},
                              study.pheno_path, study.covar_path, budget=BUDGET, allow_plaintext=True)
    for index, bfile in enumerate(study.site_bfiles):
        name = f"hosp{index + 1}"
        data = load_site_data(load_site_config(configs[name]))
        reads[name] = 0
        original = data.genotypes.read_block

        def counting(index: np.ndarray, samples: np.ndarray, name: str = name, original=original) -> np.ndarray:
            reads[name] += 1
            return original(index, samples)

        data.genotypes.read_block = counting  # type: ignore[method-assign]
        server, port = make_server(data, "127.0.0.1:0")
        server.start()
        servers.append(server)
        datas.append(data)
        endpoints.append((name, f"127.0.0.1:{port}"))
    yield Sites(study, datas, endpoints, reads)
    for server in servers:
        server.stop(grace=None)


def _ids(sites: Sites, path: Path, n: int) -> Path:
    ids = [line.split()[1] for line in Path(f"{sites.study.site_bfiles[0]}.bim").read_text().splitlines()[:n]]
    path.write_text("\n".join(ids) + "\n")
    return path


FREQ = '[analysis]\nextract = "ids.txt"\n[qc]\noutputs = ["freq"]\n[dp]\nepsilon = 1.0\ndelta = 1e-6\ncollusion = 1\n'


def test_an_overspending_request_is_refused_at_every_site_before_any_computation(sites: Sites, tmp_path: Path,
                                                                                  capsys) -> None:
    _ids(sites, tmp_path / "ids.txt", 30)
    study = sites.study_file(tmp_path / "study.toml", FREQ)
    for _ in range(2):
        assert main(["run", str(study), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "DP release preview (nothing requested yet): qc on 30 variants" in out
    assert "tolerating 2 colluding site(s)" in out and "-> fits" in out
    assert (tmp_path / "out" / "fedgwas.afreq").exists()
    reads_before = dict(sites.reads)
    assert all(count > 0 for count in reads_before.values())

    assert main(["run", str(study), "--no-progress"]) == 3
    captured = capsys.readouterr()
    assert "DOES NOT FIT" in captured.out
    assert "budget" in captured.err and "Nothing was computed" in captured.err
    assert all(f"site '{name}'" in captured.err for name, _ in sites.endpoints)
    assert sites.reads == reads_before  # no site read a genotype for the refused request
    for data in sites.datas:
        entries = data.ledger.entries()
        assert verify(entries).ok
        assert [e.kind for e in entries if e.kind != "described"] == ["checked", "accepted", "released"] * 2 + ["refused"]
        assert "privacy budget exceeded for dataset" in entries[-1].message
        assert sum(e.rho for e in entries if e.kind == "accepted") == pytest.approx(2 * entries[1].rho)
    # The coordinator's log agrees with every ledger.
    ledgers = [str(d.config.ledger) for d in sites.datas]
    log = tmp_path / "out" / "coordinator-log.jsonl"
    assert main(["audit", "cross-check", "--coordinator-log", str(log), *sum((["--ledger", p] for p in ledgers), [])]) == 0
    assert "cross-check OK: 6 release(s) match" in capsys.readouterr().out
    events = read_log(log)
    assert sum(e["event"] == "preview" for e in events) == 3


def test_a_truncated_site_ledger_is_caught_by_the_cross_check(sites: Sites, tmp_path: Path, capsys) -> None:
    _ids(sites, tmp_path / "ids.txt", 10)
    assert main(["run", str(sites.study_file(tmp_path / "study.toml", FREQ)), "--no-progress"]) == 0
    ledger = sites.datas[1].config.ledger
    import sqlite3

    connection = sqlite3.connect(ledger)
    connection.execute("DELETE FROM entries WHERE seq >= 2")  # keep only the budget check
    connection.commit()
    connection.close()
    assert verify(open_entries(ledger)).ok  # the chain alone cannot see it
    capsys.readouterr()
    arguments = ["audit", "cross-check", "--coordinator-log", str(tmp_path / "out" / "coordinator-log.jsonl")]
    assert main([*arguments, *sum((["--ledger", str(d.config.ledger)] for d in sites.datas), [])]) == 4
    out = capsys.readouterr().out
    assert "site 'hosp2': the ledger ends at entry 1" in out and "truncated" in out


def test_dp_linear_association_on_a_declared_variant_set(sites: Sites, tmp_path: Path, capsys) -> None:
    _ids(sites, tmp_path / "ids.txt", 15)
    base = ('[analysis]\nphenotype = "QT"\ncovariates = ["SEX_MALE", "AGE", "ANC1"]\nextract = "ids.txt"\n')
    exact = sites.study_file(tmp_path / "exact.toml", base, out="exact")
    assert main(["run", str(exact), "--no-progress"]) == 0
    dp = sites.study_file(tmp_path / "dp.toml", base + '[dp]\nepsilon = 1000.0\ndelta = 1e-6\n'
                          'bounds = { QT = [-4, 4], SEX_MALE = [0, 1], AGE = [20, 70], ANC1 = [-1, 1] }\n', out="dp")
    # A budget large enough for this high-epsilon utility check; each site trusts the other two
    # (honest_sites = 3), so the three shares together carry the calibrated noise once.
    for data in sites.datas:
        data.config = dataclasses.replace(data.config, budget=BudgetPolicy(epsilon=1000.0, honest_sites=3))
    assert main(["run", str(dp), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "linear on 15 variants" in out and "SE of beta at MAF 0.2" in out
    from coordinator.results.gwas_ssf import read_gwas_ssf

    a, b = read_gwas_ssf(tmp_path / "exact" / "QT.linear.tsv.gz"), read_gwas_ssf(tmp_path / "dp" / "QT.linear.tsv.gz")
    assert len(b["beta"]) == 15
    # Noisy (at this epsilon the noise is ~1/3 of the sampling SE on 420 samples, plus the clipping to the
    # declared bounds), but the same estimates: 3 SE leaves the unseeded noise a negligible chance to exceed it.
    assert np.all(np.abs(b["beta"] - a["beta"]) < 3.0 * a["standard_error"])
    assert not np.allclose(a["beta"], b["beta"])
    summary = json.loads((tmp_path / "dp" / "QT.linear.summary.json").read_text())
    assert any("differentially private linear release" in note for note in summary["notes"])
    assert any(note.startswith("rho charged (noise share scale) by each site: hosp1 ") for note in summary["notes"])
    kinds = [e.kind for e in sites.datas[0].ledger.entries() if e.kind != "described"]
    exact_rounds = json.loads((tmp_path / "exact" / "QT.linear.summary.json").read_text())["rounds"]
    # exact run (the standardisation rounds, then the association), then the DP run (no standardisation
    # round: sites clip and rescale to the declared bounds), checked first
    assert kinds == ["accepted", "released"] * exact_rounds + ["checked", "accepted", "released"]


def _dp_task(data: SiteData, study_id: str = "crash", request_id: str = "req") -> TaskSpec:
    """A DP task the handler runs alone (plaintext: no key exchange; the budget logic is the same)."""
    other = next(name for name in data.roster.names if name != data.name)
    return TaskSpec(study_id=study_id, round=1, analysis="qc", cohort=CohortRequest(""), privacy="plaintext",
                    participants=(data.name, other), block_size=4,
                    variant_index=np.arange(10), flip=np.zeros(10, bool), requester="r",
                    parameters={"dp.epsilon": "1.0", "dp.delta": "1e-06", "audit.request_id": request_id})


_CRASH = """
import os, sys
sys.path.insert(0, {root!r})
from tests.coordinator.test_dp_budget import _dp_task
from site_agent import handlers
from site_agent.config import load_site_config
from site_agent.data import load_site_data
data = load_site_data(load_site_config({config!r}))
data.genotypes.read_block = lambda *args: os._exit(9)  # the process dies after the charge, before any block
for event in handlers.run_task(data, _dp_task(data)):
    pass
"""


def test_a_crash_between_charge_and_release_keeps_the_charge_and_releases_nothing_twice(sites: Sites) -> None:
    data = sites.datas[0]
    code = _CRASH.format(root=str(ROOT), config=str(data.config.path))
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert completed.returncode == 9, completed.stderr[-2000:]
    entries = data.ledger.entries()
    assert [e.kind for e in entries] == ["accepted"]  # charged, never released
    # The same request id again is refused, whatever became of it (its masks were drawn once) ...
    with pytest.raises(PrivacyError, match="has already seen request 'req'"):
        list(handlers.run_task(data, _dp_task(data)))
    # ... a new request is a new release with a new charge; the first charge stays spent.
    events = list(handlers.run_task(data, _dp_task(data, request_id="req-2")))
    assert sum(isinstance(e, ResultBlock) for e in events) == 3 and isinstance(events[-1], TaskDone)
    entries = data.ledger.entries()
    assert [e.kind for e in entries] == ["accepted", "refused", "accepted", "released"]
    assert entries[3].ref == 3 and verify(entries).ok
    # Two charges of epsilon 1 are spent: a third request does not fit in the budget.
    with pytest.raises(PrivacyError, match="budget exceeded"):
        list(handlers.run_task(data, _dp_task(data, request_id="another")))
    assert sum(e.kind == "released" for e in data.ledger.entries()) == 1
    # A failure inside the computation (not a crash) is recorded as aborted; the charge stays.
    fresh = sites.datas[1]

    def fail(*args):
        raise RuntimeError("disk error")

    fresh.genotypes.read_block = fail  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        list(handlers.run_task(fresh, _dp_task(fresh)))
    assert [(e.kind, e.ref) for e in fresh.ledger.entries()] == [("accepted", 0), ("aborted", 1)]


def test_describe_reports_the_budget_and_sites_refuse_what_their_policy_forbids(sites: Sites, tmp_path: Path) -> None:
    data = sites.datas[0]
    state = handlers.describe(data, CohortRequest(""), "s")
    assert state.budget["epsilon_total"] == 1.6 and state.budget["epsilon_spent"] == 0.0
    assert state.budget["epsilon_remaining"] == pytest.approx(1.6)
    data.config = dataclasses.replace(data.config, budget=BudgetPolicy(epsilon=1.0, require_dp=True))
    exact = _dp_task(data)
    exact = TaskSpec(**{**exact.__dict__, "parameters": {}})
    with pytest.raises(PrivacyError, match="only differentially private"):
        list(handlers.run_task(data, exact))
    data.config = dataclasses.replace(data.config, budget=None)
    with pytest.raises(PrivacyError, match="no differential-privacy budget"):
        list(handlers.run_task(data, _dp_task(data)))
    assert [e.kind for e in data.ledger.entries()] == ["refused"] * 2
    # A site whose ledger was tampered with refuses to start.
    import sqlite3

    connection = sqlite3.connect(data.config.ledger)
    connection.execute("UPDATE entries SET message = 'nothing to see' WHERE seq = 1")
    connection.commit()
    connection.close()
    with pytest.raises(ConfigError, match="failed verification: entry 1 was edited"):
        load_site_data(data.config)


def test_a_budget_refusal_is_resource_exhausted_on_the_wire(sites: Sites) -> None:
    import grpc

    from protos import serde
    from coordinator.client import SiteClient, SiteEndpoint
    from engine.errors import SiteFailure
    from protos import site_agent_pb2_grpc as pb_grpc

    data = sites.datas[0]
    name, address = sites.endpoints[0]
    task = _dp_task(data)
    too_much = TaskSpec(**{**task.__dict__, "parameters": {**task.parameters, "dp.epsilon": "5.0"}})
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            list(pb_grpc.SiteAgentStub(channel).RunTask(serde.task_to_messages(too_much), timeout=30))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    client = SiteClient(SiteEndpoint(name, address), timeout=30)
    again = TaskSpec(**{**too_much.__dict__, "parameters": {**too_much.parameters, "audit.request_id": "req-again"}})
    try:
        with pytest.raises(SiteFailure) as failure:
            list(client.run_task(again))
    finally:
        client.close()
    assert failure.value.kind == "BudgetExceededError" and failure.value.refused and not failure.value.transient
    assert sites.reads[name] == 0 and [e.kind for e in data.ledger.entries()] == ["refused", "refused"]
