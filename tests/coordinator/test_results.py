"""Result writers: GWAS-SSF TSV and metadata, plots, lambda_GC, HTML report."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import gzip
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from coordinator.results import (
    ResultPaths,
    genomic_inflation,
    manhattan_plot,
    qq_plot,
    read_gwas_ssf,
    write_gwas_ssf,
    write_gwas_ssf_meta,
    write_report,
    write_results,
)
from coordinator.results.gwas_ssf import COLUMNS, gwas_ssf_chromosome, p_value_strings
from coordinator.results.gwas_ssf import testable as has_every_value
from coordinator.results.plots import _genome_axis
from coordinator.results.report import redact_endpoints, result_paths
from coordinator.summary import RunSummary, SiteSummary
from engine.stats.association import AssociationResult, VariantTable
from engine.errors import InputError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOSTILE_PHENOTYPE = '<script>alert("x")</script> $\\frac{ "q": # bmi\nnext'
HEADER = ["chromosome", "base_pair_location", "effect_allele", "other_allele", "beta", "standard_error",
          "effect_allele_frequency", "p_value", "variant_id", "n", "test_statistic", "errcode"]


def small_result(test: str = "linear") -> AssociationResult:
    """Seven variants in a deliberately unsorted (harmonised) order, with the awkward cases."""
    nan = math.nan
    variants = VariantTable(
        chrom=np.array(["chr1", "chrX", "2", "X", "MT", "22", "chrY"], dtype=object),
        pos=np.array([500, 2000, 30, 40, 5, 600, 70], dtype=np.int64),
        variant_id=np.array(["rs1", "rs2", "rs3", "rs4", "rs5", ".", "rs7"], dtype=object),
        effect_allele=np.array(["A", "C", "G", "T", "A", "AT", "G"], dtype=object),
        other_allele=np.array(["G", "T", "A", "C", "G", "A", "C"], dtype=object),
    )
    return AssociationResult(
        test=test,
        variants=variants,
        beta=np.array([0.123456789, -1.5, nan, 0.0, 2e-7, 0.25, 1.0]),
        se=np.array([0.00123456789, 0.1, nan, 0.5, 1e-7, 0.05, 0.01]),
        stat=np.array([100.000004, -15.0, nan, 0.0, 2.0, 5.0, 100.0]),
        neg_log10_p=np.array([400.0, 400.3, nan, 0.0, -math.log10(0.05), 7.5, math.inf]),
        n=np.array([100, 100, 0, 100, 100, 98, 100], dtype=np.int64),
        effect_allele_count=np.array([50.0, 20.0, 0.0, 199.0, 1.0, 49.0, 100.0]),
        errcode=np.array([".", ".", "CONST_OMITTED_ALLELE", ".", ".", ".", "."], dtype=object),
    )


def run_summary(privacy: str = "secagg", phenotype: str = "bmi", test: str = "linear") -> RunSummary:
    return RunSummary(
        study_id="study-1",
        test=test,
        phenotype=phenotype,
        covariates=("age", "sex", "PC1"),
        privacy=privacy,
        sites=(
            SiteSummary("site-a", n_samples=60, n_variants=10, contributed=True),
            SiteSummary("site-b", n_samples=40, n_variants=9, contributed=True),
            SiteSummary("site-c", n_samples=25, n_variants=9, contributed=False,
                        failure="UNAVAILABLE: failed to connect to all addresses; last error: "
                                "ipv4:10.1.2.3:50051 (hospital-c.example.org:443)"),
        ),
        n_variants_tested=7,
        variants_dropped={"not in all sites": 3, "monomorphic": 1},
        rounds=2,
        wall_seconds=12.34,
        software_version="0.1.0-test",
    )


def tsv_lines(path: Path) -> list[list[str]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [line.rstrip("\n").split("\t") for line in fh]


def yaml_top_level(text: str) -> dict[str, str]:
    """Top-level ``key: value`` scalars of the simple YAML we write (JSON-quoted strings decoded)."""
    out = {}
    for line in text.splitlines():
        if not line or line[0] in " #-" or ":" not in line:
            continue
        key, _, value = line.partition(":")
        value = value.strip()
        out[key] = json.loads(value) if value.startswith('"') else value
    return out


# --- GWAS-SSF data file ---------------------------------------------------------------------------


def test_header_is_gwas_ssf_order_then_extras(tmp_path: Path) -> None:
    path = write_gwas_ssf(small_result(), tmp_path / "s.linear.tsv.gz")
    lines = tsv_lines(path)
    assert lines[0] == HEADER
    assert tuple(HEADER) == COLUMNS
    assert all(len(row) == len(HEADER) for row in lines)
    assert len(lines) == 1 + 6  # the untestable variant is in the companion file


def test_rows_keep_given_order_and_chromosome_codes(tmp_path: Path) -> None:
    rows = tsv_lines(write_gwas_ssf(small_result(), tmp_path / "s.tsv.gz"))[1:]
    assert [r[0] for r in rows] == ["1", "23", "23", "25", "22", "24"]
    assert [r[1] for r in rows] == ["500", "2000", "40", "5", "600", "70"]


def test_untestable_variants_go_to_the_companion_file(tmp_path: Path) -> None:
    """GWAS-SSF's mandatory columns may not be missing: untestable rows are listed PLINK-style apart."""
    data = write_gwas_ssf(small_result(), tmp_path / "s.linear.tsv.gz")
    rows = tsv_lines(data)[1:]
    for row in rows:
        fields = dict(zip(HEADER, row))
        assert all(fields[c] != "#NA" for c in ("beta", "standard_error", "effect_allele_frequency", "p_value"))
    assert dict(zip(HEADER, rows[4]))["variant_id"] == "#NA"  # PLINK's "." means no identifier
    assert "nan" not in "".join("".join(r) for r in rows).lower()
    companion = (tmp_path / "s.linear.untested.tsv").read_text().splitlines()
    assert companion == ["#CHROM\tPOS\tID\tREF\tALT\tA1\tOBS_CT\tERRCODE\tROW",
                         "2\t30\trs3\tA\tG\tG\t0\tCONST_OMITTED_ALLELE\t3"]


