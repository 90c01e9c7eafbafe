"""Acceptance: federated LD pruning, PCA and PCs-as-covariates equal PLINK 2 on the pooled data.

HapMap3 (957 founders x 14,079 SNPs) is split by continental group into 4 sites served by real
``fedgwas-site`` processes under secure aggregation, and compared with PLINK 2 on the pooled files:

* PCA (no pruning) against the shared ``plink2 --pca 10`` reference: every PC's |correlation| > 0.999.
  Its eigenvalues are 0.2-0.35 % larger than ours because PLINK 2's exact ``--pca`` divides each
  pair's relationship by the variants *both* samples have called, while fedgwas (like PLINK 2's
  ``--pca approx`` and ``--pca meanimpute``) mean-imputes missing calls (0.15 % of calls here). Against
  ``plink2 --pca 10 meanimpute`` (run here) eigenvalues agree within 1e-3 relative (in fact ~1e-6) and
  the variant weights of ``.eigenvec.var`` agree too;
* ``--indep-pairwise`` gives exactly PLINK 2's ``.prune.in``, and the PCA on the pruned variants equals
  PLINK 2's on ``--extract prune.in``;
* the GWAS with the federated PCs as covariates (each site using its own rows) equals ``plink2 --glm``
  with PLINK's pooled PCs: |delta -log10 p| < 1e-3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedgwas.cli import main
from coordinator.results.gwas_ssf import read_gwas_ssf
from engine.io.tables import read_sample_table
from tests.plink_tools import (HM3, HM3_BFILE, hm3_population_groups, plink2_glm_linear, read_plink_table,
                               run_plink2, split_by_groups)

PHENO = HM3 / "sim_pheno.txt"
COVAR = HM3 / "sim_covar.txt"
REFERENCE = HM3 / "plink_reference_outputs/plink2/hm3_pca10"
PCS = tuple(f"PC{i}" for i in range(1, 11))


def run_local(sites, out: Path, *extra: str) -> None:
    argv = [a for s in sites for a in ("--bfile", str(s))]
    assert main(["local", *argv, "--out", str(out), "--no-progress", *extra]) == 0


def pooled_scores(out: Path, pooled_bfile: Path) -> np.ndarray:
    """The sites' own rows of the sample eigenvectors, gathered (for the test only) in pooled order."""
    order = [line.split()[:2] for line in Path(f"{pooled_bfile}.fam").read_text().splitlines()]
    rows: dict[tuple[str, str], np.ndarray] = {}
    for path in sorted(out.glob("sites/*/pca.eigenvec")):
        table = read_sample_table(path)
        values = np.column_stack([table.numeric(name) for name in table.names])
        rows.update({(f, i): v for f, i, v in zip(table.fid, table.iid, values)})
    return np.array([rows[(f, i)] for f, i in order])


def plink_eigenvec(path: Path, pooled_bfile: Path) -> np.ndarray:
    table = read_sample_table(path)
    index = {(f, i): k for k, (f, i) in enumerate(zip(table.fid, table.iid))}
    order = [tuple(line.split()[:2]) for line in Path(f"{pooled_bfile}.fam").read_text().splitlines()]
    values = np.column_stack([table.numeric(name) for name in table.names])
    return values[[index[key] for key in order]]


def assert_same_pcs(ours: np.ndarray, ref: np.ndarray, atol: float | None = None) -> None:
    """|corr| > 0.999 for every PC; with ``atol``, also equal entry by entry once sign-aligned."""
    correlations = [abs(np.corrcoef(ours[:, i], ref[:, i])[0, 1]) for i in range(ref.shape[1])]
    assert min(correlations) > 0.999, f"|corr| per PC: {np.round(correlations, 6)}"
    if atol is not None:
        signs = np.sign(np.sum(ours * ref, axis=0))
        np.testing.assert_allclose(ours * signs, ref, atol=atol)


