"""A simulated imputed cohort written in every dosage format, and PLINK 2 as the oracle on its pooled files.

Genotypes come from allele frequencies; each variant has an imputation quality, and each sample's
genotype probabilities mix the true genotype with the population prior (so dosages are uncertain
and MaCH R2 < 1); the first 60% of the variants miss 2% of their dosages. The pooled cohort is written as a BGEN 1.2
(16-bit probabilities, :mod:`tests.bgen_writer`) and imported by PLINK 2 itself (``--bgen ref-first``)
into the pooled dosage ``.pgen`` that the federated results are compared with. The sites:

* ``bgen``: its samples' rows of the same probabilities, as a BGEN with a ``.sample`` file;
* ``pgen``: ``plink2 --pfile pooled --keep ... --make-pgen`` (a .pgen with dosages);
* ``vcf``: a dosage-only VCF (FORMAT ``DS``, no ``GT``) written from the pooled .pgen's dosages, or
  ``GP`` probabilities that give the same dosages.

Phenotypes: quantitative ``QT1..QT6`` and case/control ``BT1..BT4`` (1/2 coding), with different
missingness (two pairs share a pattern); covariates ``SEX_MALE AGE PC1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.io.genotype_sources import PgenFile
from tests.bgen_writer import write_bgen, write_sample_file
from tests.plink_tools import read_plink_table, run_plink2

SITE_SIZES = {"bgen": 420, "pgen": 380, "vcf": 340}
QUANTITATIVE = tuple(f"QT{k}" for k in range(1, 7))
BINARY = tuple(f"BT{k}" for k in range(1, 5))
COVARIATES = ("SEX_MALE", "AGE", "PC1")
_ALLELES = (("A", "G"), ("C", "T"), ("A", "C"), ("G", "T"))


@dataclass(frozen=True)
class DosageCohort:
    directory: Path
    pooled: Path  # PLINK 2 prefix of the pooled dosage .pgen (PLINK 2's own BGEN import)
    bgen: Path
    sample: Path
    pgen: Path  # site prefix
    vcf: Path
    pheno: Path
    covar: Path
    ids: np.ndarray  # pooled sample IDs, site order

    def local_args(self, vcf_field: str = "DS") -> list[str]:
        vcf = self.vcf if vcf_field == "DS" else self.vcf.with_name("vcf_gp.vcf")
        return ["--bgen", str(self.bgen), "--sample", str(self.sample), "--pfile", str(self.pgen),
                "--vcf", str(vcf), "--vcf-dosage", vcf_field]


def _probabilities(rng: np.random.Generator, n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities ``(m, n, 3)`` over (hom first, het, hom second), true second-allele counts ``(n, m)``, missing ``(m, n)``)."""
    freq = rng.uniform(0.03, 0.5, size=m)
    freq[:4] = (0.0007, 0.0015, 0.003, 0.3)  # called with certainty (below): rare ones need Firth
    truth = rng.binomial(2, freq, size=(n, m))
    quality = rng.uniform(0.3, 1.0, size=m)
    prior = np.stack([(1 - freq) ** 2, 2 * freq * (1 - freq), freq ** 2], axis=1)  # (m, 3)
    onehot = np.eye(3)[truth.T]  # (m, n, 3)
    certainty = np.clip(rng.beta(4 * quality[:, None] + 0.1, 4 * (1 - quality[:, None]) + 0.1, size=(m, n)), 0, 1)
    noise = rng.dirichlet(np.ones(3), size=(m, n))
    posterior = certainty[..., None] * onehot + (1 - certainty[..., None]) * (0.7 * prior[:, None, :] + 0.3 * noise)
    posterior[:4] = onehot[:4]  # rare variants called with certainty: zero counts among cases (Firth)
    posterior /= posterior.sum(axis=2, keepdims=True)
    # The first 60 % of the variants miss calls, the others are complete. (Contiguous: PLINK 2 v2.00a3.5's
    # logistic SE of a variant with missing calls depends on the previous variant's buffers, see
    # docs/architecture.md, so complete and incomplete variants are not interleaved.)
    missing = (rng.random((m, n)) < 0.02) & (np.arange(m) < 0.6 * m)[:, None]
    return posterior, truth, missing


def _phenotypes(rng: np.random.Generator, truth: np.ndarray, covariates: np.ndarray) -> dict[str, np.ndarray]:
    n = len(truth)
    base = covariates @ np.array([0.4, 0.02, 0.8])
    columns: dict[str, np.ndarray] = {}
    shared = rng.random(n) < 0.08  # QT4 and QT5 share this missingness pattern; BT2 and BT3 another
    shared_bt = rng.random(n) < 0.06
    missing = {"QT1": np.zeros(n, bool), "QT2": rng.random(n) < 0.03, "QT3": rng.random(n) < 0.15,
               "QT4": shared, "QT5": shared, "QT6": rng.random(n) < 0.3,
               "BT1": np.zeros(n, bool), "BT2": shared_bt, "BT3": shared_bt, "BT4": rng.random(n) < 0.1}
    for k, name in enumerate(QUANTITATIVE):
        effect = truth[:, 10 + k] * 0.5 + truth[:, 40 + k] * 0.3
        values = base + effect + rng.normal(scale=1.0 + 0.2 * k, size=n)
        columns[name] = np.where(missing[name], np.nan, values)
    for k, name in enumerate(BINARY):
        liability = base - base.mean() + truth[:, 20 + k] * 0.6 + rng.logistic(size=n) - 0.3 * k
        columns[name] = np.where(missing[name], np.nan, np.where(liability > 0.5, 2.0, 1.0))
    return columns