def test_number_formats(tmp_path: Path) -> None:
    rows = [dict(zip(HEADER, r)) for r in tsv_lines(write_gwas_ssf(small_result(), tmp_path / "s.tsv.gz"))[1:]]
    assert rows[0]["beta"] == "0.123457"
    assert rows[0]["standard_error"] == "0.00123457"
    assert rows[0]["test_statistic"] == "100"
    assert rows[0]["effect_allele_frequency"] == "0.25"
    assert rows[2]["effect_allele_frequency"] == "0.995"
    assert rows[3]["beta"] == "2e-07"


def test_extreme_p_values_written_from_the_log(tmp_path: Path) -> None:
    rows = [dict(zip(HEADER, r)) for r in tsv_lines(write_gwas_ssf(small_result(), tmp_path / "s.tsv.gz"))[1:]]
    assert [r["p_value"] for r in rows] == ["1e-400", "5.01187e-401", "1", "0.05", "3.16228e-08", "0"]


@pytest.mark.parametrize(("neg_log10_p", "text"), [
    (400.3, "5.01187e-401"),
    (400.0, "1e-400"),
    (0.0, "1"),
    (-1e-13, "1"),  # p a hair above 1 from round-off
    (math.nan, "#NA"),
    (math.inf, "0"),
    (300.0, "1e-300"),
    (320.5, "3.16228e-321"),
    (1e6, "1e-1000000"),
    (401 - math.log10(9.9999999), "1e-400"),  # mantissa rounds up into the next decade
    (5.0, "1e-05"),
])
def test_p_value_strings(neg_log10_p: float, text: str) -> None:
    assert p_value_strings(np.array([neg_log10_p])) == [text]


def test_p_value_strings_match_decimal_oracle() -> None:
    """Exact decimal 10**-x, rounded to 6 significant digits, for x across and beyond float range."""
    x = np.concatenate((np.random.default_rng(7).uniform(0, 2000, 3000), [299.999999, 300.0, 307.9, 308.3]))
    exact_ctx = decimal.Context(prec=60)
    six_digits = decimal.Context(prec=6, rounding=decimal.ROUND_HALF_EVEN)
    expected = []
    for value in x.tolist():
        rounded = six_digits.plus(exact_ctx.power(decimal.Decimal(10), -decimal.Decimal(value)))
        exponent = rounded.adjusted()
        if exponent >= -4:  # %g's fixed-point range
            expected.append(format(float(rounded), ".6g"))
        else:
            digits = "".join(map(str, rounded.as_tuple().digits)).rstrip("0")
            mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
            expected.append(f"{mantissa}e-{-exponent:02d}")
    got = p_value_strings(x)
    mismatches = [(v, g, e) for v, g, e in zip(x.tolist(), got, expected) if g != e]
    assert not mismatches[:5]


