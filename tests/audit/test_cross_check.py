"""The auditor against an attacker with write access to a site's disk.

A multi-study DP history is produced once with ``fedgwas local`` (real site-agent processes, as in the
README's DP example): study A (epsilon 0.5), study B (0.6), study A again (0.6), then study C (0.9)
which no longer fits and is refused. Each test then tampers with a *copy* of a ledger, as an attacker
would, and runs the auditor's ``fedgwas audit cross-check``: every kind of tampering fails it (exit 4)
with a message naming the problem; a site restarted on a rolled-back or deleted ledger refuses to
serve; and resetting the budget (ρ = 0, chain re-hashed, head re-signed with the site's own key)
lets the site accept again but cannot pass the audit.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.client import SiteClient, SiteEndpoint
from fedgwas.cli import main
from fedgwas.local import LOCAL_COORDINATOR
from protos.pki import TlsFiles
from site_agent.server import make_server
from engine.audit.heads import HeadRecord, load_signing_key, sign_head
from engine.simulate import SimulationSpec, simulate_study
from engine.tasks import CohortRequest
from site_agent import handlers
from fedgwas.site_command import main as site_main
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from engine.audit.ledger import FIELDS, LedgerEntry, open_entries

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 1.2
RUNS = (("A", 0.5, 0), ("B", 0.6, 0), ("A", 0.6, 0), ("C", 0.9, 3))


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``OUT`` of four ``fedgwas local`` DP runs on two sites (the last one refused over budget)."""
    base = tmp_path_factory.mktemp("history")
    study = simulate_study(SimulationSpec(site_sizes=(200, 150), n_variants=300, seed=5, write_pooled=False),
                           base / "sim")
    ids = [line.split()[1] for line in Path(f"{study.site_bfiles[0]}.bim").read_text().splitlines()[10:30]]
    (base / "ids.txt").write_text("\n".join(ids) + "\n")
    for study_id, epsilon, code in RUNS:
        command = ["local", *sum((["--bfile", str(b)] for b in study.site_bfiles), []), "--freq", "--extract",
                   str(base / "ids.txt"), "--dp-epsilon", str(epsilon), "--dp-delta", "1e-6", "--dp-collusion", "1",
                   "--site-budget-epsilon", str(BUDGET), "--out", str(base / "out"), "--no-progress",
                   "--study-id", study_id]
        assert main(command) == code
    return base / "out"


def _ledger(history: Path, site: str) -> Path:
    return history / "sites" / site / "ledger.sqlite"


def _copy(history: Path, site: str, tmp_path: Path) -> Path:
    copy = tmp_path / f"{site}-copy.sqlite"
    shutil.copyfile(_ledger(history, site), copy)
    return copy


def _cross_check(history: Path, site1: Path, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["audit", "cross-check", "--coordinator-log", str(history / "coordinator-log.jsonl"),
                 "--ledger", f"site1={site1}", "--ledger", f"site2={_ledger(history, 'site2')}"])
    return code, capsys.readouterr().out


def _execute(path: Path, *statements: str) -> None:
    connection = sqlite3.connect(path)
    for statement in statements:
        connection.execute(statement)
    connection.commit()
    connection.close()


def _rewrite(path: Path, change) -> None:
    """The attacker's consistent rewrite: apply ``change`` to every entry and re-hash the whole chain."""
    entries, previous = [], "0" * 64
    for entry in open_entries(path):
        entry = dataclasses.replace(change(entry), prev_hash=previous, hash="")
        entry = dataclasses.replace(entry, hash=entry.content_hash())
        previous = entry.hash
        entries.append(entry)
    connection = sqlite3.connect(path)
    connection.execute("DELETE FROM entries")
    connection.executemany(f"INSERT INTO entries ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))})",
                           [dataclasses.astuple(e) for e in entries])
    connection.commit()
    connection.close()


def _entries(path: Path, kind: str, study: str) -> list[LedgerEntry]:
    """The ledger's entries of one kind for one study, in order (every Describe is ledgered too, so the
    sequence numbers are looked up rather than hard-coded)."""
    return [entry for entry in open_entries(path) if entry.kind == kind and entry.study == study]


def _logged_head_seqs(history: Path, site: str) -> list[int]:
    """The sequence numbers of the signed heads the coordinator log holds for ``site``, in order."""
    events = [json.loads(line) for line in (history / "coordinator-log.jsonl").read_text().splitlines()]
    return sorted(e["ledger_head"]["seq"] for e in events
                  if e["event"] == "received" and e["site"] == site and e.get("ledger_head"))


