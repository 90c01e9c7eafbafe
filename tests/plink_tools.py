"""Test helpers around the independent oracle, PLINK 2, and the real validation data in tests/data.

PLINK 2 is installed when missing (``apt-get install -y plink2``, as CI runs as root) rather than
tests being skipped: a comparison that silently did not run is worse than a failing one.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from bed_reader import open_bed

from engine.io.bed_writer import BedWriter, write_bim, write_fam
from engine.io.plink import read_bim, read_fam

#: Real genotype data and PLINK reference outputs carried by the tests (provenance: tests/data/README.md).
DATA = Path(__file__).resolve().parent / "data"
HM3 = DATA / "hapmap3_hm3_thinned"
HM3_BFILE = HM3 / "HM3_thinned_autosomal_overlap"
HM3_COVARIATES = ("SEX_MALE", "AGE", "PC1", "PC2", "PC3", "PC4")
#: HapMap3 populations grouped into 4 sites (continental groups, so ancestry differs between sites).
HM3_SITES = {
    "africa": ("ASW", "LWK", "MKK", "YRI"),
    "europe": ("CEU", "TSI", "MEX"),
    "eastasia": ("CHB", "CHD", "JPT"),
    "southasia": ("GIH",),
}


def ensure_plink2() -> str:
    """Path to plink2, installing the Debian package if it is absent."""
    found = shutil.which("plink2")
    if found:
        return found
    subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "plink2"], check=True, capture_output=True)
    found = shutil.which("plink2")
    if not found:
        raise RuntimeError("plink2 could not be installed with apt-get")
    return found


def run_plink2(args: Sequence[str], cwd: Path) -> None:
    completed = subprocess.run([ensure_plink2(), *args, "--threads", "2"], cwd=cwd, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"plink2 {' '.join(args)} failed:\n{completed.stdout}\n{completed.stderr}")


def read_plink_table(path: Path) -> dict[str, np.ndarray]:
    """A PLINK 2 output table (header line starting with '#') as columns of strings/floats."""
    lines = path.read_text().splitlines()
    header = lines[0].lstrip("#").split()
    rows = [line.split() for line in lines[1:]]
    table: dict[str, np.ndarray] = {}
    for i, name in enumerate(header):
        column = np.array([r[i] for r in rows])
        try:
            table[name] = np.where(column == "NA", "nan", column).astype(np.float64)
        except ValueError:
            table[name] = column
    return table


@dataclass(frozen=True)
class SplitStudy:
    """Site filesets made from one pooled fileset, and the pooled fileset they correspond to."""

    site_bfiles: tuple[Path, ...]
    pooled_bfile: Path  # same genotypes (missingness included), reference allele orientation


def split_by_groups(
    bfile: Path,
    groups: dict[str, np.ndarray],
    out_dir: Path,
    *,
    missing_rates: dict[str, float] | None = None,
    swapped_sites: Sequence[str] = (),
    seed: int = 11,
) -> SplitStudy:
    """Write one fileset per group of sample rows, optionally injecting missing calls and swapping alleles.

    ``groups`` maps site name -> row indices into the pooled .fam. A site in ``swapped_sites`` stores
    every variant with bim columns 5/6 exchanged (and genotypes 2 - g), as a site whose files were made
    with another reference would. The pooled fileset written alongside carries the same missing calls.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    fam = read_fam(Path(f"{bfile}.fam"))
    bim = read_bim(Path(f"{bfile}.bim"))
    genotypes = open_bed(Path(f"{bfile}.bed")).read(dtype="int8", order="F")
    rng = np.random.default_rng(seed)
    rates = missing_rates or {}
    order = np.concatenate(list(groups.values()))
    pooled = genotypes[order].copy()
    offset = 0
    paths = []
    for name, rows in groups.items():
        block = pooled[offset: offset + len(rows)]
        rate = rates.get(name, 0.0)
        if rate:
            block[rng.random(block.shape) < rate] = -127
        offset += len(rows)
        stored = np.where(block < 0, block, 2 - block).astype(np.int8) if name in swapped_sites else block
        a1, a2 = (bim.allele2, bim.allele1) if name in swapped_sites else (bim.allele1, bim.allele2)
        prefix = out_dir / name
        write_fam(Path(f"{prefix}.fam"), fam.fid[rows], fam.iid[rows], fam.sex[rows])
        write_bim(Path(f"{prefix}.bim"), bim.chrom, bim.variant_id, bim.pos, a1, a2)
        with BedWriter(Path(f"{prefix}.bed"), len(rows)) as writer:
            writer.write_block(np.asfortranarray(stored))
        paths.append(prefix)
    pooled_prefix = out_dir / "pooled"
    write_fam(Path(f"{pooled_prefix}.fam"), fam.fid[order], fam.iid[order], fam.sex[order])
    write_bim(Path(f"{pooled_prefix}.bim"), bim.chrom, bim.variant_id, bim.pos, bim.allele1, bim.allele2)
    with BedWriter(Path(f"{pooled_prefix}.bed"), len(order)) as writer:
        writer.write_block(np.asfortranarray(pooled))
    return SplitStudy(site_bfiles=tuple(paths), pooled_bfile=pooled_prefix)


