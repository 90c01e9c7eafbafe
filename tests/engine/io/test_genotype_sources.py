"""PLINK 2 .pgen and VCF/BCF inputs: readers against PLINK 2, and a federated study mixing formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedgwas.cli import main
from coordinator.results.gwas_ssf import read_gwas_ssf
from engine.errors import InputError
from engine.io.genotype_sources import PgenFile, VcfFile, open_genotypes
from engine.io.plink import BedFile
from tests.plink_tools import DATA, HM3, HM3_BFILE, hm3_population_groups, read_plink_table, run_plink2, split_by_groups
from tests.plink_tools import assert_matches_plink

CHR21 = DATA / "1kg_phase3_chr21_start"
VCF_TEXT = """##fileformat=VCFv4.2
##contig=<ID=1>
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ts1\ts2\ts3
1\t100\trs1\tA\tG\t.\t.\t.\tGT\t0/1\t1/1\t./.
1\t200\trs2\tA\tG,T\t.\t.\t.\tGT\t0/1\t1/2\t0/0
1\t300\t.\tC\tT\t.\t.\t.\tGT\t0|0\t0|1\t1|1
"""


def test_vcf_import_matches_plink2_genotype_counts(tmp_path: Path) -> None:
    vcf = VcfFile(CHR21 / "1kg_phase3_chr21_start.vcf.gz", tmp_path / "cache")
    ref = read_plink_table(CHR21 / "plink_reference_outputs/plink2/chr21.gcount")
    assert list(vcf.manifest.variant_id) == list(ref["ID"])
    assert list(vcf.manifest.allele1) == list(ref["ALT"]) and list(vcf.manifest.allele2) == list(ref["REF"])
    genotypes = vcf.read_block(slice(None))
    np.testing.assert_array_equal((genotypes == 0).sum(axis=0), ref["HOM_REF_CT"])
    np.testing.assert_array_equal((genotypes == 1).sum(axis=0), ref["HET_REF_ALT_CTS"])
    np.testing.assert_array_equal((genotypes == 2).sum(axis=0), ref["TWO_ALT_GENO_CTS"])
    np.testing.assert_array_equal((genotypes < 0).sum(axis=0), ref["MISSING_CT"])
    # Imported once: a second open reuses the cache.
    assert VcfFile(CHR21 / "1kg_phase3_chr21_start.vcf.gz", tmp_path / "cache").imported.prefix == vcf.imported.prefix


def test_vcf_multiallelic_records_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "small.vcf"
    path.write_text(VCF_TEXT)
    vcf = VcfFile(path, tmp_path / "cache")
    assert vcf.multiallelic_skipped == 1 and vcf.n_variants == 2
    assert list(vcf.manifest.variant_id) == ["rs1", "1:300:C:T"]
    np.testing.assert_array_equal(vcf.read_block(slice(None)), [[1, 0], [2, 1], [-127, 2]])


def test_malformed_vcf_record_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.vcf"
    path.write_text(VCF_TEXT + "1\t400\trs4\tC\tT\t.\t.\t.\tGT\t0/1\t1/1\n")
    with pytest.raises(InputError, match=r"malformed record after 1:300"):
        VcfFile(path, tmp_path / "cache")
    not_a_vcf = tmp_path / "pheno.txt"
    not_a_vcf.write_text("x\n")
    with pytest.raises(InputError, match="cannot open VCF/BCF"):
        VcfFile(not_a_vcf, tmp_path / "cache")


def test_pgen_reader_equals_bed_reader(tmp_path: Path) -> None:
    run_plink2(["--bfile", str(HM3_BFILE), "--make-pgen", "--out", str(tmp_path / "hm3")], cwd=tmp_path)
    pgen, bed = PgenFile(tmp_path / "hm3"), BedFile(HM3_BFILE)
    assert list(pgen.manifest.variant_id) == list(bed.manifest.variant_id)
    assert list(pgen.manifest.allele1) == list(bed.manifest.allele1)  # ALT = .bim column 5
    samples = np.array([0, 5, 17, 400, 956])
    variants = np.array([3, 1000, 14078, 42])
    np.testing.assert_array_equal(pgen.read_block(variants, samples), bed.read_block(variants, samples))
    np.testing.assert_array_equal(pgen.read_block(slice(0, 200)), bed.read_block(slice(0, 200)))
    with pytest.raises(InputError, match="genotype format 'gen'"):
        open_genotypes("gen", tmp_path / "hm3", tmp_path)


def test_federated_study_mixing_bed_pgen_and_vcf_sites(tmp_path: Path) -> None:
    split = split_by_groups(HM3_BFILE, hm3_population_groups(), tmp_path / "split", swapped_sites=("eastasia",))
    africa, europe, eastasia, southasia = split.site_bfiles
    run_plink2(["--bfile", str(europe), "--make-pgen", "--out", str(tmp_path / "europe")], cwd=tmp_path)
    run_plink2(["--bfile", str(eastasia), "--export", "vcf", "bgz", "id-paste=iid", "--out",
                str(tmp_path / "eastasia")], cwd=tmp_path)
    code = main(["local", "--bfile", str(africa), "--pfile", str(tmp_path / "europe"),
                 "--vcf", str(tmp_path / "eastasia.vcf.gz"), "--bfile", str(southasia),
                 "--pheno", str(HM3 / "sim_pheno.txt"), "--pheno-name", "QT", "--covar", str(HM3 / "sim_covar.txt"),
                 "--covar-name", "SEX_MALE,AGE,PC1-PC4", "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 0
    ours = read_gwas_ssf(tmp_path / "out" / "QT.linear.tsv.gz")
    assert_matches_plink(ours, read_plink_table(HM3 / "plink_reference_outputs/plink2/hm3_cov_omitref.QT.glm.linear"))
    formats = {s: (tmp_path / "out" / "sites" / s / "site.toml").read_text().split("[data]\n")[1].split(" =")[0]
               for s in ("africa", "europe", "eastasia", "southasia")}
    assert formats == {"africa": "bfile", "europe": "pfile", "eastasia": "vcf", "southasia": "bfile"}