@pytest.fixture(scope="module")
def pca_and_gwas(hm3_split, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One study: the PCA, then the GWAS with SEX_MALE, AGE (from --covar) and PC1-PC10 (from the PCA)."""
    out = tmp_path_factory.mktemp("pca_gwas")
    run_local(hm3_split.site_bfiles, out, "--pheno", str(PHENO), "--pheno-name", "QT", "--covar", str(COVAR),
              "--covar-name", "SEX_MALE,AGE,PC1-PC10", "--pca", "10", "--glm", "linear")
    return out


@pytest.fixture(scope="module")
def plink_meanimpute(hm3_split, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plink_pca")
    run_plink2(["--bfile", str(hm3_split.pooled_bfile), "--pca", "biallelic-var-wts", "10", "meanimpute",
                "--out", str(out / "pooled")], cwd=out)
    return out / "pooled"


def test_pca_equals_plink2_reference(hm3_split, pca_and_gwas: Path, plink_meanimpute: Path) -> None:
    ours = pooled_scores(pca_and_gwas, hm3_split.pooled_bfile)
    eigenval = np.loadtxt(pca_and_gwas / "pca.eigenval")
    # The shared reference: plink2 --pca 10 on the same (already thinned) files.
    assert_same_pcs(ours, plink_eigenvec(Path(f"{REFERENCE}.eigenvec"), hm3_split.pooled_bfile))
    np.testing.assert_allclose(eigenval, np.loadtxt(f"{REFERENCE}.eigenval"), rtol=4e-3)  # missing calls: see above
    # PLINK 2 with mean imputation of missing calls, as fedgwas and --pca approx do.
    assert_same_pcs(ours, plink_eigenvec(Path(f"{plink_meanimpute}.eigenvec"), hm3_split.pooled_bfile), atol=1e-4)
    np.testing.assert_allclose(eigenval, np.loadtxt(f"{plink_meanimpute}.eigenval"), rtol=2e-5)  # 6 digits each
    ours_var = read_plink_table(pca_and_gwas / "pca.eigenvec.var")
    ref_var = read_plink_table(Path(f"{plink_meanimpute}.eigenvec.var"))
    for column in ("CHROM", "ID", "MAJ", "NONMAJ"):
        assert list(ours_var[column]) == list(ref_var[column]), column
    for pc in PCS:
        sign = np.sign(np.sum(ours_var[pc] * ref_var[pc]))
        np.testing.assert_allclose(ours_var[pc] * sign, ref_var[pc], atol=2e-3 * np.abs(ref_var[pc]).max())
    summary = (pca_and_gwas / "QT.linear.summary.json").read_text()
    assert "PCA (10 PCs" in summary and "converged" in summary


def test_scores_stay_at_each_site(hm3_split, pca_and_gwas: Path) -> None:
    """Each site wrote its own rows (PLINK 2 .eigenvec layout) next to its config; nothing else has them."""
    for site, bfile in zip(sorted(hm3_population_groups()), sorted(hm3_split.site_bfiles)):
        path = pca_and_gwas / "sites" / site / "pca.eigenvec"
        header = path.read_text().splitlines()[0]
        assert header == "#FID\tIID\t" + "\t".join(PCS)
        fam = [line.split()[:2] for line in Path(f"{bfile}.fam").read_text().splitlines()]
        assert [line.split()[:2] for line in path.read_text().splitlines()[1:]] == fam
    assert not list(pca_and_gwas.glob("*.eigenvec"))


def test_gwas_with_federated_pcs_equals_plink2_with_pooled_pcs(hm3_split, pca_and_gwas: Path,
                                                               plink_meanimpute: Path, tmp_path: Path) -> None:
    covar = read_sample_table(COVAR)
    pcs = read_sample_table(Path(f"{plink_meanimpute}.eigenvec"))
    index = {(f, i): k for k, (f, i) in enumerate(zip(pcs.fid, pcs.iid))}
    lines = ["#FID\tIID\tSEX_MALE\tAGE\t" + "\t".join(PCS)]
    for f, i, sex, age in zip(covar.fid, covar.iid, covar.columns["SEX_MALE"], covar.columns["AGE"]):
        lines.append("\t".join([f, i, sex, age, *(pcs.columns[pc][index[(f, i)]] for pc in PCS)]))
    (tmp_path / "covar.txt").write_text("\n".join(lines) + "\n")
    ref = plink2_glm_linear(hm3_split.pooled_bfile, PHENO, "QT", tmp_path / "covar.txt", ("SEX_MALE", "AGE", *PCS),
                            tmp_path)
    ours = read_gwas_ssf(pca_and_gwas / "QT.linear.tsv.gz")
    assert list(ours["variant_id"]) == list(ref["ID"])
    np.testing.assert_array_equal(ours["n"], ref["OBS_CT"])
    ok = np.isfinite(ref["P"])
    logp_err = np.abs(ours["neg_log10_p"][ok] + np.log10(ref["P"][ok]))
    assert logp_err.max() < 1e-3, f"max |d -log10 p| = {logp_err.max():.3g}"


def test_pruning_and_pca_on_pruned_equal_plink2(hm3_split, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_local(hm3_split.site_bfiles, out, "--indep-pairwise", "50", "5", "0.05", "--pca", "10")
    run_plink2(["--bfile", str(hm3_split.pooled_bfile), "--indep-pairwise", "50", "5", "0.05",
                "--out", str(tmp_path / "pooled")], cwd=tmp_path)
    ours_in = (out / "fedgwas.prune.in").read_text().split()
    ref_in = (tmp_path / "pooled.prune.in").read_text().split()
    assert ours_in == ref_in and 0 < len(ours_in) < 14_079
    assert (out / "fedgwas.prune.out").read_text().split() == (tmp_path / "pooled.prune.out").read_text().split()
    run_plink2(["--bfile", str(hm3_split.pooled_bfile), "--extract", str(tmp_path / "pooled.prune.in"),
                "--pca", "10", "meanimpute", "--out", str(tmp_path / "pruned")], cwd=tmp_path)
    assert_same_pcs(pooled_scores(out, hm3_split.pooled_bfile),
                    plink_eigenvec(tmp_path / "pruned.eigenvec", hm3_split.pooled_bfile), atol=1e-4)
    np.testing.assert_allclose(np.loadtxt(out / "pca.eigenval"), np.loadtxt(tmp_path / "pruned.eigenval"), rtol=1e-3)
    assert len((out / "pca.eigenvec.var").read_text().splitlines()) == len(ref_in) + 1


def test_kb_window_pruning_with_missing_calls_equals_plink2(tmp_path: Path) -> None:
    """Uneven missingness per site and one site storing every variant's alleles swapped."""
    split = split_by_groups(HM3_BFILE, hm3_population_groups(), tmp_path / "split",
                            missing_rates={"africa": 0.01, "europe": 0.03, "southasia": 0.05},
                            swapped_sites=("eastasia",))
    run_local(split.site_bfiles, tmp_path / "out", "--indep-pairwise", "500kb", "0.01")
    run_plink2(["--bfile", str(split.pooled_bfile), "--indep-pairwise", "500", "kb", "1", "0.01",
                "--out", str(tmp_path / "pooled")], cwd=tmp_path)
    ours = (tmp_path / "out" / "fedgwas.prune.in").read_text().split()
    assert ours == (tmp_path / "pooled.prune.in").read_text().split()
    assert 0 < len(ours) < 14_079



def test_pruning_and_pca_under_homomorphic_encryption(hm3_split, tmp_path: Path) -> None:
    """The analyses run unchanged under --privacy he (CKKS with a separate key holder)."""
    out = tmp_path / "out"
    run_local(hm3_split.site_bfiles, out, "--indep-pairwise", "50", "5", "0.05", "--pca", "4", "--privacy", "he")
    run_plink2(["--bfile", str(hm3_split.pooled_bfile), "--indep-pairwise", "50", "5", "0.05",
                "--out", str(tmp_path / "pooled")], cwd=tmp_path)
    run_plink2(["--bfile", str(hm3_split.pooled_bfile), "--extract", str(tmp_path / "pooled.prune.in"),
                "--pca", "4", "meanimpute", "--out", str(tmp_path / "pruned")], cwd=tmp_path)
    assert (out / "fedgwas.prune.in").read_text() == (tmp_path / "pooled.prune.in").read_text()
    np.testing.assert_allclose(np.loadtxt(out / "pca.eigenval"), np.loadtxt(tmp_path / "pruned.eigenval"), rtol=1e-3)
    assert_same_pcs(pooled_scores(out, hm3_split.pooled_bfile),
                    plink_eigenvec(tmp_path / "pruned.eigenvec", hm3_split.pooled_bfile), atol=1e-4)