def _zero_charges(entry: LedgerEntry) -> LedgerEntry:
    return dataclasses.replace(entry, rho=0.0) if entry.kind == "accepted" else entry


def test_the_untouched_history_passes_and_its_report_agrees_with_describe(history: Path, tmp_path: Path,
                                                                          capsys) -> None:
    code, out = _cross_check(history, _ledger(history, "site1"), capsys)
    assert code == 0, out
    assert "cross-check OK: 6 release(s) match" in out and "every DP charge recomputes" in out
    # Every receipt the coordinator logged is a head signed by the site's key over its own ledger.
    from engine.audit.heads import SignedHead, read_public_key

    events = [json.loads(line) for line in (history / "coordinator-log.jsonl").read_text().splitlines()]
    for site in ("site1", "site2"):
        heads = [SignedHead.from_dict(e["ledger_head"]).verify() for e in events
                 if e["event"] == "received" and e["site"] == site]
        hashes = [entry.hash for entry in open_entries(_ledger(history, site))]
        assert len(heads) == 6 and all(h.hash == hashes[h.seq - 1] for h in heads)
        assert {h.public_key for h in heads} == {read_public_key(history / "sites" / site / "keys" /
                                                                 "ledger-signing.key.pub")}
    assert site_main(["audit", "verify", str(_ledger(history, "site1")), "--published-head",
                      str(history / "sites" / "site1" / "keys" / "published-head.json"), "--key",
                      str(history / "sites" / "site1" / "keys" / "ledger-signing.key.pub")]) == 0
    report_json = tmp_path / "report.json"
    assert main(["audit", "report", "--coordinator-log", str(history / "coordinator-log.jsonl"),
                 "--ledger", f"site1={_ledger(history, 'site1')}", "--ledger", f"site2={_ledger(history, 'site2')}",
                 "--json", str(report_json), "--png", str(tmp_path / "r.png"), "--html", str(tmp_path / "r.html")]) == 0
    report = json.loads(report_json.read_text())
    page = (tmp_path / "r.html").read_text()
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "data:image/png;base64," in page
    assert "budget exceeded (dataset)" in page and "<script" not in page and "href=" not in page
    for site in ("site1", "site2"):
        # What the site itself tells a requester over its Describe RPC (mutual TLS, as `fedgwas local`).
        # On a copy: every Describe is now a ledger entry, and the history is shared by the module's tests.
        data = load_site_data(load_site_config(_site_copy(history, site, tmp_path)))
        server, port = make_server(data, "127.0.0.1:0")
        server.start()
        client = SiteClient(SiteEndpoint(site, f"127.0.0.1:{port}"), timeout=30, connect_timeout=10,
                            tls=TlsFiles(history / "tls" / "ca.pem", history / "tls" / f"{LOCAL_COORDINATOR}.pem",
                                         history / "tls" / f"{LOCAL_COORDINATOR}.key"))
        described_by_study = {study: client.describe(study, CohortRequest(""))[0].budget for study in ("A", "B", "C")}
        client.close()
        server.stop(grace=None)
        for study, described in described_by_study.items():
            scopes = {(s["scope"], s["name"]): s for s in report["sites"][site]["scopes"]}
            dataset = scopes[("dataset", site)]
            assert dataset["epsilon_spent"] == pytest.approx(described["epsilon_spent"], rel=1e-9)
            assert dataset["rho_spent"] == pytest.approx(described["rho_spent"], rel=1e-9)
            assert dataset["epsilon_remaining"] == pytest.approx(described["epsilon_remaining"], rel=1e-9)
            assert dataset["epsilon_budget"] == described["epsilon_total"] == BUDGET
        assert {(s["scope"], s["name"]): s["dp_releases"] for s in report["sites"][site]["scopes"]
                if s["scope"] == "study"} == {("study", "A"): 2, ("study", "B"): 1, ("study", "C"): 0}
        assert report["sites"][site]["refusals"] == [{"reason": "budget exceeded (dataset)", "count": 1}]
        assert report["sites"][site]["charges_recomputed"] is True
    assert report["refusals"] == [{"reason": "budget exceeded (dataset)", "count": 2}]


