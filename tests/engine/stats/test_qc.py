"""QC pieces without sites: the site kernel, PLINK 2's filters, the allelic test, the PLINK-format writers,
and the study file's ``[qc]`` table. The federated end-to-end comparisons are in test_federated_qc_vs_plink.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bed_reader import open_bed

from coordinator.results.qc_files import write_afreq, write_assoc, write_gcount, write_hardy, write_vmiss
from coordinator.study import QcSettings, StudyConfig
from coordinator.study_file import load_study
from engine.stats.qc.allelic import allelic_test, minor_is_effect
from engine.stats.association import VariantTable
from engine.cohort.cohort import Cohort
from engine.errors import ConfigError, InputError
from engine.io.plink import read_bim
from engine.stats.qc.counts import GenotypeCounts, QcStatistic, genotype_counts, variant_filter
from engine.tasks import CohortRequest
from tests.plink_tools import HM3, HM3_BFILE

PLINK2 = HM3 / "plink_reference_outputs" / "plink2"


def naive_counts(genotypes: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Per variant and sample, in plain Python: (hom effect, het, hom other, missing)."""
    out = np.zeros((genotypes.shape[1], 4))
    for j in range(genotypes.shape[1]):
        for g in genotypes[:, j]:
            if g < 0:
                out[j, 3] += 1
            else:
                effect = 2 - g if flip[j] else g
                out[j, {2: 0, 1: 1, 0: 2}[int(effect)]] += 1
    return out


def cohort(phenotype: np.ndarray, name: str = "BT") -> Cohort:
    n = len(phenotype)
    return Cohort(sample_index=np.arange(n), phenotype=phenotype, covariates=np.empty((n, 0)), phenotype_name=name,
                  covariate_names=(), n_in_fam=n, n_dropped=0)


def test_kernel_counts_with_flips_match_naive() -> None:
    rng = np.random.default_rng(3)
    genotypes = rng.choice(np.array([0, 1, 2, -127], dtype=np.int8), size=(50, 30), p=[0.4, 0.35, 0.2, 0.05])
    flip = rng.random(30) < 0.5
    np.testing.assert_array_equal(genotype_counts(np.asfortranarray(genotypes), flip), naive_counts(genotypes, flip))


def test_qc_analysis_all_samples_and_by_status() -> None:
    rng = np.random.default_rng(4)
    genotypes = np.asfortranarray(rng.choice(np.array([0, 1, 2, -127], dtype=np.int8), size=(40, 12)))
    flip = np.zeros(12, dtype=bool)
    analysis = QcStatistic()
    everyone = analysis.prepare(cohort(np.zeros(40), name=""), {})
    assert analysis.width(everyone) == 4
    np.testing.assert_array_equal(analysis.block(everyone, genotypes, flip, {}), naive_counts(genotypes, flip))
    status = (rng.random(40) < 0.4).astype(float)
    split = analysis.prepare(cohort(status), {})
    assert analysis.width(split) == 8
    out = analysis.block(split, genotypes, flip, {})
    np.testing.assert_array_equal(out[:, :4], naive_counts(genotypes[status == 0], flip))
    np.testing.assert_array_equal(out[:, 4:], naive_counts(genotypes[status == 1], flip))
    with pytest.raises(InputError, match="not case/control"):
        analysis.prepare(cohort(np.linspace(0, 3, 40), name="QT"), {})


def test_counts_from_totals_refuses_non_counts() -> None:
    with pytest.raises(InputError, match="whole numbers"):
        GenotypeCounts.from_totals(np.array([[1.0, 2.5, 3.0, 0.0]]))
    with pytest.raises(InputError, match="whole numbers"):
        GenotypeCounts.from_totals(np.array([[1.0, -2.0, 3.0, 0.0]]))


def counts(*rows: tuple[int, int, int, int]) -> GenotypeCounts:
    return GenotypeCounts.from_totals(np.array(rows, dtype=float))


