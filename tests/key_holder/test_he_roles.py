"""Roles under ``--privacy he``: separate processes, and who may hold or see what.

* The aggregator (coordinator) process never loads a secret context, never decrypts and never opens
  the key holder's secret file: an audit hook (``sys.addaudithook``) in that process records
  engine.privacy.he's audit events and every ``open``, through a whole ``fedgwas local --privacy he`` run.
* Sites accept only the key holder's context they pinned; `fedgwas-site init --he-context` pins it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedgwas.cli import main
from key_holder.keys import PUBLIC_FILE, SECRET_FILE, KeyHolder, load_key_files, write_key_files
from key_holder.server import make_server
from coordinator.results.gwas_ssf import read_gwas_ssf
from engine.privacy import he
from engine.errors import ConfigError
from engine.simulate import SimulationSpec, simulate_study
from fedgwas.site_command import main as site_main
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from site_agent.provision import init_site
from site_agent.server import make_server as make_site_server

ROOT = Path(__file__).resolve().parents[2]

AUDITED_COORDINATOR = """
import json, sys
seen = []
def hook(event, args):
    if event.startswith("fedgwas.he."):
        seen.append(event)
    elif event == "open" and args and isinstance(args[0], (str, bytes)) and "he_secret" in str(args[0]):
        seen.append("open " + str(args[0]))
sys.addaudithook(hook)
from fedgwas.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as handle:
    json.dump(seen, handle)
sys.exit(code)
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    return simulate_study(SimulationSpec(site_sizes=(300, 250, 200), n_variants=2000, seed=11, write_pooled=False),
                          tmp_path_factory.mktemp("sim"))


def _local_argv(study, out: Path, privacy: str) -> list[str]:
    return ["local", *[a for b in study.site_bfiles for a in ("--bfile", str(b))], "--pheno", str(study.pheno_path),
            "--pheno-name", "QT", "--covar", str(study.covar_path), "--covar-name", ",".join(study.covariate_names),
            "--glm", "linear", "--block-size", "700", "--out", str(out), "--privacy", privacy, "--no-progress"]


