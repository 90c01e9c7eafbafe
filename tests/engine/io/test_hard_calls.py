"""PLINK 2's hard-call rules on dosage imports (``--hard-call-threshold``, ``--dosage-erase-threshold``).

The oracle is PLINK 2's own import with the same flags (``--make-pgen``), read back through pgenlib:
the hard calls and the dosages of our import must be identical, including dosages one 1/16384 unit
either side of a threshold. Bad values are refused naming the flag or the site.toml key and the range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.errors import ConfigError, ExitCode, InputError
from engine.io.genotype_sources import PgenFile, open_genotypes
from engine.io.hard_calls import HardCallRules
from fedgwas.cli import main as fedgwas_main
from fedgwas.site_command import main as site_main
from site_agent.config import load_site_config
from site_agent.provision import init_site
from tests.bgen_writer import write_bgen, write_sample_file
from tests.plink_tools import run_plink2

N, M = 80, 30
#: Dosage units (1/16384) one unit either side of 0.2's threshold (3276 units) from 0, 1 and 2, and halfway.
_EDGES = [3275, 3276, 3277, 16384 - 3277, 16384 - 3276, 16384 + 3276, 16384 + 3277, 32768 - 3276, 32768 - 3277,
          8192, 24576, 0, 16384, 32768]


def _bgen(directory: Path) -> list[str]:
    rng = np.random.default_rng(7)
    probabilities = rng.dirichlet([0.4, 0.4, 0.4], size=(M, N))[:, :, :2]
    missing = rng.random((M, N)) < 0.04
    ids = [f"s{i}" for i in range(N)]
    write_bgen(directory / "x.bgen", ids, [("1", 100 + j, f"rs{j}", "A", "G") for j in range(M)], probabilities,
               missing=missing)
    write_sample_file(directory / "x.sample", ids, ids)
    return ids


def _edge_vcf(path: Path) -> None:
    header = ["##fileformat=VCFv4.2", "##contig=<ID=1>",
              '##FORMAT=<ID=DS,Number=1,Type=Float,Description="ALT dosage">',
              "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(f"s{i}" for i in range(len(_EDGES)))]
    rows = []
    for j in range(3):  # the same edges, shifted across samples
        values = np.roll(_EDGES, j)
        rows.append(f"1\t{100 + j}\tv{j}\tA\tG\t.\t.\t.\tDS\t" + "\t".join(f"{v / 16384:.6f}" for v in values))
    path.write_text("\n".join(header + rows) + "\n")


def _assert_equal_to_plink2(ours, directory: Path, prefix: str) -> None:
    ref = PgenFile(directory / prefix)
    every = np.arange(ref.n_variants)
    np.testing.assert_array_equal(ours.read_block(every), ref.read_block(every))
    np.testing.assert_array_equal(ours.read_dosages(every), ref.read_dosages(every))  # NaN where missing


@pytest.mark.parametrize("hard, erase", [(0.3, 0.2), (0.45, 0.45), (0.0, 0.0), (0.1, 0.05)])
def test_bgen_import_equals_plink2_with_the_same_thresholds(tmp_path: Path, hard: float, erase: float) -> None:
    _bgen(tmp_path)
    flags = ["--hard-call-threshold", str(hard), "--dosage-erase-threshold", str(erase)]
    run_plink2(["--bgen", "x.bgen", "ref-first", "--sample", "x.sample", *flags, "--make-pgen", "--out", "ref"],
               cwd=tmp_path)
    ours = open_genotypes("bgen", tmp_path / "x.bgen", tmp_path / "cache", sample=tmp_path / "x.sample",
                          hard_calls=HardCallRules.checked(hard, erase))
    _assert_equal_to_plink2(ours, tmp_path, "ref")
    # and the defaults differ, so the comparison above could fail
    run_plink2(["--bgen", "x.bgen", "ref-first", "--sample", "x.sample", "--make-pgen", "--out", "default"],
               cwd=tmp_path)
    default = PgenFile(tmp_path / "default")
    every = np.arange(M)
    if hard != 0.1:
        assert not np.array_equal(ours.read_block(every), default.read_block(every))
    if erase > 0:
        assert not np.array_equal(ours.read_dosages(every), default.read_dosages(every), equal_nan=True)


@pytest.mark.parametrize("field", ["DS"])
def test_vcf_dosages_one_unit_either_side_of_the_thresholds(tmp_path: Path, field: str) -> None:
    _edge_vcf(tmp_path / "e.vcf")
    for hard, erase in ((0.2, 0.2), (0.2, 0.0), (0.3, 0.2)):
        prefix = f"ref{hard}_{erase}"
        run_plink2(["--vcf", "e.vcf", f"dosage={field}", "--hard-call-threshold", str(hard),
                    "--dosage-erase-threshold", str(erase), "--make-pgen", "--out", prefix], cwd=tmp_path)
        ours = open_genotypes("vcf", tmp_path / "e.vcf", tmp_path / "cache", vcf_dosage=field,
                              hard_calls=HardCallRules.checked(hard, erase))
        _assert_equal_to_plink2(ours, tmp_path, prefix)


def test_the_cache_reimports_when_the_erase_threshold_changes(tmp_path: Path) -> None:
    _bgen(tmp_path)
    cache = tmp_path / "cache"

    def imported(hard: float, erase: float) -> set[str]:
        open_genotypes("bgen", tmp_path / "x.bgen", cache, sample=tmp_path / "x.sample",
                       hard_calls=HardCallRules.checked(hard, erase))
        return {p.name for p in cache.glob("*.pgen")}

    assert len(imported(0.1, 0.0)) == 1
    assert len(imported(0.3, 0.0)) == 1  # hard calls are made on read: the same import serves
    assert len(imported(0.3, 0.2)) == 2  # erased dosages are a different import
    assert len(imported(0.3, 0.2)) == 2  # and reused


def test_bad_thresholds_name_the_flag_and_plink2s_range() -> None:
    with pytest.raises(InputError, match=r"--hard-call-threshold must be .*0 <= value < 0.5.*0.5"):
        HardCallRules.checked(0.5, None)
    with pytest.raises(InputError, match=r"--dosage-erase-threshold must be .*-0.1"):
        HardCallRules.checked(None, -0.1)
    with pytest.raises(InputError, match=r"--dosage-erase-threshold \(0.2\) cannot be larger than --hard-call-threshold"):
        HardCallRules.checked(None, 0.2)
    with pytest.raises(InputError, match="not to genotype format 'pgen'"):
        open_genotypes("pgen", Path("x"), Path("cache"), hard_calls=HardCallRules.checked(0.3, None))


def _site(tmp_path: Path, ids: list[str], **kwargs) -> Path:
    (tmp_path / "pheno.txt").write_text("#IID\tQT\n" + "".join(f"{i}\t1.5\n" for i in ids))
    return init_site("a", str(tmp_path / "x.bgen"), str(tmp_path / "pheno.txt"), None, tmp_path / "site",
                     "127.0.0.1:0", genotype_format="bgen", sample=str(tmp_path / "x.sample"), **kwargs)


def test_site_config_keys(tmp_path: Path) -> None:
    ids = _bgen(tmp_path)
    config_path = _site(tmp_path, ids, hard_calls=HardCallRules(0.3, 0.2))
    assert load_site_config(config_path).hard_calls == HardCallRules(0.3, 0.2)
    text = config_path.read_text()
    assert "hard_call_threshold = 0.3" in text and "dosage_erase_threshold = 0.2" in text
    config_path.write_text(text.replace("hard_call_threshold = 0.3", "hard_call_threshold = 0.7"))
    with pytest.raises(ConfigError, match=r"\[data\] hard_call_threshold must be .*0 <= value < 0.5.*0.7"):
        load_site_config(config_path)
    config_path.write_text(text.replace("hard_call_threshold = 0.3", 'hard_call_threshold = "high"'))
    with pytest.raises(ConfigError, match="hard_call_threshold = 'high' has the wrong type"):
        load_site_config(config_path)
    config_path.write_text(text.replace("hard_call_threshold = 0.3", "hard_call_threshold = 0.1"))
    with pytest.raises(ConfigError, match=r"\[data\] dosage_erase_threshold \(0.2\) cannot be larger"):
        load_site_config(config_path)
    pfile = _site(tmp_path, ids).read_text().replace("bgen = ", "pfile = ").replace("sample = ", "# ")
    config_path.write_text(pfile.replace("[data]", "[data]\nhard_call_threshold = 0.2"))
    with pytest.raises(ConfigError, match=r"\[data\] hard_call_threshold go\(es\) with a dosage import only"):
        load_site_config(config_path)
    with pytest.raises(InputError, match="not to genotype format 'pgen'"):
        init_site("a", str(tmp_path / "x"), str(tmp_path / "pheno.txt"), None, tmp_path / "site", "127.0.0.1:0",
                  genotype_format="pgen", hard_calls=HardCallRules(0.3, 0.0))


def test_site_init_options(tmp_path: Path, capsys) -> None:
    ids = _bgen(tmp_path)
    (tmp_path / "pheno.txt").write_text("#IID\tQT\n" + "".join(f"{i}\t1.5\n" for i in ids))
    base = ["init", "--name", "a", "--bgen", str(tmp_path / "x.bgen"), "--sample", str(tmp_path / "x.sample"),
            "--pheno", str(tmp_path / "pheno.txt"), "--dir", str(tmp_path / "site"), "--insecure"]
    assert site_main([*base, "--hard-call-threshold", "0.4", "--dosage-erase-threshold", "0.1"]) == 0
    assert load_site_config(tmp_path / "site" / "site.toml").hard_calls == HardCallRules(0.4, 0.1)
    capsys.readouterr()
    assert site_main(["check", "--config", str(tmp_path / "site" / "site.toml")]) == 0
    assert "hard calls within 0.4 of an integer, dosages erased within 0.1" in capsys.readouterr().out
    assert site_main([*base, "--hard-call-threshold", "0.5"]) == ExitCode.INPUT
    assert "--hard-call-threshold must be a number with 0 <= value < 0.5" in capsys.readouterr().err


def test_fedgwas_local_refuses_bad_or_inapplicable_thresholds(tmp_path: Path, capsys) -> None:
    _bgen(tmp_path)
    bgen = ["--bgen", str(tmp_path / "x.bgen"), "--sample", str(tmp_path / "x.sample")]
    assert fedgwas_main(["local", *bgen, *bgen, "--freq", "--out", str(tmp_path / "o"), "--no-progress",
                         "--dosage-erase-threshold", "0.3"]) == ExitCode.INPUT
    assert "--dosage-erase-threshold (0.3) cannot be larger than --hard-call-threshold (0.1)" in capsys.readouterr().err
    run_plink2(["--bgen", "x.bgen", "ref-first", "--sample", "x.sample", "--make-pgen", "--out", "p"], cwd=tmp_path)
    pfile = ["--pfile", str(tmp_path / "p")]
    assert fedgwas_main(["local", *pfile, *pfile, "--freq", "--out", str(tmp_path / "o"), "--no-progress",
                         "--hard-call-threshold", "0.3"]) == ExitCode.INPUT
    assert "apply to dosage imports (--bgen, or --vcf with --vcf-dosage); none was given" in capsys.readouterr().err
