"""The site ledger: hash chain, tamper detection, durability of charges, the auditor's commands."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import BudgetExceededError, PrivacyError
from engine.privacy import budget
from fedgwas.site_command import main as site_main
from engine.audit.ledger import FIELDS, Ledger, open_entries, verify

ROOT = Path(__file__).resolve().parents[3]
POLICY = budget.BudgetPolicy(epsilon=1.0, delta=1e-6, study_epsilon=0.8)


def _charge(epsilon: float) -> budget.Charge:
    from engine.privacy import dp

    c = dp.calibrate("gaussian", epsilon, 1e-6, 1.0, 1)
    return budget.Charge("gaussian", c.rho, epsilon, 1e-6)


def _fields(study: str = "s1", requester: str = "alice", round_: int = 1) -> dict:
    return {"requester": requester, "study": study, "round": round_, "request_id": f"{study}-{round_}",
            "analysis": "qc", "n_participants": 100}


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    """Seven entries: two DP releases, an exact release, a study-cap refusal and a dataset refusal."""
    ledger = Ledger(tmp_path / "ledger.sqlite", "site-a", "cohort")
    for round_, epsilon in ((1, 0.5), (2, 0.4)):
        accepted = budget.admit(ledger, POLICY, _charge(epsilon), **_fields(round_=round_))
        ledger.append(kind="released", ref=accepted.seq, digest="ab" * 32, **_fields(round_=round_))
    budget.admit(ledger, POLICY, budget.EXACT, **_fields("s2", "bob"))
    with pytest.raises(BudgetExceededError, match="study 's1'"):
        budget.admit(ledger, POLICY, _charge(0.5), **_fields(round_=3))
    with pytest.raises(BudgetExceededError, match="dataset 'cohort'"):
        budget.admit(ledger, POLICY, _charge(0.9), **_fields("s3", "carol"))
    return ledger


def test_admission_charges_and_refuses_with_what_remains(ledger: Ledger) -> None:
    entries = ledger.entries()
    assert [e.kind for e in entries] == ["accepted", "released", "accepted", "released", "accepted", "refused", "refused"]
    assert verify(entries).ok and verify(entries).n_entries == 7
    refusal = entries[5].message
    assert "privacy budget exceeded" in refusal and "largest request that still fits has epsilon" in refusal
    state = budget.remaining(ledger, POLICY, study="s1")
    assert state["epsilon_spent"] == pytest.approx(0.66, abs=0.02)  # zCDP: 0.5 and 0.4 compose to < 0.9
    assert state["study_epsilon_total"] == 0.8 and state["rho_remaining"] >= 0.0
    assert state["epsilon_remaining"] < 0.5
    with pytest.raises(PrivacyError, match="no differential-privacy budget"):
        budget.admit(ledger, None, _charge(0.1), **_fields())
    with pytest.raises(PrivacyError, match="only differentially private"):
        budget.admit(ledger, budget.BudgetPolicy(1.0, require_dp=True), budget.EXACT, **_fields())
    assert [e.kind for e in ledger.entries()][-2:] == ["refused", "refused"]


def _execute(path: Path, *statements: str) -> None:
    connection = sqlite3.connect(path)
    for statement in statements:
        connection.execute(statement)
    connection.commit()
    connection.close()


@pytest.mark.parametrize("seq", range(1, 8))
def test_editing_any_entry_is_detected(ledger: Ledger, seq: int, capsys) -> None:
    _execute(ledger.path, f"UPDATE entries SET rho = rho / 2, epsilon = 0.01 WHERE seq = {seq}")
    assert site_main(["audit", "verify", str(ledger.path)]) == 4
    assert f"FAILED at entry {seq}: entry {seq} was edited" in capsys.readouterr().out


@pytest.mark.parametrize("seq", range(1, 7))
def test_deleting_an_entry_is_detected(ledger: Ledger, seq: int, capsys) -> None:
    _execute(ledger.path, f"DELETE FROM entries WHERE seq = {seq}")
    assert site_main(["audit", "verify", str(ledger.path)]) == 4
    assert f"FAILED at entry {seq}" in capsys.readouterr().out


@pytest.mark.parametrize("seq", range(1, 7))
def test_reordering_entries_is_detected(ledger: Ledger, seq: int, capsys) -> None:
    # Swap the contents (hashes included) of two neighbouring rows, keeping the row numbers.
    columns = [f for f in FIELDS if f != "seq"]
    connection = sqlite3.connect(ledger.path)
    rows = {s: connection.execute(f"SELECT {', '.join(columns)} FROM entries WHERE seq = ?", (s,)).fetchone()
            for s in (seq, seq + 1)}
    for target, source in ((seq, seq + 1), (seq + 1, seq)):
        connection.execute(f"UPDATE entries SET {', '.join(f'{c} = ?' for c in columns)} WHERE seq = ?",
                           (*rows[source], target))
    connection.commit()
    connection.close()
    assert site_main(["audit", "verify", str(ledger.path)]) == 4
    assert f"FAILED at entry {seq}" in capsys.readouterr().out


def test_rewritten_sequence_numbers_and_truncation(ledger: Ledger, capsys) -> None:
    head = verify(ledger.entries()).head
    # Renumbering entries after a deletion breaks the hashes (the number is part of the content).
    copy = ledger.path.with_name("renumbered.sqlite")
    copy.write_bytes(ledger.path.read_bytes())
    _execute(copy, "DELETE FROM entries WHERE seq = 3", "UPDATE entries SET seq = seq - 1 WHERE seq > 3")
    assert not verify(open_entries(copy)).ok
    # Cutting entries off the end leaves a valid chain: only a recorded head (or the coordinator's log) shows it.
    _execute(ledger.path, "DELETE FROM entries WHERE seq >= 6")
    assert site_main(["audit", "verify", str(ledger.path)]) == 0
    assert site_main(["audit", "verify", str(ledger.path), "--head", head]) == 4
    assert "entries were removed from its end" in capsys.readouterr().out


def test_a_charge_survives_a_crash_right_after_it_is_committed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    script = f"""
import os
from engine.privacy import budget
from engine.audit.ledger import Ledger
ledger = Ledger({str(path)!r}, "site-a", "cohort")
budget.admit(ledger, budget.BudgetPolicy(1.0), budget.Charge("gaussian", 0.01, 0.5, 1e-6), study="s", requester="r")
os._exit(9)  # killed before anything is computed or released
"""
    completed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert completed.returncode == 9, completed.stderr
    entries = open_entries(path)
    assert [(e.kind, e.rho) for e in entries] == [("accepted", 0.01)] and verify(entries).ok


def test_report_shows_spending_per_scope_as_table_json_and_png(ledger: Ledger, tmp_path: Path, capsys) -> None:
    png = tmp_path / "spent.png"
    assert site_main(["audit", "report", str(ledger.path), "--png", str(png)]) == 0
    table = capsys.readouterr().out
    assert "hash chain intact" in table and "dataset    cohort" in table and "requester  carol" in table
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert site_main(["audit", "report", str(ledger.path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    scopes = {(s["scope"], s["name"]): s for s in report["scopes"]}
    dataset = scopes[("dataset", "cohort")]
    assert dataset["epsilon_budget"] == 1.0 and dataset["dp_releases"] == 2 and dataset["refused"] == 2
    assert dataset["epsilon_spent"] == pytest.approx(0.66, abs=0.02)
    assert scopes[("study", "s1")]["epsilon_budget"] == 0.8 and scopes[("requester", "bob")]["exact_releases"] == 0
    assert [row["kind"] for row in report["timeline"]] == ["accepted", "accepted", "refused", "refused"]
    assert report["verification"]["ok"] is True


def test_audit_commands_refuse_a_file_that_is_not_a_ledger(tmp_path: Path, capsys) -> None:
    assert site_main(["audit", "verify", str(tmp_path / "missing.sqlite")]) == 2
    (tmp_path / "junk.sqlite").write_text("not sqlite")
    assert site_main(["audit", "report", str(tmp_path / "junk.sqlite")]) == 2
    assert "not a fedgwas ledger" in capsys.readouterr().err
