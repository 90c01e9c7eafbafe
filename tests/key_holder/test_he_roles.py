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
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from coordinator.client import SiteEndpoint
from coordinator.runner import run_study
from coordinator.study import StudyConfig
from engine.errors import StudyFailed
from engine.tasks import CohortRequest
from protos import site_agent_pb2_grpc as pb_grpc
from site_agent.servicer import SiteAgentServicer

from fedgwas.cli import main
from key_holder.keys import PUBLIC_FILE, SECRET_FILE, KeyHolder, load_key_files, write_key_files
from key_holder.server import make_server
from key_holder.store import STORE_FILE, KeyHolderStore
from coordinator.results.gwas_ssf import read_gwas_ssf
from engine.privacy import he
from engine.errors import ConfigError
from engine.simulate import SimulationSpec, simulate_study
from fedgwas.site_command import main as site_main
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from tests.consortium import provision_sites
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
    # ... while the key holder, its own process, did decrypt every block: 3 blocks of 700 variants, and
    # one block for each round of the study-level standardisation (every round but the association).
    log = (out / "keyholder" / "keyholder.log").read_text()
    summary = json.loads((out / "QT.linear.summary.json").read_text())
    assert log.count(": released block") == 3 + summary["rounds"] - 1 and "registered study" in log
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
    holder = KeyHolder(*load_key_files(actual_dir), KeyHolderStore(actual_dir / STORE_FILE), coordinators=("*",))
    holder_server, holder_port = make_server(holder, "127.0.0.1:0")
    holder_server.start()
    try:
        configs = provision_sites(tmp_path, {f"hosp{i}": b for i, b in enumerate(study.site_bfiles[:2])},
                                  study.pheno_path, study.covar_path, he_context_sha256=pinned)
        for name, config in configs.items():
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
                  participants=("a", "b"), block_size=8, variant_index=np.arange(20), flip=np.zeros(20, bool),
                  parameters={"audit.request_id": "r"})
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
        site_serde.task_from_messages([m for m in messages[:-1] if m.array.name != "privacy:he_context"] +
                                      [wrong, messages[-1]])


class CrashesAfterOneChunk(SiteAgentServicer):
    """A site that crashes mid-round: after the first chunk of the association round (the last round)."""

    def RunTask(self, request_iterator, context):
        first = next(request_iterator)

        def replay():
            yield first
            yield from request_iterator

        for message in super().RunTask(replay(), context):
            yield message
            if first.header.analysis == "linear" and message.WhichOneof("payload") == "chunk":
                context.abort(grpc.StatusCode.UNAVAILABLE, "site process crashed")


def _he_study(study, tmp_path: Path, crashing: set[int]):
    """A real key holder and three real sites over gRPC on port 0, ``crashing`` of them dying mid-round."""
    pin = write_key_files(tmp_path / "kh")
    holder = KeyHolder(*load_key_files(tmp_path / "kh"), KeyHolderStore(tmp_path / "kh" / STORE_FILE), coordinators=("*",))
    holder_server, holder_port = make_server(holder, "127.0.0.1:0")
    holder_server.start()
    configs = provision_sites(tmp_path, {f"hosp{i}": b for i, b in enumerate(study.site_bfiles)},
                              study.pheno_path, study.covar_path, he_context_sha256=pin)
    servers, endpoints, datas = [holder_server], [], []
    for index, (name, config) in enumerate(configs.items()):
        data = load_site_data(load_site_config(config))
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_SiteAgentServicer_to_server((CrashesAfterOneChunk if index in crashing else SiteAgentServicer)(data),
                                                server)
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        endpoints.append(SiteEndpoint(name, f"127.0.0.1:{port}"))
        datas.append(data)
    config = StudyConfig(study_id="he-drop", glm="linear", cohort=CohortRequest("QT", tuple(study.covariate_names)),
                         privacy="he", sites=tuple(endpoints), out_dir=tmp_path / "out", block_size=100,
                         show_progress=False, timeout_seconds=60, allow_dropout=True,
                         key_holder=f"127.0.0.1:{holder_port}")
    return config, servers, datas


def test_a_site_killed_mid_round_under_he_is_recovered_in_the_same_round(tmp_path: Path) -> None:
    """Acceptance: under --privacy he a site dies mid-round; the same round finishes over the survivors
    (their reveals give the tag offsets, the key holder opens the survivors' sum), equal to PLINK 2 on
    the survivors' pooled data, and the summary names who contributed."""
    from tests.plink_tools import assert_matches_plink
    from tests.plink_tools import plink2_glm_linear, run_plink2

    study = simulate_study(SimulationSpec(site_sizes=(150, 130, 120), n_variants=300, seed=21, write_pooled=True),
                           tmp_path / "sim")
    config, servers, datas = _he_study(study, tmp_path, crashing={1})
    try:
        outcome = run_study(config)
    finally:
        for server in servers:
            server.stop(grace=None)
    assert outcome.summary.contributing_sites == ("hosp0", "hosp2")
    assert not outcome.summary.sites[1].contributed and "crashed" in outcome.summary.sites[1].failure
    released = [e for e in datas[0].ledger.entries() if e.kind == "released"]
    assert [e.analysis for e in released][-1] == "linear" and outcome.summary.rounds == len(released)
    assert "summed over hosp0, hosp2" in released[-1].message  # the same round, finished by the survivors
    assert all("summed over hosp0, hosp1, hosp2" in e.message for e in released[:-1])
    events = list(KeyHolderStore(tmp_path / "kh" / STORE_FILE).events())
    registered = [e for e in events if e.kind == "registered"]
    assert len(registered) == outcome.summary.rounds  # one registration per round: nothing re-run
    assert json.loads(registered[-1].detail)["participants"] == ["hosp0", "hosp2"]
    assert not [e for e in events if e.kind == "refused"]
    survivors = [line.split()[:2] for i in (0, 2) for line in Path(f"{study.site_bfiles[i]}.fam").read_text().splitlines()]
    (tmp_path / "keep.txt").write_text("".join(f"{fid}\t{iid}\n" for fid, iid in survivors))
    run_plink2(["--bfile", str(study.pooled_bfile), "--keep", str(tmp_path / "keep.txt"), "--make-bed",
                "--out", str(tmp_path / "survivors")], cwd=tmp_path)
    reference = plink2_glm_linear(tmp_path / "survivors", study.pheno_path, "QT", study.covar_path,
                                  list(study.covariate_names), tmp_path)
    assert_matches_plink(read_gwas_ssf(tmp_path / "out" / "QT.linear.tsv.gz"), reference)


def test_below_the_threshold_an_he_round_fails_and_nothing_is_decrypted(study, tmp_path: Path) -> None:
    config, servers, datas = _he_study(study, tmp_path, crashing={1, 2})
    try:
        with pytest.raises(StudyFailed, match="below the threshold 2: the round is abandoned and nothing was unmasked"):
            run_study(config)
    finally:
        for server in servers:
            server.stop(grace=None)
    assert not (tmp_path / "out" / "QT.linear.tsv.gz").exists()
    # The survivor released nothing of the association round (it never got threshold signatures to reveal
    # its shares against), and the key holder was never asked about that round.
    linear = [e for e in datas[0].ledger.entries() if e.analysis == "linear"]
    assert linear and not [e for e in linear if e.kind == "released"]
    events = list(KeyHolderStore(tmp_path / "kh" / STORE_FILE).events())
    assert {e.round for e in events if e.kind == "registered"} == {e.round for e in events if e.kind == "released"}
    assert linear[-1].round not in {e.round for e in events} and not [e for e in events if e.kind == "refused"]
