"""The site side of signed heads (site_agent/head_publisher.py): provisioning, signing after every
append (also from concurrent threads), and the refusal to serve without a signing key."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from engine.audit.heads import HeadRecord, read_public_key
from engine.errors import ConfigError
from engine.simulate import SimulationSpec, simulate_study
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from site_agent.provision import init_site


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    study = simulate_study(SimulationSpec(site_sizes=(30, 30), n_variants=20, seed=2, write_pooled=False),
                           tmp_path / "sim")
    return init_site("hosp1", str(study.site_bfiles[0]), str(study.pheno_path), None, tmp_path / "hosp1",
                     "127.0.0.1:0")


def test_init_creates_an_owner_only_signing_key_and_every_append_publishes_a_signed_head(config_path: Path) -> None:
    config = load_site_config(config_path)
    assert config.ledger_signing_key == (config_path.parent / "keys" / "ledger-signing.key").resolve()
    assert os.stat(config.ledger_signing_key).st_mode & 0o777 == 0o600
    assert config.published_head == config.ledger_signing_key.parent / "published-head.json"
    public = read_public_key(Path(f"{config.ledger_signing_key}.pub"))
    data = load_site_data(config)
    record = HeadRecord.read(config.published_head)
    assert record is not None and record.head.seq == 0 and record.head.public_key == public
    assert record.cosignature is None  # no witness configured

    def append(k: int) -> None:
        for j in range(5):
            data.ledger.append(kind="refused", study=f"s{k}", message=f"test {j}")

    threads = [threading.Thread(target=append, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = data.ledger.entries()
    record = HeadRecord.read(config.published_head)
    assert record is not None and len(entries) == 20
    assert (record.head.seq, record.head.hash) == (20, entries[-1].hash)  # the newest head wins every race
    assert record.head.verify().site == "hosp1" and data.heads is not None and data.heads.latest.seq == 20
    # A restart on the same ledger is accepted (it extends the published head) and publishes nothing new.
    assert load_site_data(load_site_config(config_path)).heads.latest.seq == 20


def test_a_site_without_a_signing_key_does_not_serve(config_path: Path) -> None:
    text = config_path.read_text()
    config_path.write_text("\n".join(line for line in text.splitlines() if not line.startswith("ledger_signing_key")))
    with pytest.raises(ConfigError, match=r"missing key \[keys\] ledger_signing_key.*fedgwas-site init"):
        load_site_data(load_site_config(config_path))
    config_path.write_text(text + '\n[witness]\naddress = "no port"\n')
    with pytest.raises(ConfigError, match=r"\[witness\] address must be HOST:PORT"):
        load_site_config(config_path)


def test_a_witness_that_goes_away_is_logged_and_the_site_keeps_recording(tmp_path: Path, caplog) -> None:
    from witness.server import make_server
    from witness.store import WitnessStore

    server, port = make_server(WitnessStore(tmp_path / "witness"), "127.0.0.1:0")
    server.start()
    study = simulate_study(SimulationSpec(site_sizes=(30, 30), n_variants=20, seed=2, write_pooled=False),
                           tmp_path / "sim")
    config = load_site_config(init_site("hosp1", str(study.site_bfiles[0]), str(study.pheno_path), None,
                                        tmp_path / "hosp1", "127.0.0.1:0", witness=f"127.0.0.1:{port}"))
    data = load_site_data(config)
    data.ledger.append(kind="refused", message="while the witness runs")
    record = HeadRecord.read(config.published_head)
    assert record is not None and record.head.seq == 1 and record.cosignature is not None
    assert record.cosignature.verify(record.head).witness_key == WitnessStore(tmp_path / "witness").public_key
    server.stop(grace=None).wait()
    data.ledger.append(kind="refused", message="after the witness stopped")
    record = HeadRecord.read(config.published_head)
    assert record is not None and record.head.seq == 2 and record.cosignature is None
    assert "ledger head seq 2 was not co-signed by the witness" in caplog.text
    # Within the back-off the next append does not wait for the witness; its head is still recorded.
    data.ledger.append(kind="refused", message="during the back-off")
    assert HeadRecord.read(config.published_head).head.seq == 3
    assert "ledger head seq 3" not in caplog.text
