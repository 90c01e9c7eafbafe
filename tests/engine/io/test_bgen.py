"""The BGEN reader and the dosage imports against PLINK 2's own imports, and malformed files.

Every well-formed file is also imported by ``plink2`` (``--bgen FILE ref-first`` / ``--vcf FILE
dosage=DS``): the dosages (on PLINK 2's 1/16384 grid) and hard calls must be identical. Malformed
BGENs must give an InputError naming the file and what was expected, never a crash: the C reader
``cbgen`` segfaults on a truncated file, which would take a site agent down with it.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from fedgwas.cli import main as fedgwas_main
from engine.errors import InputError
from engine.io.genotype_sources import PgenFile, open_genotypes
from engine.io.bgen import bgen_samples, read_header, scan_variants
from fedgwas.site_command import main as site_main
from site_agent.provision import init_site
from tests.bgen_writer import write_bgen, write_bgen_v11, write_sample_file
from tests.plink_tools import run_plink2

N, M = 60, 25


def _bgen(path: Path, bits: int = 16, embed: bool = True, seed: int = 1, layout: int = 2) -> list[str]:
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet([0.6, 0.6, 0.6], size=(M, N))[:, :, :2]
    probabilities[0] = [1.0, 0.0]  # monomorphic
    missing = rng.random((M, N)) < 0.05
    ids = [f"s{i}" for i in range(N)]
    write_bgen(path, ids, [("1", 100 + j, f"rs{j}", "A", "G") for j in range(M)], probabilities, bits=bits,
               embed_samples=embed, missing=missing, layout=layout)
    return ids


@pytest.mark.parametrize("bits", [8, 16, 11])
def test_dosages_and_hard_calls_equal_plink2_import(tmp_path: Path, bits: int) -> None:
    ids = _bgen(tmp_path / "x.bgen", bits=bits, embed=False)
    write_sample_file(tmp_path / "x.sample", ids, ids)
    run_plink2(["--bgen", "x.bgen", "ref-first", "--sample", "x.sample", "--make-pgen", "--out", "ref"], cwd=tmp_path)
    ours = open_genotypes("bgen", tmp_path / "x.bgen", tmp_path / "cache", sample=tmp_path / "x.sample")
    ref = PgenFile(tmp_path / "ref")
    every = np.arange(M)
    assert list(ours.manifest.allele1) == list(ref.manifest.allele1) == ["G"] * M  # the second allele is ALT
    assert list(ours.fam.iid) == ids
    np.testing.assert_array_equal(ours.read_dosages(every), ref.read_dosages(every))  # NaN where missing
    np.testing.assert_array_equal(ours.read_block(every), ref.read_block(every))


def test_embedded_sample_ids_and_the_cache(tmp_path: Path) -> None:
    ids = _bgen(tmp_path / "x.bgen")
    assert list(bgen_samples(tmp_path / "x.bgen").iid) == ids
    first = open_genotypes("bgen", tmp_path / "x.bgen", tmp_path / "cache")
    pgen = next((tmp_path / "cache").glob("*.pgen"))
    stamp = pgen.stat().st_mtime_ns
    again = open_genotypes("bgen", tmp_path / "x.bgen", tmp_path / "cache")  # reused, not re-imported
    assert pgen.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(first.read_dosages(np.arange(M)), again.read_dosages(np.arange(M)))


def test_bgen_13_with_zstd_from_plink2(tmp_path: Path) -> None:
    ids = _bgen(tmp_path / "x.bgen")
    run_plink2(["--bgen", "x.bgen", "ref-first", "--make-pgen", "--out", "a"], cwd=tmp_path)
    run_plink2(["--pfile", "a", "--export", "bgen-1.3", "ref-first", "--out", "z"], cwd=tmp_path)
    assert read_header(tmp_path / "z.bgen").compression == 2
    run_plink2(["--bgen", "z.bgen", "ref-first", "--sample", "z.sample", "--make-pgen", "--out", "ref"], cwd=tmp_path)
    ours = open_genotypes("bgen", tmp_path / "z.bgen", tmp_path / "cache", sample=tmp_path / "z.sample")
    np.testing.assert_array_equal(ours.read_dosages(np.arange(M)), PgenFile(tmp_path / "ref").read_dosages(np.arange(M)))
    assert len(ids) == ours.n_samples


@pytest.mark.parametrize("compressed", [True, False])
def test_bgen_11_equals_plink2_import(tmp_path: Path, compressed: bool) -> None:
    """BGEN v1.1 (layout 1): three 16-bit probabilities per sample, normalised by their sum (which need not
    be 32768), rounded to 1/16384 with ties to even, all zero = missing; dosages and hard calls as
    ``plink2 --bgen FILE ref-first`` imports them."""
    rng = np.random.default_rng(9)
    probabilities = rng.dirichlet([1, 1, 1], size=(M, N)) * 32768 * rng.choice([1.0, 0.999, 1.001, 0.5, 1.9], (M, N, 1))
    probabilities = np.minimum(np.rint(probabilities), 65535).astype(np.uint16)
    probabilities[rng.random((M, N)) < 0.05] = 0
    probabilities[1, :6] = [[32765, 3, 0], [32763, 5, 0], [0, 3, 32765], [16000, 100, 16000], [1, 0, 0], [0, 0, 1]]  # ties
    ids = [f"s{i}" for i in range(N)]
    write_bgen_v11(tmp_path / "v11.bgen", [("1", 100 + j, f"rs{j}", "A", "G") for j in range(M)], probabilities,
                   compressed=compressed)
    write_sample_file(tmp_path / "v11.sample", ids, ids)
    assert read_header(tmp_path / "v11.bgen").layout == 1
    run_plink2(["--bgen", "v11.bgen", "ref-first", "--sample", "v11.sample", "--make-pgen", "--out", "ref"], cwd=tmp_path)
    ours = open_genotypes("bgen", tmp_path / "v11.bgen", tmp_path / "cache", sample=tmp_path / "v11.sample")
    ref = PgenFile(tmp_path / "ref")
    every = np.arange(M)
    assert list(ours.manifest.allele1) == list(ref.manifest.allele1) == ["G"] * M
    np.testing.assert_array_equal(ours.read_dosages(every), ref.read_dosages(every))
    np.testing.assert_array_equal(ours.read_block(every), ref.read_block(every))
    assert np.isnan(ours.read_dosages(every)).any()
    with pytest.raises(InputError, match=r"embeds no sample IDs: give its \.sample file"):
        bgen_samples(tmp_path / "v11.bgen")
    cut = tmp_path / "cut11.bgen"
    cut.write_bytes((tmp_path / "v11.bgen").read_bytes()[:-7])
    with pytest.raises(InputError, match=r"cut11\.bgen.* is truncated"):
        list(scan_variants(read_header(cut)))


def test_truncated_file_names_the_file_and_the_variant(tmp_path: Path) -> None:
    _bgen(tmp_path / "x.bgen")
    data = (tmp_path / "x.bgen").read_bytes()
    (tmp_path / "cut.bgen").write_bytes(data[: len(data) - 100])
    with pytest.raises(InputError, match=r"cut\.bgen.* is truncated: variant 25 of 25 needs \d+ bytes"):
        list(scan_variants(read_header(tmp_path / "cut.bgen")))
    (tmp_path / "head.bgen").write_bytes(data[:10])
    with pytest.raises(InputError, match=r"head\.bgen.* is truncated: the header block needs 16 bytes"):
        read_header(tmp_path / "head.bgen")


def test_wrong_sample_count_and_unsupported_layout(tmp_path: Path) -> None:
    ids = _bgen(tmp_path / "x.bgen", embed=False)
    write_sample_file(tmp_path / "x.sample", ids + ["extra"], ids + ["extra"])
    with pytest.raises(InputError, match=r"x\.sample.* lists 61 samples but BGEN .*x\.bgen.* has 60"):
        bgen_samples(tmp_path / "x.bgen", tmp_path / "x.sample")
    _bgen(tmp_path / "l3.bgen", layout=3)
    with pytest.raises(InputError, match=r"l3\.bgen.* is layout 3: only BGEN v1\.1 \(layout 1\) and v1\.2/v1\.3"):
        read_header(tmp_path / "l3.bgen")
    (tmp_path / "junk.bgen").write_bytes(struct.pack("<IIIII", 20, 20, 1, 1, 12345) + bytes(40))
    with pytest.raises(InputError, match=r"junk\.bgen.*not 'bgen'"):
        read_header(tmp_path / "junk.bgen")
    with pytest.raises(InputError, match=r"embeds no sample IDs: give its \.sample file"):
        bgen_samples(tmp_path / "x.bgen")


def test_corrupt_compressed_block(tmp_path: Path) -> None:
    _bgen(tmp_path / "x.bgen")
    header = read_header(tmp_path / "x.bgen")
    info = list(scan_variants(header))[3]
    data = bytearray((tmp_path / "x.bgen").read_bytes())
    data[info.data_offset + 10: info.data_offset + 20] = bytes(10)
    (tmp_path / "bad.bgen").write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"bad\.bgen.* variant 4 \(.*\): cannot decompress"):
        open_genotypes("bgen", tmp_path / "bad.bgen", tmp_path / "cache")


def test_malformed_bgen_is_a_clear_error_for_the_site_and_the_analyst(tmp_path: Path, capsys) -> None:
    ids = _bgen(tmp_path / "x.bgen")
    data = (tmp_path / "x.bgen").read_bytes()
    (tmp_path / "cut.bgen").write_bytes(data[: len(data) - 100])
    (tmp_path / "pheno.txt").write_text("#IID\tQT\n" + "".join(f"{i}\t1.5\n" for i in ids))
    config = init_site("a", str(tmp_path / "cut.bgen"), str(tmp_path / "pheno.txt"), None, tmp_path / "site",
                       "127.0.0.1:0", genotype_format="bgen")
    capsys.readouterr()
    assert site_main(["check", "--config", str(config)]) == 2
    assert "cut.bgen" in capsys.readouterr().err
    code = fedgwas_main(["local", "--bgen", str(tmp_path / "cut.bgen"), "--bgen", str(tmp_path / "x.bgen"),
                         "--pheno", str(tmp_path / "pheno.txt"), "--pheno-name", "QT", "--out", str(tmp_path / "out"),
                         "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "cut.bgen" in err and "truncated" in err
    assert not (tmp_path / "out" / "sites").exists()  # refused before any site agent was started


def test_dosage_only_vcf_without_vcf_dosage_is_a_clear_error(tmp_path: Path) -> None:
    ids = _bgen(tmp_path / "x.bgen")
    run_plink2(["--bgen", "x.bgen", "ref-first", "--make-pgen", "--out", "a"], cwd=tmp_path)
    run_plink2(["--pfile", "a", "--export", "vcf", "vcf-dosage=DS-force", "--out", "ds"], cwd=tmp_path)
    text = (tmp_path / "ds.vcf").read_text().splitlines()
    body = []
    for line in text:  # keep only FORMAT DS: a dosage-only VCF
        if line.startswith("#"):
            body.append(line)
            continue
        fields = line.split("\t")
        keys = fields[8].split(":")
        at = keys.index("DS")
        body.append("\t".join(fields[:8] + ["DS"] + [v.split(":")[at] if ":" in v else "." for v in fields[9:]]))
    (tmp_path / "only.vcf").write_text("\n".join(body) + "\n")
    with pytest.raises(InputError, match=r"only\.vcf.* has no GT field: for a dosage-only VCF give the dosage field"):
        open_genotypes("vcf", tmp_path / "only.vcf", tmp_path / "cache")
    ours = open_genotypes("vcf", tmp_path / "only.vcf", tmp_path / "cache", vcf_dosage="DS")
    run_plink2(["--vcf", "only.vcf", "dosage=DS", "--make-pgen", "--out", "ref"], cwd=tmp_path)
    ref = PgenFile(tmp_path / "ref")
    np.testing.assert_array_equal(ours.read_dosages(np.arange(ours.n_variants)),
                                  ref.read_dosages(np.arange(ref.n_variants)))
    assert len(ids) == ours.n_samples


def test_site_init_with_a_bgen_and_its_sample_file(tmp_path: Path, capsys) -> None:
    ids = _bgen(tmp_path / "x.bgen", embed=False)
    write_sample_file(tmp_path / "x.sample", ids, ids)
    (tmp_path / "pheno.txt").write_text("#IID\tQT\n" + "".join(f"{i}\t1.5\n" for i in ids))
    assert site_main(["init", "--name", "a", "--bgen", str(tmp_path / "x.bgen"), "--sample", str(tmp_path / "x.sample"),
                      "--pheno", str(tmp_path / "pheno.txt"), "--dir", str(tmp_path / "site"), "--insecure"]) == 0
    text = (tmp_path / "site" / "site.toml").read_text()
    assert "bgen = " in text and "sample = " in text
    capsys.readouterr()
    assert site_main(["check", "--config", str(tmp_path / "site" / "site.toml")]) == 0
    assert f"{N} samples x {M} variants" in capsys.readouterr().out