def test_filters_follow_plink2() -> None:
    table = counts(
        (0, 0, 0, 100),    # no calls: --geno drops it; --maf alone keeps it (no frequency), --hwe keeps it
        (0, 0, 100, 0),    # monomorphic: --maf drops it
        (0, 100, 0, 0),    # all heterozygous: --hwe drops it
        (25, 50, 23, 2),   # 2% missing: kept by --geno 0.02 (not above it)
        (25, 50, 22, 3),   # 3% missing: dropped by --geno 0.02
        (1, 8, 91, 0),     # MAF 0.05 exactly: kept by --maf 0.05
    )
    maf_only = variant_filter(table, maf=0.05)
    np.testing.assert_array_equal(maf_only.keep, [True, False, True, True, True, True])
    every = variant_filter(table, maf=0.05, geno=0.02, hwe=1e-6)
    np.testing.assert_array_equal(every.keep, [False, False, False, True, False, True])
    assert every.dropped == {"geno": 2, "hwe": 1, "maf": 1}
    assert list(every.failed) == ["geno", "hwe", "maf"]  # PLINK 2's order: each variant counted once


def test_allelic_test_edge_cases_as_plink19() -> None:
    """Expected values printed by PLINK 1.9 v1.90b6.26 --assoc on crafted variants (375 cases, 563
    controls, 19 with no phenotype)."""
    cases = counts((0, 1, 374, 0), (3, 7, 365, 0), (0, 0, 375, 0), (0, 0, 375, 0), (0, 375, 0, 0))
    controls = counts((0, 0, 563, 0), (0, 0, 563, 0), (0, 563, 0, 0), (0, 0, 563, 0), (0, 0, 0, 563))
    everyone = cases + controls + counts((0, 0, 19, 0), (0, 0, 19, 0), (0, 0, 19, 0), (19, 0, 0, 0), (0, 0, 0, 19))
    test = allelic_test(cases, controls, minor_is_effect(everyone))
    np.testing.assert_allclose(test.freq_cases, [0.001333, 0.01733, 0, 0, 0.5], rtol=5e-4)
    np.testing.assert_allclose(test.freq_controls, [0, 0, 0.5, 0, np.nan], atol=5e-5)
    np.testing.assert_allclose(test.chisq, [1.502, 19.65, 535.8, np.nan, 0], rtol=5e-4)
    np.testing.assert_allclose(10 ** -test.neg_log10_p, [0.2203, 9.283e-06, 1.549e-118, np.nan, 1], rtol=5e-4)
    np.testing.assert_allclose(test.odds_ratio, [np.nan, np.nan, 0, np.nan, np.nan])


def test_minor_allele_choice() -> None:
    everyone = counts((10, 0, 0, 0), (0, 0, 10, 0), (0, 10, 0, 0), (0, 0, 0, 10), (6, 0, 5, 0))
    np.testing.assert_array_equal(minor_is_effect(everyone), [False, True, True, True, False])


def pooled_hm3_counts() -> tuple[VariantTable, GenotypeCounts]:
    bim = read_bim(Path(f"{HM3_BFILE}.bim"))
    genotypes = open_bed(Path(f"{HM3_BFILE}.bed")).read(dtype="int8", order="F")
    variants = VariantTable(chrom=bim.chrom, pos=bim.pos, variant_id=bim.variant_id, effect_allele=bim.allele1,
                            other_allele=bim.allele2)
    return variants, GenotypeCounts.from_totals(genotype_counts(genotypes, np.zeros(len(bim), dtype=bool)))


def test_writers_reproduce_plink2_files_byte_for_byte(tmp_path: Path) -> None:
    variants, pooled = pooled_hm3_counts()
    pairs = [
        (write_afreq(tmp_path / "x.afreq", variants, pooled), PLINK2 / "hm3.afreq"),
        (write_afreq(tmp_path / "x.acount", variants, pooled, as_counts=True), PLINK2 / "hm3_counts.acount"),
        (write_gcount(tmp_path / "x.gcount", variants, pooled), PLINK2 / "hm3.gcount"),
        (write_hardy(tmp_path / "x.hardy", variants, pooled), PLINK2 / "hm3.hardy"),
        (write_vmiss(tmp_path / "x.vmiss", variants, pooled), PLINK2 / "hm3.vmiss"),
    ]
    for ours, reference in pairs:
        assert ours.read_text() == reference.read_text(), reference.name