def test_an_edited_entry_is_named(history: Path, tmp_path: Path, capsys) -> None:
    copy = _copy(history, "site1", tmp_path)
    seq = _entries(copy, "accepted", "B")[0].seq  # study B's charge
    _execute(copy, f"UPDATE entries SET rho = 0 WHERE seq = {seq}")
    code, out = _cross_check(history, copy, capsys)
    assert code == 4 and f"fails verification at entry {seq}: entry {seq} was edited" in out


def test_a_deleted_entry_is_named(history: Path, tmp_path: Path, capsys) -> None:
    copy = _copy(history, "site1", tmp_path)
    _execute(copy, "DELETE FROM entries WHERE seq = 4")
    code, out = _cross_check(history, copy, capsys)
    assert code == 4 and "entry 4 is missing: found entry 5 in its place (removed)" in out


def test_reordered_entries_are_named(history: Path, tmp_path: Path, capsys) -> None:
    copy = _copy(history, "site1", tmp_path)
    columns = [f for f in FIELDS if f != "seq"]
    connection = sqlite3.connect(copy)
    rows = {s: connection.execute(f"SELECT {', '.join(columns)} FROM entries WHERE seq = ?", (s,)).fetchone()
            for s in (5, 6)}
    for target, source in ((5, 6), (6, 5)):
        connection.execute(f"UPDATE entries SET {', '.join(f'{c} = ?' for c in columns)} WHERE seq = ?",
                           (*rows[source], target))
    connection.commit()
    connection.close()
    code, out = _cross_check(history, copy, capsys)
    assert code == 4 and "entries were reordered: entry 5 holds the content of entry 6" in out


def test_a_truncated_tail_is_a_rollback(history: Path, tmp_path: Path, capsys) -> None:
    copy = _copy(history, "site1", tmp_path)
    keep = _entries(copy, "checked", "B")[0].seq  # up to study B's budget check, whose head the coordinator holds
    last = _logged_head_seqs(history, "site1")[-1]  # the release of study A's second run
    assert keep in _logged_head_seqs(history, "site1") and last == _entries(copy, "released", "A")[-1].seq > keep
    _execute(copy, f"DELETE FROM entries WHERE seq > {keep}")
    code, out = _cross_check(history, copy, capsys)
    assert code == 4 and f"site 'site1': ledger rolled back from seq {last} to {keep}" in out


def test_a_consistently_rewritten_chain_with_rho_zero_is_caught(history: Path, tmp_path: Path, capsys) -> None:
    copy = _copy(history, "site1", tmp_path)
    _rewrite(copy, _zero_charges)
    assert site_main(["audit", "verify", str(copy), "--head", open_entries(copy)[-1].hash]) == 4  # charges fail
    assert "was edited: it records rho 0, but a gaussian release with epsilon 0.5" in capsys.readouterr().out
    checked, accepted = _entries(copy, "checked", "A")[0].seq, _entries(copy, "accepted", "A")[0].seq
    released = _entries(copy, "released", "A")[0].seq
    assert checked < accepted < released and {checked, released} <= set(_logged_head_seqs(history, "site1"))
    code, out = _cross_check(history, copy, capsys)
    assert code == 4
    assert f"entry {accepted} (accepted, study 'A' round 1) was edited: it records rho 0" in out
    assert f"entry {released} differs from the head the coordinator log" in out
    assert f"entries up to {released} were rewritten" in out
    # The budget check still matches its head: the first change is between it and the release.
    assert f"the first change is in entries {checked + 1} to {released}" in out
    # The attacker also rewrites what the entries claim was asked (no DP at all): the log and heads disagree.
    hidden = _copy(history, "site1", tmp_path)
    _rewrite(hidden, lambda e: dataclasses.replace(e, rho=0.0, epsilon=0.0, delta=0.0, mechanism="exact",
                                                   parameters=e.parameters.replace('"dp.epsilon"', '"dp.hidden"')))
    code, out = _cross_check(history, hidden, capsys)
    assert code == 4 and "records exact epsilon 0 delta 0, but the coordinator asked for gaussian epsilon 0.5" in out
    first = _logged_head_seqs(history, "site1")[0]  # study A's budget check: every entry up to it was rewritten
    assert first == checked
    assert f"entry {first} differs from the head the coordinator log" in out
    assert "the first change is in " + ("entry 1" if first == 1 else f"entries 1 to {first}") in out