def test_round_trip(tmp_path: Path) -> None:
    result = small_result()
    table = read_gwas_ssf(write_gwas_ssf(result, tmp_path / "s.tsv.gz"))
    assert list(table)[: len(HEADER)] == HEADER
    np.testing.assert_array_equal(table["base_pair_location"], result.variants.pos)
    np.testing.assert_array_equal(table["n"], result.n)
    np.testing.assert_allclose(table["beta"], result.beta, rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(table["standard_error"], result.se, rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(table["test_statistic"], result.stat, rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(table["effect_allele_frequency"], result.effect_allele_frequency,
                               rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(table["neg_log10_p"], result.neg_log10_p, rtol=0, atol=2.5e-6, equal_nan=True)
    assert table["neg_log10_p"][0] == pytest.approx(400.0, abs=1e-9)
    assert table["p_value"][0] == 0.0  # below float64; the magnitude lives in neg_log10_p
    assert list(table["variant_id"]) == ["rs1", "rs2", "rs3", "rs4", "rs5", "#NA", "rs7"]
    assert list(table["errcode"]) == list(result.errcode)


def test_round_trip_many_rows_and_determinism(tmp_path: Path) -> None:
    result = simulated_result(50_000, np.random.default_rng(3))
    a = write_gwas_ssf(result, tmp_path / "a.tsv.gz")
    b = write_gwas_ssf(result, tmp_path / "b.tsv.gz")
    assert a.read_bytes() == b.read_bytes()
    table = read_gwas_ssf(a)
    # 6 significant digits of p bound the error of -log10(p) by 0.5e-5 / ln(10) ~ 2.2e-6
    np.testing.assert_allclose(table["neg_log10_p"], result.neg_log10_p, rtol=0, atol=2.5e-6, equal_nan=True)
    assert list(table["chromosome"][:3]) == gwas_ssf_chromosome(result.variants.chrom[:3])


def test_chromosome_coding() -> None:
    got = gwas_ssf_chromosome(np.array(["chr1", "CHR01", "x", "chrXY", "Y", "chrM", "MT", "26", "25",
                                        "22", "GL000192.1"]))
    assert got == ["1", "01", "23", "23", "24", "25", "25", "25", "23", "22", "GL000192.1"]


@pytest.mark.parametrize("field", ["effect_allele", "variant_id", "chrom"])
def test_tab_in_text_field_is_refused(tmp_path: Path, field: str) -> None:
    result = small_result()
    values = np.array(getattr(result.variants, field), dtype=object)
    values[1] = "A\tB"
    bad = dataclasses.replace(result, variants=dataclasses.replace(result.variants, **{field: values}))
    with pytest.raises(InputError, match=r"tab or line break" if field == "chrom" else r"\(row 1\) contains a tab"):
        write_gwas_ssf(bad, tmp_path / "bad.tsv.gz")
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_read_rejects_a_file_without_mandatory_columns(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv"
    path.write_text("chromosome\tbeta\n1\t0.1\n", encoding="utf-8")
    with pytest.raises(InputError, match="base_pair_location"):
        read_gwas_ssf(path)


# --- metadata sidecar -----------------------------------------------------------------------------


def test_meta_yaml_keys_and_md5(tmp_path: Path) -> None:
    data = write_gwas_ssf(small_result(), tmp_path / "s.linear.tsv.gz")
    meta = write_gwas_ssf_meta(data, dataclasses.replace(run_summary(), genome_build="GRCh38"))
    assert meta.name == "s.linear.tsv.gz-meta.yaml"
    text = meta.read_text(encoding="utf-8")
    top = yaml_top_level(text)
    assert top["data_file_name"] == "s.linear.tsv.gz"
    assert top["file_type"] == "GWAS-SSF v1.0"
    assert top["data_file_md5sum"] == hashlib.md5(data.read_bytes()).hexdigest()
    assert top["is_harmonised"] == "false"
    assert top["is_sorted"] == "false"
    assert top["genome_assembly"] == "GRCh38"
    assert top["coordinate_system"] == "1-based"
    assert top["analysis_software"] == "fedgwas 0.1.0-test"
    assert top["effect_statistic"] == "beta"
    assert "  - sample_size: 100\n" in text  # contributing sites only: 60 + 40
    assert "    sample_ancestry_category:\n      - NR\n    case_control_study: false\n" in text
    assert "genotyping_technology:\n  - NR\n" in text
    assert top["date_metadata_last_modified"] == datetime.date.today().isoformat()
    assert "trait_description:\n  - bmi\n" in text
    assert "adjusted_covariates:\n  - age\n  - sex\n  - PC1\n" in text
    assert "\nfedgwas:\n  privacy: secagg\n" in text
    assert "  rounds: 2\n" in text
    assert '    "monomorphic": 1\n    "not in all sites": 3\n' in text
    assert "    - name: site-c\n      n_samples: 25\n      n_variants: 9\n      contributed: false\n" in text
    assert "warning" not in text.lower() and "plaintext" not in text.lower()
    assert "10.1.2.3" not in text and "example.org" not in text


def test_meta_default_assembly_and_hostile_phenotype(tmp_path: Path) -> None:
    data = write_gwas_ssf(small_result(), tmp_path / "s.linear.tsv.gz")
    text = write_gwas_ssf_meta(data, run_summary(phenotype=HOSTILE_PHENOTYPE)).read_text(encoding="utf-8")
    assert yaml_top_level(text)["genome_assembly"] == "NR"
    item = text.split("trait_description:\n", 1)[1].splitlines()[0]
    assert item.startswith('  - "')
    assert json.loads(item[4:]) == HOSTILE_PHENOTYPE  # quoted and escaped, newline included


def test_meta_plaintext_warning(tmp_path: Path) -> None:
    data = write_gwas_ssf(small_result(), tmp_path / "s.linear.tsv.gz")
    text = write_gwas_ssf_meta(data, run_summary(privacy="plaintext")).read_text(encoding="utf-8")
    assert "WARNING: PLAINTEXT" in text.splitlines()[2]  # in the opening comment block
    assert "\nfedgwas:\n  privacy: plaintext\n  warning: " in text
    warning = next(line for line in text.splitlines() if line.startswith("  warning: "))
    assert "development only" in json.loads(warning[len("  warning: "):])


# --- genomic inflation and plots ------------------------------------------------------------------


def test_lambda_near_one_for_uniform_p() -> None:
    p = np.random.default_rng(2024).uniform(size=20_000)
    assert 0.9 < genomic_inflation(-np.log10(p)) < 1.1


def test_lambda_large_for_inflated_statistics() -> None:
    chi2 = np.random.default_rng(11).chisquare(1, size=20_000) * 2.0
    lam = genomic_inflation(-np.log10(stats.chi2.sf(chi2, 1)))
    assert lam > 1.5
    assert lam == pytest.approx(2.0, rel=0.1)


def test_lambda_matches_chi2_isf_and_handles_extremes() -> None:
    x = np.random.default_rng(5).uniform(0, 250, 1001)
    naive = np.median(stats.chi2.isf(10.0 ** -x, 1)) / stats.chi2.ppf(0.5, 1)
    assert genomic_inflation(x) == pytest.approx(naive, rel=1e-9)
    assert genomic_inflation(np.array([300.0])) == pytest.approx(
        stats.chi2.isf(1e-300, 1) / stats.chi2.ppf(0.5, 1), rel=1e-9)
    assert math.isfinite(genomic_inflation(np.array([1000.0])))
    assert genomic_inflation(np.array([1000.0])) > genomic_inflation(np.array([400.0])) > 0
    assert math.isnan(genomic_inflation(np.array([math.nan])))
    assert genomic_inflation(np.array([math.nan, 0.0, 0.0, math.inf])) == 0.0  # NaN skipped, median of 3


def simulated_result(m: int, rng: np.random.Generator) -> AssociationResult:
    chrom = rng.choice(np.array([str(c) for c in range(1, 23)] + ["X"], dtype=object), size=m)
    beta = rng.normal(size=m)
    se = rng.uniform(0.5, 1.5, m)
    neg_log10_p = -np.log10(rng.uniform(size=m))
    neg_log10_p[rng.integers(0, m, 5)] = math.nan
    return AssociationResult(
        test="linear",
        variants=VariantTable(
            chrom=chrom, pos=rng.integers(1, 250_000_000, m),
            variant_id=np.array([f"rs{i}" for i in range(m)], dtype=object),
            effect_allele=np.full(m, "A", dtype=object), other_allele=np.full(m, "C", dtype=object)),
        beta=beta, se=se, stat=beta / se, neg_log10_p=neg_log10_p,
        n=np.full(m, 1000, dtype=np.int64), effect_allele_count=rng.uniform(0, 2000, m),
        errcode=np.full(m, ".", dtype=object))


def test_manhattan_axis_natural_chromosome_order() -> None:
    chrom = np.array(["10", "2", "chrX", "1", "MT", "chr22", "GL000192.1", "2", "Y"], dtype=object)
    pos = np.array([5, 100, 7, 3, 1, 9, 4, 50, 2], dtype=np.int64)
    x, ranks, centres, names, (left, right) = _genome_axis(chrom, pos)
    assert names == ["1", "2", "10", "22", "X", "Y", "MT", "GL000192.1"]
    assert list(ranks) == [2, 1, 4, 0, 6, 3, 7, 1, 5]
    assert np.all(np.diff(centres) > 0)
    assert x[7] < x[1]  # within chromosome 2, by position
    assert np.all((left < x) & (x < right))


@pytest.mark.parametrize("plaintext", [False, True])
def test_plots_are_png(tmp_path: Path, plaintext: bool) -> None:
    result = simulated_result(5_000, np.random.default_rng(1))
    manhattan = manhattan_plot(result, tmp_path / "m.png", "title $\\frac{", plaintext=plaintext)
    lam = qq_plot(result, tmp_path / "q.png", "title", plaintext=plaintext)
    for path in (manhattan, tmp_path / "q.png"):
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert lam == pytest.approx(genomic_inflation(result.neg_log10_p))


def test_plots_of_small_and_empty_results(tmp_path: Path) -> None:
    manhattan_plot(small_result(), tmp_path / "m.png", "small")
    assert qq_plot(small_result(), tmp_path / "q.png", "small") > 0
    empty = dataclasses.replace(small_result(), neg_log10_p=np.full(7, math.nan))
    manhattan_plot(empty, tmp_path / "m0.png", "empty")
    assert math.isnan(qq_plot(empty, tmp_path / "q0.png", "empty"))
    assert (tmp_path / "m0.png").read_bytes().startswith(PNG_MAGIC)


# --- report and the whole bundle ------------------------------------------------------------------


def test_write_results_secagg(tmp_path: Path) -> None:
    paths = write_results(small_result(), dataclasses.replace(run_summary(), genome_build="GRCh37"), tmp_path / "out", "study1")
    assert isinstance(paths, ResultPaths)
    with pytest.raises(dataclasses.FrozenInstanceError):
        paths.tsv = tmp_path  # type: ignore[misc]
    assert paths == result_paths(tmp_path / "out", "study1", "linear")
    assert paths.tsv.name == "study1.linear.tsv.gz"
    assert paths.meta.name == "study1.linear.tsv.gz-meta.yaml"
    for path in (paths.manhattan, paths.qq):
        assert path.read_bytes().startswith(PNG_MAGIC)
    page = paths.report.read_text(encoding="utf-8")
    assert "plaintext" not in page.lower()
    assert "secure aggregation" in page
    assert 'src="study1.linear.manhattan.png"' in page and 'src="study1.linear.qq.png"' in page
    assert 'href="study1.linear.tsv.gz"' in page
    for text in ("study-1", "bmi", "age, sex, PC1", "site-a", "site-c", "monomorphic: 1", "12.3 s", "UNAVAILABLE"):
        assert text in page
    assert "10.1.2.3" not in page and "example.org" not in page and "50051" not in page
    hits = page.split("Top 20 hits", 1)[1]
    assert hits.count("<tr>") == 1 + 6  # header + every variant with a p-value (the NaN row skipped)
    assert hits.index("rs7") < hits.index("rs2") < hits.index("rs1") < hits.index("rs4")  # p=0 first
    assert "5.01187e-401" in hits


def test_write_results_plaintext_is_labelled_everywhere(tmp_path: Path) -> None:
    paths = write_results(small_result(), run_summary(privacy="plaintext"), tmp_path, "dev")
    page = paths.report.read_text(encoding="utf-8")
    assert '<div class="banner danger">PLAINTEXT - development only' in page
    assert "warning: " in paths.meta.read_text(encoding="utf-8")


def test_report_escapes_hostile_text(tmp_path: Path) -> None:
    summary = dataclasses.replace(run_summary(phenotype=HOSTILE_PHENOTYPE),
                                  sites=(SiteSummary("<img src=x onerror=alert(1)>", 5, 5, False, "<b>no</b>"),),
                                  notes=("<iframe>",))
    paths = write_results(small_result(), summary, tmp_path, "h")
    page = paths.report.read_text(encoding="utf-8")
    assert "<script>" not in page and "<img src=x" not in page and "<iframe>" not in page and "<b>no" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_write_report_relative_image_paths(tmp_path: Path) -> None:
    paths = write_results(small_result(), run_summary(), tmp_path / "res", "s")
    page = write_report(small_result(), run_summary(), paths, tmp_path / "elsewhere.html").read_text(encoding="utf-8")
    assert 'src="res/s.linear.manhattan.png"' in page


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden", "sp ace"])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError, match="not a safe file name"):
        write_results(small_result(), run_summary(), tmp_path, name)


def test_mismatched_test_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="logistic"):
        write_results(small_result(), run_summary(test="logistic"), tmp_path, "s")


def test_redact_endpoints() -> None:
    text = ("connect to https://site.example/x failed; ipv6:[::1]:50051; 192.168.0.7:8443; "
            "host db-1.hospital.example.org down; localhost:50051 refused; [fe80::1]")
    redacted = redact_endpoints(text)
    for leak in ("site.example", "::1", "192.168", "hospital", "localhost", "fe80"):
        assert leak not in redacted
    assert redact_endpoints("site did not answer within 30 s") == "site did not answer within 30 s"


def test_vectorised_number_text_equals_python_format() -> None:
    """``%.6g`` and ``%d`` built in numpy (coordinator.results.tsv_text) equal Python's, byte for byte,
    over magnitudes across float64's range, rounding ties and carries, zeros, NaN and infinities."""
    from coordinator.results.tsv_text import block_strings, g6_block, int_block, join_rows, text_block

    rng = np.random.default_rng(11)
    x = np.concatenate([rng.normal(size=20000), rng.normal(size=20000) * 10.0 ** rng.integers(-30, 30, 20000),
                        10.0 ** rng.uniform(-320, 308, 20000), np.rint(rng.normal(size=5000) * 1e4) / 1e4,
                        [0.0, -0.0, math.nan, math.inf, -math.inf, 1e-5, 9.999995e-5, 999999.5, 9999995.0, 99999.95,
                         1e16, 1e22, 1e23, 5e-324, 1.0, 0.5, 2.5e-05, 123456789.0, -1.5, 0.000123456789]])
    expected = [format(v, ".6g") if math.isfinite(v) else "#NA" for v in x.tolist()]
    assert block_strings(g6_block(x)) == expected
    ints = np.concatenate([rng.integers(-10**12, 10**12, 5000), np.arange(-1001, 1002), [10**17, 10**18 - 1, 10**18]])
    assert block_strings(int_block(ints)) == [str(v) for v in ints.tolist()]
    assert join_rows([text_block(["a", "é"]), g6_block([1.5, math.nan]), int_block([7, -20])]) == \
        "a\t1.5\t7\né\t#NA\t-20\n".encode()


def test_dosage_info_column_is_kept_when_a_variant_is_untestable(tmp_path: Path) -> None:
    result = dataclasses.replace(small_result(), info=np.linspace(0.1, 0.9, 7))
    assert not has_every_value(result).all()
    table = read_gwas_ssf(write_gwas_ssf(result, tmp_path / "s.tsv.gz"))
    keep = has_every_value(result)
    np.testing.assert_allclose(table["info"][keep], result.info[keep], rtol=1e-5)


def test_manhattan_thinning_keeps_every_point_below_p_0_01() -> None:
    from coordinator.results.plots import _thin

    rng = np.random.default_rng(4)
    x = np.sort(rng.uniform(0, 1e6, 200000))
    y = rng.exponential(0.3, 200000)
    colour = (x > 5e5).astype(np.int64)
    kept = _thin(x, y, colour, (0.0, 1e6), 10.0)
    assert set(np.flatnonzero(y >= 2.0)) <= set(kept.tolist())
    assert len(kept) < len(y) // 2
