"""The DP allele-frequency interface of ``fedgwas local`` with real site-agent processes.

``--freq --extract IDS --dp-epsilon E --dp-delta D --site-budget-epsilon B --out DIR``: every site's
ledger is ``DIR/sites/<bfile stem>/ledger.sqlite``, reused by the next run with the same ``--out``, so
spending accumulates until a request no longer fits and is refused with a message about the budget.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedgwas.cli import main
from engine.simulate import SimulationSpec, simulate_study
from fedgwas.site_command import main as site_main
from engine.audit.ledger import open_entries


@pytest.mark.slow
def test_dp_frequencies_until_the_site_budgets_run_out(tmp_path: Path, capsys) -> None:
    study = simulate_study(SimulationSpec(site_sizes=(200, 150), n_variants=300, seed=5, write_pooled=False),
                           tmp_path / "sim")
    ids = [line.split()[1] for line in Path(f"{study.site_bfiles[0]}.bim").read_text().splitlines()[10:35]]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    out = tmp_path / "out"
    command = ["local", *sum((["--bfile", str(b)] for b in study.site_bfiles), []), "--freq",
               "--extract", str(tmp_path / "ids.txt"), "--dp-epsilon", "1", "--dp-delta", "1e-6",
               "--site-budget-epsilon", "1.2", "--out", str(out), "--no-progress"]
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "DP release preview" in printed and "budget at site1: epsilon 0 spent of 1.2" in printed
    rows = (out / "fedgwas.afreq").read_text().splitlines()
    assert rows[0].split() == ["#CHROM", "ID", "REF", "ALT", "ALT_FREQS", "OBS_CT"]
    assert [row.split()[1] for row in rows[1:]] == ids
    assert all(0.0 <= float(row.split()[4]) <= 1.0 for row in rows[1:] if row.split()[4] != "NaN")

    # Same --out: the ledgers are reused, epsilon 1 more does not fit in 1.2 (zCDP: two would be ~1.44).
    assert main(command) != 0
    captured = capsys.readouterr()
    assert "budget" in captured.err and "DOES NOT FIT" in captured.out
    for site in ("site1", "site2"):
        ledger = out / "sites" / site / "ledger.sqlite"
        kinds = [e.kind for e in open_entries(ledger) if e.kind != "described"]  # every Describe is ledgered too
        assert kinds == ["checked", "accepted", "released", "refused"]
        assert site_main(["audit", "verify", str(ledger)]) == 0
    logs = ["--ledger", str(out / "sites" / "site1" / "ledger.sqlite"),
            "--ledger", str(out / "sites" / "site2" / "ledger.sqlite")]
    assert main(["audit", "cross-check", "--coordinator-log", str(out / "coordinator-log.jsonl"), *logs]) == 0
    # A larger budget in a later run's config applies to the same spending record.
    larger = [("1.5" if previous == "--site-budget-epsilon" else arg) for previous, arg in zip(["", *command], command)]
    assert main(larger) == 0
    assert [e.kind for e in open_entries(out / "sites" / "site1" / "ledger.sqlite")][-3:] == ["checked", "accepted",
                                                                                              "released"]


def test_bad_dp_options_are_refused_as_bad_input(tmp_path: Path, capsys) -> None:
    study = simulate_study(SimulationSpec(site_sizes=(30, 30), n_variants=20, seed=1, write_pooled=False),
                           tmp_path / "sim")
    base = ["local", *sum((["--bfile", str(b)] for b in study.site_bfiles), []), "--freq", "--out",
            str(tmp_path / "out"), "--no-progress"]
    for extra, message in ((["--dp-epsilon", "-1"], "--dp-epsilon -1.0 must be in"),
                           (["--dp-epsilon", "1", "--dp-bounds", "QT"], "--dp-bounds item 'QT' must read NAME=LO:HI"),
                           (["--dp-bounds", "QT=0:1"], "--dp-bounds and --dp-collusion need --dp-epsilon"),
                           (["--dp-epsilon", "1", "--site-budget-epsilon", "0"], "--site-budget-epsilon 0.0 must be"),
                           (["--extract", str(tmp_path / "none.txt")], "--extract file")):
        assert main([*base, *extra]) == 2, extra
        assert message in capsys.readouterr().err


def test_study_files_declare_dp_and_are_checked_before_any_site_is_asked(tmp_path: Path) -> None:
    from coordinator.study_file import load_study
    from engine.errors import ConfigError

    sites = '[[sites]]\nname = "a"\naddress = "x:1"\n[[sites]]\nname = "b"\naddress = "y:1"\n'
    path = tmp_path / "study.toml"
    (tmp_path / "ids.txt").write_text("rs1 rs2\nrs3\n")
    path.write_text('[study]\nid = "s"\n[analysis]\nphenotype = "QT"\ncovariates = ["AGE"]\nextract = "ids.txt"\n'
                    '[dp]\nepsilon = 0.5\ncollusion = 1\nbounds = { QT = [-3, 3], AGE = [20, 80] }\n' + sites)
    config = load_study(path)
    assert config.extract == ("rs1", "rs2", "rs3") and config.dp is not None and config.dp.collusion == 1
    path.write_text('[study]\nid = "s"\n[analysis]\nphenotype = "QT"\ncovariates = ["AGE"]\n'
                    '[dp]\nepsilon = 0.5\nbounds = { QT = [-3, 3] }\n' + sites)
    with pytest.raises(ConfigError, match="no clipping range for 'AGE'"):
        load_study(path)
    path.write_text('[study]\nid = "s"\n[analysis]\nphenotype = "QT"\nglm = "logistic"\n[dp]\nepsilon = 0.5\n' + sites)
    with pytest.raises(ConfigError, match="not for glm 'logistic'"):
        load_study(path)
    path.write_text('[study]\nid = "s"\n[analysis]\nphenotype = "QT"\n[dp]\nepsilon = "high"\n' + sites)
    with pytest.raises(ConfigError, match=r"\[dp\] epsilon must be a number"):
        load_study(path)


def test_each_phenotype_of_a_dp_study_is_its_own_release(tmp_path: Path, capsys) -> None:
    """Several phenotypes with DP: one round per phenotype, each previewed and charged at every site
    (the one-pass round, which releases every phenotype at once, is used without DP only)."""
    study = simulate_study(SimulationSpec(site_sizes=(200, 150), n_variants=300, seed=5, write_pooled=False),
                           tmp_path / "sim")
    ids = [line.split()[1] for line in Path(f"{study.site_bfiles[0]}.bim").read_text().splitlines()[10:30]]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    out = tmp_path / "out"
    assert main(["local", *sum((["--bfile", str(b)] for b in study.site_bfiles), []), "--pheno", str(study.pheno_path),
                 "--pheno-name", "QT,BT", "--glm", "linear", "--extract", str(tmp_path / "ids.txt"),
                 "--dp-epsilon", "1", "--dp-delta", "1e-6", "--dp-bounds", "QT=-5:5,BT=1:2",
                 "--site-budget-epsilon", "3", "--out", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("DP release preview") == 2
    assert (out / "QT.linear.tsv.gz").exists() and (out / "BT.linear.tsv.gz").exists()
    for site in ("site1", "site2"):
        kinds = [e.kind for e in open_entries(out / "sites" / site / "ledger.sqlite")]
        assert kinds.count("released") == 2 and kinds.count("accepted") == 2, kinds