def test_aggregator_process_never_holds_the_secret_key_nor_decrypts(study, tmp_path: Path) -> None:
    events = tmp_path / "events.json"
    out = tmp_path / "he"
    completed = subprocess.run([sys.executable, "-c", AUDITED_COORDINATOR, str(events), *_local_argv(study, out, "he")],
                               cwd=ROOT, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"})
    assert completed.returncode == 0, completed.stderr
    assert json.loads(events.read_text()) == []  # no secret context, no decryption, no open of he_secret.ctx
    # ... while the key holder, its own process, did decrypt every block (3 blocks of 700 variants).
    log = (out / "keyholder" / "keyholder.log").read_text()
    assert log.count(": released block") == 3 and "registered study" in log
    summary = json.loads((out / "QT.linear.summary.json").read_text())
    assert summary["privacy"] == "he" and "key holder" in summary["privacy_label"]
    # Sites sent ciphertexts only: ~32 bytes per statistic (one complex slot), 36 statistics per variant.
    assert all(2000 * 36 * 32 <= s["bytes_sent"] <= 2000 * 36 * 40 for s in summary["sites"]), summary["sites"]
    # Numerics are checked against PLINK 2 in test_federated_linear_he_vs_plink2.py.
    assert np.isfinite(read_gwas_ssf(out / "QT.linear.tsv.gz")["beta"]).sum() > 1900
    assert "homomorphic encryption" in (out / "QT.linear.tsv.gz-meta.yaml").read_text()


def test_site_refuses_a_context_from_another_key_holder(study, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`fedgwas run` with sites pinned to key holder A while the study's key holder is B."""
    pinned_dir, actual_dir = tmp_path / "A", tmp_path / "B"
    pinned = write_key_files(pinned_dir)
    write_key_files(actual_dir)
    servers, entries = [], []
    holder_server, holder_port = make_server(KeyHolder(*load_key_files(actual_dir)), "127.0.0.1:0")
    holder_server.start()
    try:
        for index, bfile in enumerate(study.site_bfiles[:2]):
            name = f"hosp{index}"
            config = init_site(name, str(bfile), str(study.pheno_path), str(study.covar_path), tmp_path / name,
                               "127.0.0.1:0", he_context_sha256=pinned)
            server, port = make_site_server(load_site_data(load_site_config(config)), "127.0.0.1:0")
            server.start()
            servers.append(server)
            entries.append(f'[[sites]]\nname = "{name}"\naddress = "127.0.0.1:{port}"\n')
        (tmp_path / "study.toml").write_text(
            '[study]\nid = "pin-test"\n[analysis]\nphenotype = "QT"\n'
            f'[privacy]\nmode = "he"\nkey_holder = "127.0.0.1:{holder_port}"\n[network]\ntimeout_seconds = 60\n'
            + "\n".join(entries))
        code = main(["run", str(tmp_path / "study.toml"), "--out", str(tmp_path / "out"), "--no-progress"])
    finally:
        for server in servers:
            server.stop(grace=None)
        holder_server.stop(grace=None)
    assert code == 3
    assert "not issued by this study's key holder" in capsys.readouterr().err
    assert not (tmp_path / "out" / "QT.linear.tsv.gz").exists()


def test_site_init_pins_the_context_and_refuses_secret_or_missing_pins(study, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    write_key_files(tmp_path / "kh")
    public = tmp_path / "kh" / PUBLIC_FILE
    base = ["init", "--name", "h1", "--bfile", str(study.site_bfiles[0]), "--pheno", str(study.pheno_path),
            "--insecure"]
    assert site_main([*base, "--dir", str(tmp_path / "site"), "--he-context", str(public)]) == 0
    config = load_site_config(tmp_path / "site" / "site.toml")
    assert config.he_context_sha256 == he.context_fingerprint(public.read_bytes())
    assert config.privacy_modes == ("secagg", "he")
    assert site_main(["check", "--config", str(tmp_path / "site" / "site.toml")]) == 0
    assert f"pinned key-holder CKKS context (sha256): {config.he_context_sha256}" in capsys.readouterr().out
    assert site_main([*base, "--dir", str(tmp_path / "bad"), "--he-context", str(tmp_path / "kh" / SECRET_FILE)]) == 2
    assert "carries a secret key" in capsys.readouterr().err
    text = (tmp_path / "site" / "site.toml").read_text()
    (tmp_path / "site" / "site.toml").write_text("\n".join(l for l in text.splitlines() if "he_context_sha256" not in l))
    with pytest.raises(ConfigError, match="lists \"he\" but \\[keys\\] he_context_sha256 is missing"):
        load_site_config(tmp_path / "site" / "site.toml")


def test_he_study_needs_a_key_holder_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "study.toml").write_text('[study]\nid = "x"\n[analysis]\nphenotype = "QT"\n[privacy]\nmode = "he"\n'
                                        '[[sites]]\nname = "a"\naddress = "127.0.0.1:1"\n'
                                        '[[sites]]\nname = "b"\naddress = "127.0.0.1:2"\n')
    assert main(["run", str(tmp_path / "study.toml")]) == 2
    assert "privacy mode 'he' needs the key holder's address" in capsys.readouterr().err


def test_privacy_material_travels_apart_from_analysis_inputs() -> None:
    """The public context rides in `privacy:he_context`; the site's serde hands it to the task, not the analysis."""
    from protos import serde as coordinator_serde
    from engine.errors import ProtocolError
    from engine.tasks import CohortRequest, TaskSpec
    from protos import site_agent_pb2 as pb
    from protos import serde as site_serde

    fields = dict(study_id="s", round=1, analysis="linear", cohort=CohortRequest("QT"), privacy="he",
                  participants=(("a", b"k" * 32), ("b", b"l" * 32)), block_size=8,
                  variant_index=np.arange(20), flip=np.zeros(20, bool))
    context = bytes(range(256)) * 5000  # > 1 MiB: several chunks
    task = TaskSpec(**fields, privacy_material={"he_context": context})
    received = site_serde.task_from_messages(coordinator_serde.task_to_messages(task))
    assert received.privacy_material == {"he_context": context} and dict(received.inputs) == {}
    with pytest.raises(ProtocolError, match="takes privacy material \\['he_context'\\], got \\[\\]"):
        TaskSpec(**fields)
    with pytest.raises(ProtocolError, match="'secagg' takes privacy material \\[\\]"):
        TaskSpec(**{**fields, "privacy": "secagg"}, privacy_material={"he_context": b"x"})
    messages = list(coordinator_serde.task_to_messages(task))
    wrong = pb.TaskMessage(array=pb.ArrayChunk(name="privacy:he_context", dtype="<f8", total_bytes=8, data=b"0" * 8,
                                               shape=[1]))
    with pytest.raises(ProtocolError, match="must be 1-D bytes"):
        site_serde.task_from_messages([m for m in messages if m.array.name != "privacy:he_context"] + [wrong])
