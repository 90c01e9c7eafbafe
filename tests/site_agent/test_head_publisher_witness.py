"""Sites publishing their signed ledger heads to a real witness (gRPC, port 0), end to end.

Two in-process site agents with ``[witness] address`` run DP studies from a study file. The witness
ends up holding every head (including the refusal's, which the coordinator never receives); the
auditor's cross-check with ``--witness`` passes on the untouched ledgers. An attacker who rolls a
ledger back *and* deletes the site's own published-head record, or deletes both, or replaces the
signing key, is stopped by the witness when the site restarts, and the cross-check names the rollback.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterator

import pytest

from fedgwas.cli import main
from engine.audit.heads import create_signing_key
from engine.audit.ledger import open_entries
from engine.errors import ConfigError
from engine.simulate import SimulationSpec, simulate_study
from protos.witness_client import WitnessClient
from engine.privacy.budget import BudgetPolicy
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from tests.consortium import provision_sites
from site_agent.server import make_server as make_site_server
from witness.server import make_server
from witness.store import WitnessStore


@pytest.fixture
def consortium(tmp_path: Path) -> Iterator[dict]:
    store = WitnessStore(tmp_path / "witness")
    witness_server, witness_port = make_server(store, "127.0.0.1:0")
    witness_server.start()
    address = f"127.0.0.1:{witness_port}"
    study = simulate_study(SimulationSpec(site_sizes=(120, 100), n_variants=60, seed=3, write_pooled=False),
                           tmp_path / "sim")
    servers, endpoints = [], []
    configs = provision_sites(tmp_path, {f"hosp{i + 1}": bfile for i, bfile in enumerate(study.site_bfiles)},
                              study.pheno_path, study.covar_path, budget=BudgetPolicy(epsilon=1.2, delta=1e-6),
                              witness=address)
    for name, config in configs.items():
        server, port = make_site_server(load_site_data(load_site_config(config)), "127.0.0.1:0")
        server.start()
        servers.append(server)
        endpoints.append((name, f"127.0.0.1:{port}"))
    ids = [line.split()[1] for line in Path(f"{study.site_bfiles[0]}.bim").read_text().splitlines()[:10]]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    sites = "".join(f'[[sites]]\nname = "{n}"\naddress = "{a}"\n\n' for n, a in endpoints)
    study_file = tmp_path / "study.toml"
    study_file.write_text('[study]\nid = "w"\nrequester = "analyst"\n[analysis]\nextract = "ids.txt"\n'
                          '[qc]\noutputs = ["freq"]\n[dp]\nepsilon = 1.0\ndelta = 1e-6\ncollusion = 1\n'
                          f'[network]\ntimeout_seconds = 60\n[output]\ndir = "out"\n\n{sites}')
    assert main(["run", str(study_file), "--no-progress"]) == 0
    assert main(["run", str(study_file), "--no-progress"]) == 3  # over budget: refused at both sites
    for server in servers:
        server.stop(grace=None)
    yield {"address": address, "configs": configs, "log": tmp_path / "out" / "coordinator-log.jsonl",
           "witness_dir": tmp_path / "witness"}
    witness_server.stop(grace=None)


def _cross_check(consortium: dict, ledgers: dict[str, Path], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["audit", "cross-check", "--coordinator-log", str(consortium["log"]), "--witness", consortium["address"],
                 "--witness-key", str(consortium["witness_dir"] / "witness.key.pub"),
                 *sum((["--ledger", f"{site}={path}"] for site, path in ledgers.items()), [])])
    return code, capsys.readouterr().out


def _ledgers(consortium: dict) -> dict[str, Path]:
    return {site: config.parent / "ledger.sqlite" for site, config in consortium["configs"].items()}


def test_the_witness_holds_every_head_and_the_untouched_audit_passes(consortium: dict, capsys) -> None:
    client = WitnessClient(consortium["address"])
    _, held = client.heads("hosp1")
    client.close()
    # seq 0 at start-up, then one head per append (described, checked, accepted, released, refused, ...).
    last = open_entries(_ledgers(consortium)["hosp1"])[-1].seq
    assert last >= 4 and [head.seq for head, _ in held] == list(range(last + 1))
    code, out = _cross_check(consortium, _ledgers(consortium), capsys)
    assert code == 0, out
    assert f"signed head(s) held for 'hosp1', up to seq {last}" in out


def test_a_rollback_with_the_local_record_deleted_is_stopped_by_the_witness(consortium: dict, capsys) -> None:
    config = load_site_config(consortium["configs"]["hosp1"])
    # The refusal (the last entry, of the second run): the coordinator holds no head for it.
    refused = open_entries(config.ledger)[-1]
    assert refused.kind == "refused" and refused.study == "w"
    last, before = refused.seq, refused.seq - 1
    connection = sqlite3.connect(config.ledger)
    connection.execute("DELETE FROM entries WHERE seq = ?", (last,))
    connection.commit()
    connection.close()
    config.published_head.unlink()
    with pytest.raises(ConfigError,
                       match=rf"rolled back from seq {last} to {before}: the witness at 127\.0\.0\.1:\d+ holds"):
        load_site_data(config)
    code, out = _cross_check(consortium, _ledgers(consortium), capsys)
    assert code == 4 and f"site 'hosp1': ledger rolled back from seq {last} to {before}: the witness at" in out
    config.ledger.unlink()
    with pytest.raises(ConfigError, match=f"is missing, but this site published a head at seq {last}"):
        load_site_data(config)
    assert not config.ledger.exists()


def test_a_site_with_a_replaced_signing_key_is_refused(consortium: dict) -> None:
    config = load_site_config(consortium["configs"]["hosp2"])
    config.ledger_signing_key.unlink()
    config.published_head.unlink()
    create_signing_key(config.ledger_signing_key)
    with pytest.raises(ConfigError, match="the last head in the witness at .* is for site 'hosp2' under key"):
        load_site_data(config)


def test_a_site_whose_witness_is_unreachable_does_not_start(consortium: dict) -> None:
    config = consortium["configs"]["hosp1"]
    unreachable = config.with_name("unreachable-witness.toml")  # same directory: same keys and ledger
    unreachable.write_text(config.read_text().replace(consortium["address"], "127.0.0.1:9"))
    with pytest.raises(ConfigError, match="cannot check its ledger against the witness"):
        load_site_data(load_site_config(unreachable))