def test_a_deleted_ledger_is_named(history: Path, tmp_path: Path, capsys) -> None:
    code, out = _cross_check(history, tmp_path / "gone.sqlite", capsys)
    assert code == 4
    assert "site 'site1': ledger" in out and "does not exist (deleted), but the coordinator log" in out
    assert f"holds its signed head at seq {_logged_head_seqs(history, 'site1')[-1]}" in out


def test_another_sites_ledger_is_named(history: Path, tmp_path: Path, capsys) -> None:
    code, out = _cross_check(history, _copy(history, "site2", tmp_path), capsys)
    assert code == 4 and "is another site's ledger: its entries are those of site(s) 'site2'" in out
    assert "differs from the head the coordinator log" in out


def test_a_head_signed_by_an_unknown_key_is_named(history: Path, tmp_path: Path, capsys) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    log = tmp_path / "log.jsonl"
    events = [json.loads(line) for line in (history / "coordinator-log.jsonl").read_text().splitlines()]
    forged = next(e for e in events if e.get("ledger_head") and e["site"] == "site1")
    head = forged["ledger_head"]
    forged["ledger_head"] = sign_head(Ed25519PrivateKey.generate(), "site1", head["seq"], head["hash"]).to_dict()
    log.write_text("".join(json.dumps(e) + "\n" for e in events))
    capsys.readouterr()
    code = main(["audit", "cross-check", "--coordinator-log", str(log), "--ledger", f"site1={_ledger(history, 'site1')}",
                 "--site-key", f"site1={history / 'sites' / 'site1' / 'keys' / 'ledger-signing.key.pub'}"])
    out = capsys.readouterr().out
    assert code == 4 and f"head at seq {head['seq']} in the coordinator log" in out and "signed by an unknown key" in out


def _site_copy(history: Path, site: str, tmp_path: Path) -> Path:
    directory = tmp_path / site
    shutil.copytree(history / "sites" / site, directory)
    return directory / "site.toml"


def test_a_site_refuses_to_serve_on_a_rolled_back_or_deleted_ledger(history: Path, tmp_path: Path, capsys) -> None:
    config = _site_copy(history, "site1", tmp_path)
    ledger = config.parent / "ledger.sqlite"
    last = open_entries(ledger)[-1].seq  # the site published a head for every entry, its last one included
    keep = _entries(ledger, "released", "B")[0].seq
    assert keep < last
    _execute(ledger, f"DELETE FROM entries WHERE seq > {keep}")
    assert site_main(["check", "--config", str(config)]) == 2
    assert (f"does not extend the last head this site published: rolled back from seq {last} to {keep}"
            in capsys.readouterr().err)
    ledger.unlink()
    process = subprocess.run([sys.executable, "-m", "site_agent", "serve", "--config", str(config), "--listen",
                              "127.0.0.1:0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert process.returncode == 2
    assert f"is missing, but this site published a head at seq {last}" in process.stderr
    assert "refusing to start on a new, empty ledger" in process.stderr and not ledger.exists()


def test_a_budget_reset_on_disk_cannot_pass_the_audit(history: Path, tmp_path: Path, capsys) -> None:
    """The attacker holds the whole disk, the signing key included: the site accepts again, the audit fails."""
    config = _site_copy(history, "site1", tmp_path)
    ledger = config.parent / "ledger.sqlite"
    last = open_entries(ledger)[-1].seq
    _rewrite(ledger, _zero_charges)
    # Without a re-signed head the site refuses the rewritten ledger...
    assert site_main(["check", "--config", str(config)]) == 2
    assert f"entry {last} differs from the head its published-head record" in capsys.readouterr().err
    # ...so the attacker re-signs it with the site's own key: now the site starts with its budget reset.
    site_config = load_site_config(config)
    entries = open_entries(ledger)
    key = load_signing_key(site_config.ledger_signing_key)
    HeadRecord(sign_head(key, "site1", len(entries), entries[-1].hash)).write(site_config.published_head)
    data = load_site_data(site_config)
    assert handlers.describe(data, CohortRequest(""), study_id="A").budget["epsilon_spent"] == 0.0
    code, out = _cross_check(history, ledger, capsys)
    assert code == 4
    assert out.count("was edited: it records rho 0") == 3  # the three DP releases
    # The first head the coordinator holds past the first rewritten (accepted) entry: study A's first release.
    first_release = _entries(ledger, "released", "A")[0].seq
    assert first_release in _logged_head_seqs(history, "site1")
    assert f"entries up to {first_release} were rewritten" in out