def _write_table(path: Path, ids: np.ndarray, columns: dict[str, np.ndarray]) -> None:
    lines = ["#FID\tIID\t" + "\t".join(columns)]
    for i, sample in enumerate(ids):
        values = ["NA" if np.isnan(c[i]) else f"{c[i]:.10g}" for c in columns.values()]
        lines.append(f"{sample}\t{sample}\t" + "\t".join(values))
    path.write_text("\n".join(lines) + "\n")


def _write_vcf(path: Path, prefix: Path, keep: np.ndarray, field: str) -> None:
    """A VCF with only FORMAT ``field`` (DS, or GP probabilities that give them) from the .pgen's dosages."""
    source = PgenFile(prefix)
    dosages = source.read_dosages(np.arange(source.n_variants), keep)  # (n_site, m)
    ids = source.fam.iid[keep]
    manifest = source.manifest
    header = ["##fileformat=VCFv4.2", "##contig=<ID=1>", "##contig=<ID=2>",
              '##FORMAT=<ID=DS,Number=1,Type=Float,Description="ALT dosage">',
              '##FORMAT=<ID=GP,Number=G,Type=Float,Description="Genotype probabilities">',
              "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(ids)]
    lines = list(header)
    for j in range(source.n_variants):
        if field == "DS":
            values = ["." if np.isnan(d) else f"{d:.6f}" for d in dosages[:, j]]
        else:  # probabilities with P(het) + 2 P(hom ALT) = the dosage, 6 decimals
            hom = np.clip(dosages[:, j] - 1.0, 0.0, None)
            het = dosages[:, j] - 2.0 * hom
            values = ["." if np.isnan(d) else f"{1.0 - a - b:.6f},{a:.6f},{b:.6f}" for d, a, b in
                      zip(dosages[:, j], het, hom)]
        lines.append(f"{manifest.chrom[j]}\t{manifest.pos[j]}\t{manifest.variant_id[j]}\t{manifest.allele2[j]}\t"
                     f"{manifest.allele1[j]}\t.\t.\t.\t{field}\t" + "\t".join(values))
    path.write_text("\n".join(lines) + "\n")
    source.close()


def simulate_dosage_cohort(directory: Path, n_variants: int = 300, seed: int = 16) -> DosageCohort:
    """Write the cohort's files into ``directory`` (see the module docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = sum(SITE_SIZES.values())
    ids = np.array([f"s{i:04d}" for i in range(n)])
    posterior, truth, missing = _probabilities(rng, n, n_variants)
    variants = [("1" if j < n_variants // 2 else "2", 1000 + 37 * j, f"rs{j + 1}", *_ALLELES[j % 4])
                for j in range(n_variants)]
    # The BGEN's probabilities (16-bit), as every format then sees them.
    quantised = np.rint(posterior[..., :2] * 65535) / 65535
    write_bgen(directory / "pooled.bgen", list(ids), variants, quantised, missing=missing)
    write_sample_file(directory / "pooled.sample", list(ids), list(ids))
    run_plink2(["--bgen", "pooled.bgen", "ref-first", "--sample", "pooled.sample", "--make-pgen", "--out", "pooled"],
               cwd=directory)
    site_rows = {}
    start = 0
    for name, size in SITE_SIZES.items():
        site_rows[name] = np.arange(start, start + size)
        start += size
    bgen_rows = site_rows["bgen"]
    write_bgen(directory / "bgen_site.bgen", list(ids[bgen_rows]), variants, quantised[:, bgen_rows],
               missing=missing[:, bgen_rows], embed_samples=False)
    write_sample_file(directory / "bgen_site.sample", list(ids[bgen_rows]), list(ids[bgen_rows]))
    keep = directory / "pgen_site.keep"
    keep.write_text("".join(f"{s}\t{s}\n" for s in ids[site_rows["pgen"]]))
    run_plink2(["--pfile", "pooled", "--keep", keep.name, "--make-pgen", "--out", "pgen_site"], cwd=directory)
    _write_vcf(directory / "vcf_site.vcf", directory / "pooled", site_rows["vcf"], "DS")
    _write_vcf(directory / "vcf_gp.vcf", directory / "pooled", site_rows["vcf"], "GP")
    sex = rng.integers(0, 2, size=n).astype(float)
    covariates = np.column_stack([sex, rng.uniform(20, 80, size=n), rng.normal(size=n)])
    _write_table(directory / "covar.txt", ids, dict(zip(COVARIATES, covariates.T)))
    dosage_truth = np.where(missing.T, np.nan, truth)
    _write_table(directory / "pheno.txt", ids, _phenotypes(rng, np.nan_to_num(dosage_truth), covariates))
    return DosageCohort(directory, directory / "pooled", directory / "bgen_site.bgen", directory / "bgen_site.sample",
                        directory / "pgen_site", directory / "vcf_site.vcf", directory / "pheno.txt",
                        directory / "covar.txt", ids)


def plink2_glm(cohort: DosageCohort, phenotype: str, model: str, out_dir: Path,
               extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """``plink2 --glm`` of one phenotype on the pooled dosage .pgen (A1 = ALT); the parsed table."""
    out = out_dir / f"plink2_{phenotype}"
    modifiers = {"linear": [], "logistic": [], "firth": ["firth"]}[model]
    run_plink2(["--pfile", str(cohort.pooled), "--pheno", str(cohort.pheno), "--pheno-name", phenotype,
                "--covar", str(cohort.covar), "--covar-name", *COVARIATES, "--covar-variance-standardize",
                "--glm", "omit-ref", "hide-covar", *modifiers, "cols=+a1count,+a1freq,+beta,+se,+firth,+machr2",
                *extra, "--out", str(out)], cwd=out_dir)
    suffix = {"linear": "linear", "logistic": "logistic.hybrid", "firth": "firth"}[model]
    return read_plink_table(Path(f"{out}.{phenotype}.glm.{suffix}"))
