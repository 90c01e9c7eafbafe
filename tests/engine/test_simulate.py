"""Tests of the PLINK 1 writer (engine.io.bed_writer) and the seeded study simulator (engine.simulate).

Oracles: a naive per-genotype packer kept here, bed-reader as an independent reader, and PLINK 2
(``--freq``, ``--glm``) reading the files we write.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from bed_reader import open_bed
from scipy import stats

from engine.io.bed_writer import BED_MAGIC, BedWriter, pack_genotypes, write_bim, write_fam
from engine.errors import InputError
from engine.simulate import COVARIATE_NAMES, SimulatedStudy, SimulationSpec, simulate_study

PLINK2 = shutil.which("plink2")
needs_plink2 = pytest.mark.skipif(PLINK2 is None, reason="plink2 not installed")

_CODE = {2: 0b00, -127: 0b01, 1: 0b10, 0: 0b11}


def naive_pack(genotypes: np.ndarray) -> bytes:
    """Reference packer, one genotype at a time, straight from the PLINK 1 .bed specification."""
    n_samples, n_variants = genotypes.shape
    out = bytearray()
    for j in range(n_variants):
        row = bytearray((n_samples + 3) // 4)
        for i in range(n_samples):
            row[i // 4] |= _CODE[int(genotypes[i, j])] << (2 * (i % 4))
        out += row
    return bytes(out)


def random_genotypes(rng: np.random.Generator, n: int, m: int, missing: float = 0.1) -> np.ndarray:
    g = rng.integers(0, 3, (n, m)).astype(np.int8)
    g[rng.random((n, m)) < missing] = -127
    return g


def write_fileset(prefix: Path, genotypes: np.ndarray, block: int) -> None:
    n, m = genotypes.shape
    write_fam(prefix.with_suffix(".fam"), [f"F{i}" for i in range(n)], [f"I{i}" for i in range(n)], np.ones(n, int))
    write_bim(
        prefix.with_suffix(".bim"),
        np.ones(m, int),
        [f"v{j}" for j in range(m)],
        np.arange(1, m + 1) * 100,
        np.full(m, "A"),
        np.full(m, "G"),
    )
    with BedWriter(prefix.with_suffix(".bed"), n) as bed:
        for start in range(0, m, block):
            bed.write_block(genotypes[:, start : start + block])


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = path.read_text().splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def run_plink2(*args: str) -> None:
    assert PLINK2 is not None
    done = subprocess.run([PLINK2, "--threads", "1", "--memory", "1024", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def read_plink_table(path: Path) -> dict[str, np.ndarray]:
    header, rows = path.read_text().splitlines()[0].split(), [l.split() for l in path.read_text().splitlines()[1:]]
    return {name: np.array([row[k] for row in rows]) for k, name in enumerate(header)}


def allele1_freq(genotypes: np.ndarray) -> np.ndarray:
    g = np.where(genotypes == -127, np.nan, genotypes.astype(float))
    return np.nanmean(g, axis=0) / 2


# --------------------------------------------------------------------------- bed_writer


@pytest.mark.parametrize("n, m", [(1, 1), (3, 2), (4, 5), (5, 3), (13, 7), (16, 1)])
def test_pack_matches_naive_reference_in_both_layouts(n: int, m: int) -> None:
    g = random_genotypes(np.random.default_rng(n * 100 + m), n, m, missing=0.2)
    expected = naive_pack(g)
    assert pack_genotypes(g).tobytes() == expected
    assert pack_genotypes(np.asfortranarray(g)).tobytes() == expected
    assert pack_genotypes(np.ascontiguousarray(g.T).T).tobytes() == expected
    assert pack_genotypes(g[:, ::-1][:, ::-1]).tobytes() == expected


def test_padding_bits_are_zero_and_file_size_exact(tmp_path: Path) -> None:
    g = np.array([[0], [0], [0], [0], [0]], dtype=np.int8)  # 5 samples: second byte holds 1 sample
    assert pack_genotypes(g).tobytes() == bytes([0xFF, 0x03])
    g = random_genotypes(np.random.default_rng(0), 7, 10)
    with BedWriter(tmp_path / "x.bed", 7) as bed:
        bed.write_block(g[:, :4])
        bed.write_block(g[:, 4:])
        assert bed.n_variants == 10
    data = (tmp_path / "x.bed").read_bytes()
    assert data[:3] == BED_MAGIC == bytes([0x6C, 0x1B, 0x01])
    assert len(data) == 3 + 10 * 2
    assert data[3:] == naive_pack(g)


def test_round_trip_through_bed_reader(tmp_path: Path) -> None:
    g = random_genotypes(np.random.default_rng(1), 37, 250)
    write_fileset(tmp_path / "rt", g, block=64)
    with open_bed(tmp_path / "rt.bed") as bed:
        back = bed.read(dtype="int8")
        assert list(bed.iid[:2]) == ["I0", "I1"]
        assert list(bed.allele_1[:1]) == ["A"]
    np.testing.assert_array_equal(back, g)


@needs_plink2
def test_plink2_freq_matches_our_allele1_frequency(tmp_path: Path) -> None:
    g = random_genotypes(np.random.default_rng(2), 50, 120, missing=0.05)
    write_fileset(tmp_path / "fq", g, block=50)
    run_plink2("--bfile", str(tmp_path / "fq"), "--freq", "--out", str(tmp_path / "fq"))
    table = read_plink_table(tmp_path / "fq.afreq")
    assert set(table["ALT"]) == {"A"}  # .bed input: ALT is .bim column 5 (allele1)
    np.testing.assert_allclose(table["ALT_FREQS"].astype(float), allele1_freq(g), atol=1e-5)
    np.testing.assert_array_equal(table["OBS_CT"].astype(int), 2 * (g != -127).sum(axis=0))


def test_fam_and_bim_text(tmp_path: Path) -> None:
    write_fam(tmp_path / "a.fam", ["f1", "f2"], ["i1", "i2"], [1, 0])
    assert (tmp_path / "a.fam").read_text() == "f1\ti1\t0\t0\t1\t-9\nf2\ti2\t0\t0\t0\t-9\n"
    write_bim(tmp_path / "a.bim", ["1", "X"], ["rs1", "rs2"], np.array([10, 20]), ["A", "T"], ["G", "C"])
    assert (tmp_path / "a.bim").read_text() == "1\trs1\t0\t10\tA\tG\nX\trs2\t0\t20\tT\tC\n"


@pytest.mark.parametrize("bad", [3, -1, -128, 127])
def test_invalid_genotype_value_raises(tmp_path: Path, bad: int) -> None:
    g = np.zeros((6, 3), dtype=np.int8)
    g[4, 2] = bad
    with BedWriter(tmp_path / "x.bed", 6) as bed:
        with pytest.raises(InputError, match=rf"value {bad} at \(sample 4, variant 2\)"):
            bed.write_block(g)
        with pytest.raises(InputError, match=rf"value {bad}"):
            bed.write_block(np.asfortranarray(g))
    assert (tmp_path / "x.bed").read_bytes() == BED_MAGIC  # nothing written for a refused block


def test_bad_shape_dtype_and_arguments_raise(tmp_path: Path) -> None:
    with BedWriter(tmp_path / "x.bed", 4) as bed:
        with pytest.raises(InputError, match=r"shape \(4, m\)"):
            bed.write_block(np.zeros((5, 2), dtype=np.int8))
        with pytest.raises(InputError, match=r"shape \(4, m\)"):
            bed.write_block(np.zeros(4, dtype=np.int8))
        with pytest.raises(InputError, match="int8"):
            bed.write_block(np.zeros((4, 2), dtype=np.int16))
    with pytest.raises(ValueError, match="closed"):
        bed.write_block(np.zeros((4, 2), dtype=np.int8))
    with pytest.raises(InputError, match="n_samples"):
        BedWriter(tmp_path / "y.bed", 0)
    with pytest.raises(InputError, match="sex value 3"):
        write_fam(tmp_path / "a.fam", ["f"], ["i"], [3])
    with pytest.raises(InputError, match="iid value 'a b'"):
        write_fam(tmp_path / "a.fam", ["f"], ["a b"], [1])
    with pytest.raises(InputError, match="fid has 2 values"):
        write_fam(tmp_path / "a.fam", ["f", "g"], ["i"], [1])
    with pytest.raises(InputError, match="allele1 value ''"):
        write_bim(tmp_path / "a.bim", ["1"], ["rs1"], [5], [""], ["A"])
    with pytest.raises(InputError, match="pos value -5"):
        write_bim(tmp_path / "a.bim", ["1"], ["rs1"], [-5], ["C"], ["A"])


# --------------------------------------------------------------------------- simulate

SPEC = SimulationSpec(
    site_sizes=(200, 198, 203),  # not multiples of 4: exercises the .bed padding per site
    n_variants=500,
    n_causal=5,
    heritability=0.5,
    missing_rates=(0.01, 0.03, 0.06),
    seed=7,
    n_chromosomes=3,
    block_size=128,
)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> SimulatedStudy:
    return simulate_study(SPEC, tmp_path_factory.mktemp("sim"))


@pytest.fixture(scope="module")
def pooled(study: SimulatedStudy) -> np.ndarray:
    assert study.pooled_bfile is not None
    with open_bed(study.pooled_bfile.with_suffix(".bed")) as bed:
        return np.asarray(bed.read(dtype="int8"))


def study_files(study: SimulatedStudy) -> list[Path]:
    return sorted(p for p in study.out_dir.iterdir() if p.is_file())


def test_layout_and_ids(study: SimulatedStudy) -> None:
    names = [p.name for p in study_files(study)]
    expected = {f"{p}.{ext}" for p in ("site1", "site2", "site3", "pooled") for ext in ("bed", "bim", "fam")}
    assert set(names) == expected | {"pheno.txt", "covar.txt", "causal.txt"}
    assert study.site_bfiles == tuple(study.out_dir / f"site{k}" for k in (1, 2, 3))
    assert study.covariate_names == COVARIATE_NAMES == ("SEX_MALE", "AGE", "BMI", "SMOKER", "ANC1")
    fam = [line.split("\t") for line in study.site_bfiles[1].with_suffix(".fam").read_text().splitlines()]
    assert len(fam) == 198
    assert fam[0][:2] == ["site2", "s2_000001"] and fam[-1][:2] == ["site2", "s2_000198"]
    bims = {p.with_suffix(".bim").read_bytes() for p in (*study.site_bfiles, study.pooled_bfile) if p}
    assert len(bims) == 1


def test_variants_are_well_formed(study: SimulatedStudy) -> None:
    with open_bed(study.site_bfiles[0].with_suffix(".bed")) as bed:
        chrom, pos, sid = bed.chromosome.astype(int), bed.bp_position, bed.sid
        a1, a2 = bed.allele_1, bed.allele_2
    assert len(set(sid)) == len(sid) == SPEC.n_variants and all(s.startswith("rs") for s in sid)
    assert set(chrom) == {1, 2, 3} and np.all(np.diff(chrom) >= 0)
    for c in (1, 2, 3):
        assert np.all(np.diff(pos[chrom == c]) > 0)
    assert np.all(a1 != a2) and set(a1) | set(a2) <= set("ACGT")


def test_sites_concatenate_to_pooled(study: SimulatedStudy, pooled: np.ndarray) -> None:
    parts = []
    for prefix in study.site_bfiles:
        with open_bed(prefix.with_suffix(".bed")) as bed:
            parts.append(bed.read(dtype="int8"))
    np.testing.assert_array_equal(np.concatenate(parts), pooled)
    assert pooled.shape == (SPEC.n_samples, SPEC.n_variants)
    assert set(np.unique(pooled)) <= {-127, 0, 1, 2}


def test_missing_rate_per_site(pooled: np.ndarray) -> None:
    bounds = np.cumsum((0,) + SPEC.site_sizes).tolist()
    for k, rate in enumerate(SPEC.site_missing_rates):
        observed = np.mean(pooled[bounds[k] : bounds[k + 1]] == -127)
        sd = np.sqrt(rate * (1 - rate) / (SPEC.site_sizes[k] * SPEC.n_variants))
        assert abs(observed - rate) < 5 * sd, (k, observed, rate)
    assert SimulationSpec(site_sizes=(1,) * 4, n_variants=20).site_missing_rates == (0.005, 0.01, 0.02, 0.005)


def test_population_structure_differs_between_sites(pooled: np.ndarray) -> None:
    bounds = np.cumsum((0,) + SPEC.site_sizes)
    freq = [allele1_freq(pooled[bounds[k] : bounds[k + 1]]) for k in range(3)]
    diff = np.mean(np.abs(freq[0] - freq[2]))
    within = np.mean(np.abs(allele1_freq(pooled[0:100]) - allele1_freq(pooled[100:200])))
    assert diff > 1.5 * within  # sites 1 and 3 are mostly different populations


def test_pheno_and_covar_files(study: SimulatedStudy) -> None:
    header, rows = read_table(study.pheno_path)
    assert header == ["#FID", "IID", "QT", "BT"]
    assert len(rows) == SPEC.n_samples and rows[0][:2] == ["site1", "s1_000001"]
    qt = np.array([np.nan if r[2] == "NA" else float(r[2]) for r in rows])
    bt = np.array([r[3] for r in rows])
    assert set(bt) <= {"1", "2", "NA"}
    assert 0 < np.isnan(qt).sum() < 20 and 0 < (bt == "NA").sum() < 20
    case_share = np.mean(bt[bt != "NA"] == "2")
    assert abs(case_share - SPEC.case_fraction) < 0.02

    header, rows = read_table(study.covar_path)
    assert header == ["#FID", "IID", *COVARIATE_NAMES]
    cov = {name: np.array([r[k + 2] for r in rows]) for k, name in enumerate(COVARIATE_NAMES)}
    assert set(cov["SEX_MALE"]) == {"0", "1"} and set(cov["SMOKER"]) == {"0", "1"}
    age = cov["AGE"][cov["AGE"] != "NA"].astype(float)
    assert 0 < (cov["AGE"] == "NA").sum() < 20 and age.min() >= 20 and age.max() <= 70
    assert all(len(a.split(".")[1]) == 1 for a in cov["AGE"][cov["AGE"] != "NA"])
    assert "NA" not in set(cov["BMI"]) | set(cov["ANC1"])
    assert 24 < cov["BMI"].astype(float).mean() < 30
    anc = cov["ANC1"].astype(float)
    assert anc[:200].mean() < anc[-203:].mean() - 0.5  # site 1 mostly population 0, site 3 population 2
    fam_sex = [line.split("\t")[4] for line in study.pooled_bfile.with_suffix(".fam").read_text().splitlines()]  # type: ignore[union-attr]
    np.testing.assert_array_equal(np.array(fam_sex) == "1", cov["SEX_MALE"] == "1")


def test_causal_effects_give_the_requested_heritability(study: SimulatedStudy, pooled: np.ndarray) -> None:
    header, rows = read_table(study.causal_path)
    assert header == ["ID", "EFFECT"] and len(rows) == SPEC.n_causal
    with open_bed(study.pooled_bfile.with_suffix(".bed")) as bed:  # type: ignore[union-attr]
        position = {variant: j for j, variant in enumerate(bed.sid)}
    index = np.array([position[r[0]] for r in rows])
    dosage = pooled[:, index].astype(float)
    dosage[pooled[:, index] == -127] = np.nan
    dosage = np.where(np.isnan(dosage), np.nanmean(dosage, axis=0), dosage)
    genetic = dosage @ np.array([float(r[1]) for r in rows])
    assert genetic.var() == pytest.approx(SPEC.heritability, rel=1e-6)


def plink2_glm(study: SimulatedStudy, out: Path, pheno: Path, name: str, *covariates: str) -> dict[str, np.ndarray]:
    """PLINK 2 linear scan of phenotype ``name`` in ``pheno`` on the pooled fileset."""
    assert study.pooled_bfile is not None
    covar = ["--covar", str(study.covar_path), "--covar-name", *covariates, "--covar-variance-standardize"]
    run_plink2(
        "--bfile", str(study.pooled_bfile), "--pheno", str(pheno), "--pheno-name", name,
        *(covar + ["--glm", "omit-ref", "hide-covar"] if covariates else ["--glm", "omit-ref", "allow-no-covars"]),
        "--out", str(out),
    )  # fmt: skip
    return read_plink_table(Path(f"{out}.{name}.glm.linear"))


def plink2_glm_qt(study: SimulatedStudy, out: Path, *covariates: str) -> dict[str, np.ndarray]:
    return plink2_glm(study, out, study.pheno_path, "QT", *covariates)


def genomic_inflation(p: np.ndarray) -> float:
    """lambda_GC = median chi-square(1 df) of the P-values / its null median (NA P-values skipped)."""
    chi2 = stats.chi2.isf(p[np.isfinite(p)], 1)
    return float(np.median(chi2) / stats.chi2.ppf(0.5, 1))


@needs_plink2
def test_plink2_finds_the_causal_variants(study: SimulatedStudy, tmp_path: Path) -> None:
    table = plink2_glm_qt(study, tmp_path / "adjusted", "ANC1")
    _, rows = read_table(study.causal_path)
    causal = {variant for variant, _ in rows}
    p = dict(zip(table["ID"], table["P"].astype(float)))
    beta = dict(zip(table["ID"], table["BETA"].astype(float)))
    np.testing.assert_array_equal(table["A1"], table["ALT"])  # omit-ref: A1 = ALT = .bim column 5 = allele1
    assert table["OBS_CT"].astype(int).max() < SPEC.n_samples  # NA phenotypes and missing calls dropped
    found = [variant for variant in causal if p[variant] < 1e-4]
    assert len(found) >= SPEC.n_causal - 1, {variant: p[variant] for variant in causal}  # raw effects ~ N(0, 1)
    for variant, effect in rows:
        if variant in found:
            assert np.sign(beta[variant]) == np.sign(float(effect))
    null = np.array([v for k, v in p.items() if k not in causal])
    assert np.mean(null < 0.01) < 0.03  # ANC1 carries the population shifts: adjusted scan is calibrated

    unadjusted = plink2_glm_qt(study, tmp_path / "unadjusted")
    null_unadjusted = unadjusted["P"].astype(float)[~np.isin(unadjusted["ID"], list(causal))]
    assert np.mean(null_unadjusted < 0.01) > 2 * max(float(np.mean(null < 0.01)), 0.01)  # stratification


# A moderate study per seed. lambda_GC is a median over independent null variants, so its standard
# error is ~2.3 / sqrt(n_variants): 0.03 here, and [0.9, 1.1] is a band of over 3 standard errors.
CALIBRATION_SPEC = SimulationSpec(site_sizes=(800, 800, 800), n_variants=6000, n_chromosomes=3)
ALL_COVARIATES = list(COVARIATE_NAMES)


@pytest.fixture(scope="module", params=[7, 2026], ids=lambda seed: f"seed{seed}")
def calibration_study(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SimulatedStudy:
    return simulate_study(replace(CALIBRATION_SPEC, seed=request.param), tmp_path_factory.mktemp("calibration"))


def p_values(table: dict[str, np.ndarray]) -> np.ndarray:
    return np.array([np.nan if value == "NA" else float(value) for value in table["P"]])


def null_p_values(study: SimulatedStudy, table: dict[str, np.ndarray]) -> np.ndarray:
    """P-values of the non-causal variants."""
    _, rows = read_table(study.causal_path)
    return p_values(table)[~np.isin(table["ID"], [variant for variant, _ in rows])]


@needs_plink2
def test_covariate_adjusted_qt_scan_is_calibrated_and_unadjusted_is_stratified(
    calibration_study: SimulatedStudy, tmp_path: Path
) -> None:
    study = calibration_study
    adjusted = genomic_inflation(null_p_values(study, plink2_glm_qt(study, tmp_path / "adj", *ALL_COVARIATES)))
    unadjusted = genomic_inflation(null_p_values(study, plink2_glm_qt(study, tmp_path / "raw")))
    assert 0.9 <= adjusted <= 1.1, adjusted
    assert unadjusted > 1.4, unadjusted  # ancestry moves allele frequencies and the QT mean


@needs_plink2
def test_covariates_carry_all_of_the_sites_genetic_differences(
    calibration_study: SimulatedStudy, tmp_path: Path
) -> None:
    """A site indicator as phenotype: adjusted for the covariates, no variant may tell the sites apart.

    Sites differ in ancestry, and ANC1 must carry all of it. This fails for every seed when the
    genotypes keep population structure that the covariates cannot span (the earlier model of
    discrete populations with a noisy ANC1 gave lambda_GC 24-33 here), which is what made the QT scan
    of a single study miscalibrated whenever the noise happened to differ between populations.
    """
    study = calibration_study
    _, rows = read_table(study.pheno_path)
    site = tmp_path / "site.txt"  # 20 for site 1, 10 elsewhere (not 1/2: PLINK would read a case/control)
    site.write_text("#FID\tIID\tSITE1\n" + "".join(f"{r[0]}\t{r[1]}\t{20 if r[0] == 'site1' else 10}\n" for r in rows))
    adjusted = genomic_inflation(p_values(plink2_glm(study, tmp_path / "adj", site, "SITE1", *ALL_COVARIATES)))
    unadjusted = genomic_inflation(p_values(plink2_glm(study, tmp_path / "raw", site, "SITE1")))
    assert 0.9 <= adjusted <= 1.1, adjusted
    assert unadjusted > 5, unadjusted


@needs_plink2
def test_plink2_reads_every_site(study: SimulatedStudy, pooled: np.ndarray, tmp_path: Path) -> None:
    bounds = np.cumsum((0,) + SPEC.site_sizes)
    for k, prefix in enumerate(study.site_bfiles):
        run_plink2("--bfile", str(prefix), "--freq", "--out", str(tmp_path / prefix.name))
        table = read_plink_table(tmp_path / f"{prefix.name}.afreq")
        expected = allele1_freq(pooled[bounds[k] : bounds[k + 1]])
        np.testing.assert_allclose(table["ALT_FREQS"].astype(float), expected, atol=1e-5)


def test_same_seed_gives_identical_files_and_other_seed_differs(study: SimulatedStudy, tmp_path: Path) -> None:
    again = simulate_study(SPEC, tmp_path / "again")
    for first, second in zip(study_files(study), study_files(again), strict=True):
        assert first.name == second.name and first.read_bytes() == second.read_bytes(), first.name
    other = simulate_study(replace(SPEC, seed=8), tmp_path / "other")
    for name in ("pooled.bed", "pheno.txt", "covar.txt", "causal.txt", "pooled.bim"):
        assert (study.out_dir / name).read_bytes() != (other.out_dir / name).read_bytes(), name


def test_without_pooled_and_single_population(tmp_path: Path) -> None:
    spec = SimulationSpec(site_sizes=[5, 3], n_variants=9, n_populations=1, n_causal=2, write_pooled=False)  # type: ignore[arg-type]
    assert spec.site_sizes == (5, 3)
    result = simulate_study(spec, tmp_path)
    assert result.pooled_bfile is None and not (tmp_path / "pooled.bed").exists()
    with open_bed(tmp_path / "site2.bed") as bed:
        assert bed.read(dtype="int8").shape == (3, 9)


@pytest.mark.parametrize(
    "field, value",
    [
        ("site_sizes", ()),
        ("site_sizes", (10, 0)),
        ("site_sizes", (10, 2.5)),
        ("n_variants", 0),
        ("n_variants", True),
        ("n_populations", 0),
        ("fst", 0.0),
        ("fst", 1.0),
        ("fst", float("nan")),
        ("n_causal", -1),
        ("n_causal", 1001),
        ("heritability", 1.0),
        ("heritability", -0.1),
        ("missing_rates", (0.1,)),
        ("missing_rates", (0.1, 1.0)),
        ("seed", -1),
        ("n_chromosomes", 23),
        ("block_size", 0),
        ("write_pooled", 1),
        ("case_fraction", 0.0),
    ],
)
def test_bad_spec_raises_input_error_naming_the_field(field: str, value: object) -> None:
    base = dict(site_sizes=(10, 10), n_variants=1000)
    with pytest.raises(InputError, match=rf"SimulationSpec\.{field}"):
        SimulationSpec(**{**base, field: value})  # type: ignore[arg-type]


def test_heritability_needs_causal_variants() -> None:
    with pytest.raises(InputError, match=r"SimulationSpec\.heritability must be 0 when n_causal is 0"):
        SimulationSpec(site_sizes=(10,), n_variants=5, n_causal=0)
    SimulationSpec(site_sizes=(10,), n_variants=5, n_causal=0, heritability=0.0)