def test_assoc_writer_layout(tmp_path: Path) -> None:
    variants = VariantTable(chrom=np.array(["1", "22"]), pos=np.array([828418, 5]),
                            variant_id=np.array(["rs28508199", "x"]), effect_allele=np.array(["A", "T"]),
                            other_allele=np.array(["C", "G"]))
    cases, controls = counts((40, 160, 175, 0), (0, 0, 0, 3)), counts((60, 262, 241, 0), (1, 2, 3, 0))
    test = allelic_test(cases, controls, np.array([True, False]))
    text = write_assoc(tmp_path / "x.assoc", variants, variants.pos, test).read_text().splitlines()
    assert text[0] == " CHR         SNP         BP   A1      F_A      F_U   A2        CHISQ            P           OR "
    assert text[1].startswith("   1  rs28508199     828418    A     0.32   ") and text[1].endswith(" ")
    assert text[2].split() == ["22", "x", "5", "G", "NA", "0.6667", "T", "0", "1", "NA"]


def test_qc_settings_validation() -> None:
    with pytest.raises(ConfigError, match="outputs"):
        QcSettings(outputs=("freq", "smiss"))
    with pytest.raises(ConfigError, match="maf"):
        QcSettings(maf=0.7)
    with pytest.raises(ConfigError, match="hwe"):
        QcSettings(hwe=-1.0)
    assert list(QcSettings(maf=0.05, hwe=1e-6, geno=0.02).filters) == ["geno", "hwe", "maf"]


STUDY = """
[study]
id = "qc"
{analysis}
{qc}
[[sites]]
name = "a"
address = "127.0.0.1:1"
[[sites]]
name = "b"
address = "127.0.0.1:2"
"""


def test_study_file_qc_table(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(analysis="", qc='[qc]\noutputs = ["freq", "hardy", "missing"]\nmaf = 0.05\n'
                                                 'geno = 0.02\nhwe = 1e-6\nhwe_midp = true'))
    config = load_study(path)
    assert config.glm == "" and not config.assoc and config.cohort.phenotype == ""
    assert config.qc == QcSettings(outputs=("freq", "hardy", "missing"), maf=0.05, geno=0.02, hwe=1e-6, hwe_midp=True)
    assert config.output_name == "fedgwas" and config.test_name == "qc"
    path.write_text(STUDY.format(analysis='[analysis]\nphenotype = "BT"\nassoc = true', qc='[qc]\nmaf = 0.01'))
    config = load_study(path)
    assert config.assoc and config.glm == "" and config.test_name == "assoc" and config.qc.maf == 0.01
    path.write_text(STUDY.format(analysis='[analysis]\nphenotype = "QT"', qc=""))
    assert load_study(path).glm == "linear"  # a study file without QC keeps its meaning
    for qc, message in (('[qc]\noutputs = ["frq"]', "outputs"), ("[qc]\nmaf = true", "wrong type"),
                        ("[qc]\nmafs = 0.1", "unknown key"), ("[qc]\nmaf = 0.1", "nothing to do")):
        path.write_text(STUDY.format(analysis="", qc=qc))
        with pytest.raises(ConfigError, match=message) as error:
            load_study(path)
        assert str(path) in str(error.value)
    path.write_text(STUDY.format(analysis="[analysis]\nassoc = true", qc=""))
    with pytest.raises(ConfigError, match="'phenotype'"):
        load_study(path)


def test_study_config_needs_a_phenotype_for_association() -> None:
    with pytest.raises(ConfigError, match="phenotype"):
        StudyConfig(study_id="x", glm="linear", cohort=CohortRequest(""), privacy="secagg", sites=(), out_dir=Path("."))