def hm3_population_groups() -> dict[str, np.ndarray]:
    """Row indices of the HapMap3 .fam for each site of HM3_SITES."""
    fam = read_fam(HM3_BFILE.with_suffix(".fam"))
    labels = {}
    for line in (HM3 / "population_labels.txt").read_text().splitlines()[1:]:
        fid, iid, pop = line.split()
        labels[(fid, iid)] = pop
    pops = np.array([labels[(f, i)] for f, i in zip(fam.fid, fam.iid)])
    return {site: np.flatnonzero(np.isin(pops, members)) for site, members in HM3_SITES.items()}


def plink2_glm_linear(bfile: Path, pheno: Path, pheno_name: str, covar: Path, covar_names: Sequence[str],
                      out_dir: Path) -> dict[str, np.ndarray]:
    """``plink2 --glm omit-ref`` on a pooled fileset; returns the parsed .glm.linear table."""
    out = out_dir / "plink2_ref"
    run_plink2(["--bfile", str(bfile), "--pheno", str(pheno), "--pheno-name", pheno_name,
                "--covar", str(covar), "--covar-name", *covar_names, "--covar-variance-standardize",
                "--glm", "omit-ref", "hide-covar", "cols=+a1count,+a1freq,+beta,+se",
                "--out", str(out)], cwd=out_dir)
    return read_plink_table(Path(f"{out}.{pheno_name}.glm.linear"))


#: EBI's GWAS-SSF validator lives in its own virtual environment: gwas-sumstats-tools pins pydantic 1,
#: pandas 1.5 and rich 12, which fedgwas's own environment must not be downgraded to.
GWAS_SSF_VENV = Path.home() / ".cache" / "fedgwas-gwas-ssf"
GWAS_SSF_PACKAGES = ("gwas-sumstats-tools==1.0.25", "numpy<2", "six", "click<8.2")


def ensure_gwas_ssf() -> Path:
    """Path to EBI's ``gwas-ssf`` command, installing gwas-sumstats-tools in its own venv if absent."""
    command = GWAS_SSF_VENV / "bin" / "gwas-ssf"
    if not command.exists():
        subprocess.run([shutil.which("python3") or "python3", "-m", "venv", str(GWAS_SSF_VENV)], check=True,
                       capture_output=True)
        subprocess.run([str(GWAS_SSF_VENV / "bin" / "pip"), "install", "-q", *GWAS_SSF_PACKAGES], check=True,
                       capture_output=True)
    return command


def gwas_ssf_validate(data_file: Path) -> str:
    """``gwas-ssf validate -i`` (options from the metadata sidecar) on ``data_file``; returns its output.

    Raises AssertionError with the validator's output unless it reports a valid table and loaded the
    metadata without a schema error.
    """
    completed = subprocess.run([str(ensure_gwas_ssf()), "validate", "--infer-from-metadata", "--min-rows", "1",
                                str(data_file)], capture_output=True, text=True, cwd=data_file.parent)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0 and "Validation status: True" in output, output
    assert "validation error" not in output.lower(), output  # the metadata model loaded
    return output


def assert_matches_plink(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], tolerance: float = 1e-4,
                         se_rtol: float = 2e-5, freq_atol: float = 1e-6) -> None:
    """A GWAS-SSF result (:func:`engine.io.gwas_ssf.read_gwas_ssf`) equals PLINK 2's ``--glm omit-ref``
    table: same variants, A1 and N; |dbeta|/SE and |d -log10 p| below ``tolerance``; SE to ``se_rtol``;
    the effect-allele frequency to ``freq_atol``."""
    assert list(ours["variant_id"]) == list(ref["ID"])
    assert list(ours["effect_allele"]) == list(ref["A1"])  # omit-ref: A1 = ALT = .bim column 5
    np.testing.assert_array_equal(ours["n"], ref["OBS_CT"])
    ok = np.isfinite(ref["P"])
    assert np.array_equal(np.isfinite(ours["beta"]), np.isfinite(ref["BETA"]))
    beta_err = np.abs(ours["beta"][ok] - ref["BETA"][ok]) / ref["SE"][ok]
    # PLINK prints 6 significant digits: compare -log10 p where PLINK's P is not rounded to 0.
    logp_err = np.abs(ours["neg_log10_p"][ok] - -np.log10(ref["P"][ok]))
    assert beta_err.max() < tolerance, f"max |dbeta|/SE = {beta_err.max():.3g}"
    assert logp_err.max() < tolerance, f"max |d -log10 p| = {logp_err.max():.3g}"
    np.testing.assert_allclose(ours["standard_error"][ok], ref["SE"][ok], rtol=se_rtol)
    np.testing.assert_allclose(ours["effect_allele_frequency"][ok], ref["A1_FREQ"][ok], atol=freq_atol)
