"""`fedgwas-site init`: deny-by-default access, the identity key and the pinned roster; `check` warns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.privacy import roster as roster_module
from engine.simulate import SimulationSpec, simulate_study
from site_agent.cli import main as site_main
from site_agent.config import load_site_config
from site_agent.data import load_site_data


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    return simulate_study(SimulationSpec(site_sizes=(60, 60), n_variants=20, seed=2, write_pooled=False),
                          tmp_path_factory.mktemp("sim"))


def test_init_denies_by_default_and_pins_the_roster(study, tmp_path: Path, capsys) -> None:
    base = ["init", "--name", "h1", "--bfile", str(study.site_bfiles[0]), "--pheno", str(study.pheno_path),
            "--insecure", "--dir", str(tmp_path / "h1")]
    assert site_main(base) == 0
    key = re.search(r"identity key of 'h1' for the consortium roster: ([0-9a-f]{64})", capsys.readouterr().out)[1]
    config = load_site_config(tmp_path / "h1" / "site.toml")
    assert not config.access.any_study and config.access.requesters == () and config.access.min_cohort == 50
    assert not config.access.allow_cohort_differencing and config.roster is None
    assert site_main(["check", "--config", str(tmp_path / "h1" / "site.toml")]) == 0
    out = capsys.readouterr().out
    assert "WARNING: no consortium roster" in out and "any_study" not in out.split("studies:")[0]
    other = roster_module.public_bytes(roster_module.generate_identity_key())
    roster = tmp_path / "roster.toml"
    roster.write_text(roster_module.render_roster([roster_module.RosterEntry("h1", bytes.fromhex(key)),
                                                   roster_module.RosterEntry("h2", other)]))
    assert site_main([*base, "--roster", str(roster)]) == 0  # re-run: the identity key is kept
    assert key in capsys.readouterr().out
    config = load_site_config(tmp_path / "h1" / "site.toml")
    assert config.roster == (tmp_path / "h1" / "roster.toml").resolve()
    assert load_site_data(config).roster.names == ("h1", "h2")
    assert site_main(["check", "--config", str(tmp_path / "h1" / "site.toml")]) == 0
    assert "no consortium roster" not in capsys.readouterr().out
    # A roster listing another key for this site is refused at start-up.
    (tmp_path / "h1" / "roster.toml").write_text(roster_module.render_roster(
        [roster_module.RosterEntry("h1", other), roster_module.RosterEntry("h2", bytes.fromhex(key))]))
    with pytest.raises(ConfigError, match="lists another identity key for 'h1'"):
        load_site_data(config)


def test_open_access_is_flagged_by_check(study, tmp_path: Path, capsys) -> None:
    assert site_main(["init", "--name", "h2", "--bfile", str(study.site_bfiles[1]), "--pheno", str(study.pheno_path),
                      "--insecure", "--open-access", "--allow-plaintext", "--dir", str(tmp_path / "h2")]) == 0
    assert site_main(["check", "--config", str(tmp_path / "h2" / "site.toml")]) == 0
    out = capsys.readouterr().out
    for warning in ("any_study = true", "min_cohort = 0", "allow_cohort_differencing", "accepts \"plaintext\"",
                    "min_participants = 2", "max_colluding_sites = 0"):
        assert "WARNING: " in out and warning in out, warning


def test_a_malformed_roster_names_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "roster.toml"
    path.write_text('[[site]]\nname = "a"\nidentity_key = "xyz"\n')
    with pytest.raises(ConfigError, match=r"\[\[site\]\] #1 \(a\): identity_key must be 64 lowercase hex digits"):
        roster_module.load_roster(path)
    key = "ab" * 32
    path.write_text(f'[[site]]\nname = "a"\nidentity_key = "{key}"\n[[site]]\nname = "a"\nidentity_key = "{"cd" * 32}"\n')
    with pytest.raises(ConfigError, match="lists a site twice"):
        roster_module.load_roster(path)
