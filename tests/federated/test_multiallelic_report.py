"""Multi-allelic .pgen records are a counted drop, reported in the summary, metadata and report; the
site's declared genotyping technology reaches the GWAS-SSF metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fedgwas.cli import main
from tests.plink_tools import run_plink2


def _vcf(path: Path, prefix: str, n: int, rng: np.random.Generator) -> None:
    lines = ["##fileformat=VCFv4.2", '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">', "##contig=<ID=1>",
             "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(f"{prefix}{i}" for i in range(n))]
    for j in range(40):
        k = 3 if j % 10 == 3 else 2  # 4 multi-allelic records (A -> C,T)
        calls = "\t".join(f"{rng.integers(0, k)}/{rng.integers(0, k)}" for _ in range(n))
        lines.append(f"1\t{1000 + 100 * j}\tv{j}\tA\t{'C,T' if k == 3 else 'C'}\t.\t.\t.\tGT\t{calls}")
    path.write_text("\n".join(lines) + "\n")


def test_multiallelic_records_are_counted_and_reported(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    pheno = ["#IID QT"]
    for prefix in ("a", "b"):
        _vcf(tmp_path / f"{prefix}.vcf", prefix, 60, rng)
        run_plink2(["--vcf", str(tmp_path / f"{prefix}.vcf"), "--make-pgen", "--out", str(tmp_path / prefix)], cwd=tmp_path)
        pheno += [f"{prefix}{i} {rng.normal():.4f}" for i in range(60)]
    (tmp_path / "pheno.txt").write_text("\n".join(pheno) + "\n")
    out = tmp_path / "out"
    code = main(["local", "--pfile", str(tmp_path / "a"), "--pfile", str(tmp_path / "b"), "--pheno",
                 str(tmp_path / "pheno.txt"), "--pheno-name", "QT", "--glm", "linear", "--out", str(out),
                 "--no-progress", "--insecure-transport", "--genotyping-technology", "Genome-wide genotyping array"])
    assert code == 0
    summary = json.loads((out / "QT.linear.summary.json").read_text())
    assert summary["variants_dropped"]["multi_allelic_records_at_sites"] == 8  # 4 at each site
    assert summary["n_variants_tested"] == 36
    meta = (out / "QT.linear.tsv.gz-meta.yaml").read_text()
    assert '    "multi_allelic_records_at_sites": 8\n' in meta
    assert "genotyping_technology:\n  - Genome-wide genotyping array\n" in meta
    assert "multi_allelic_records_at_sites: 8" in (out / "QT.linear.report.html").read_text()
