"""Tests for engine.cohort.harmonise: matching variant manifests across sites.

A slow, obviously-correct dict-based reference (``naive_harmonise``) is kept here as the oracle for
seeded random manifests; the hand-written cases pin down each rule on its own.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from engine.errors import HarmonisationError, InputError
from engine.cohort.harmonise import (
    Harmonisation,
    VariantManifest,
    harmonise,
    normalise_chromosome,
)

from tests.plink_tools import DATA

HM3_BIM = DATA / "hapmap3_hm3_thinned" / "HM3_thinned_autosomal_overlap.bim"
KG_BIM = DATA / "1kg_phase1_thinned" / "1kg_phase1_thinned.bim"

Row = tuple[str, int, str, str, str]  # chrom, pos, id, allele1, allele2
NOTHING_DROPPED = {"unusable_alleles": 0, "duplicate": 0, "absent_at_some_site": 0, "absent_at_first_site": 0}


def manifest(rows: list[Row]) -> VariantManifest:
    """A manifest from (chrom, pos, id, allele1, allele2) rows."""
    chrom, pos, ids, a1, a2 = zip(*rows) if rows else ((), (), (), (), ())
    return VariantManifest(
        chrom=np.array(chrom, dtype=str),
        pos=np.array(pos, dtype=np.int64),
        variant_id=np.array(ids, dtype=str),
        allele1=np.array(a1, dtype=str),
        allele2=np.array(a2, dtype=str),
    )


def read_bim(path: Path) -> VariantManifest:
    """Tiny .bim reader for these tests: 6 whitespace-separated columns, cM column ignored."""
    fields = [line.split() for line in path.read_text().splitlines() if line.strip()]
    assert all(len(f) == 6 for f in fields), f"{path} is not a 6-column .bim"
    chrom, ids, _, pos, a1, a2 = zip(*fields)
    return VariantManifest(
        chrom=np.array(chrom, dtype=str),
        pos=np.array(pos, dtype=np.int64),
        variant_id=np.array(ids, dtype=str),
        allele1=np.array(a1, dtype=str),
        allele2=np.array(a2, dtype=str),
    )


BASE: list[Row] = [
    ("1", 100, "rs1", "A", "G"),
    ("1", 200, "rs2", "C", "T"),
    ("2", 150, "rs3", "G", "T"),
    ("2", 300, "rs4", "A", "C"),
    ("X", 500, "rs5", "T", "C"),
]


def assert_identity(h: Harmonisation, n: int) -> None:
    for alignment in h.alignments:
        np.testing.assert_array_equal(alignment.index, np.arange(n))
        assert not alignment.flip.any()


def test_identical_manifests_give_identity_alignment() -> None:
    h = harmonise([manifest(BASE), manifest(BASE), manifest(BASE)], ["a", "b", "c"])
    assert len(h.variants) == 5
    assert len(h.alignments) == 3
    assert_identity(h, 5)
    assert h.dropped == NOTHING_DROPPED
    assert h.id_mismatches == 0
    assert h.variants.pos.dtype == np.int64
    assert h.alignments[0].index.dtype == np.int64
    assert h.alignments[0].flip.dtype == bool
    assert list(h.variants.variant_id) == ["rs1", "rs2", "rs3", "rs4", "rs5"]
    assert list(h.variants.effect_allele) == ["A", "C", "G", "A", "T"]
    assert list(h.variants.other_allele) == ["G", "T", "T", "C", "C"]


def test_permuted_site_is_indexed_back_into_first_site_order() -> None:
    order = [3, 0, 4, 2, 1]
    h = harmonise([manifest(BASE), manifest([BASE[i] for i in order])], ["a", "b"])
    np.testing.assert_array_equal(h.alignments[0].index, np.arange(5))
    # harmonised variant k is first-site row k, which sits at row order.index(k) of site b
    np.testing.assert_array_equal(h.alignments[1].index, [order.index(k) for k in range(5)])
    assert not h.alignments[1].flip.any()
    assert list(h.variants.variant_id) == ["rs1", "rs2", "rs3", "rs4", "rs5"]


def test_swapped_alleles_are_flipped_not_dropped() -> None:
    swapped = [(c, p, i, a2, a1) if i in {"rs2", "rs5"} else (c, p, i, a1, a2) for c, p, i, a1, a2 in BASE]
    h = harmonise([manifest(BASE), manifest(swapped)], ["a", "b"])
    np.testing.assert_array_equal(h.alignments[1].index, np.arange(5))
    np.testing.assert_array_equal(h.alignments[1].flip, [False, True, False, False, True])
    assert not h.alignments[0].flip.any()
    # the counted allele is always the first site's allele1
    assert list(h.variants.effect_allele) == ["A", "C", "G", "A", "T"]


def test_flipped_first_site_sets_effect_allele() -> None:
    swapped = [(c, p, i, a2, a1) for c, p, i, a1, a2 in BASE]
    h = harmonise([manifest(swapped), manifest(BASE)], ["a", "b"])
    assert list(h.variants.effect_allele) == ["G", "T", "T", "C", "C"]
    assert h.alignments[1].flip.all()


def test_variants_missing_at_one_site_are_dropped_everywhere() -> None:
    only_b: list[Row] = [("3", 10, "rs9", "A", "C"), ("3", 20, "rs10", "A", "G")]
    b = [BASE[0], BASE[2], BASE[4]] + only_b
    c = list(BASE)
    h = harmonise([manifest(BASE), manifest(b), manifest(c)], ["a", "b", "c"])
    assert list(h.variants.variant_id) == ["rs1", "rs3", "rs5"]
    np.testing.assert_array_equal(h.alignments[0].index, [0, 2, 4])
    np.testing.assert_array_equal(h.alignments[1].index, [0, 1, 2])
    np.testing.assert_array_equal(h.alignments[2].index, [0, 2, 4])
    assert h.dropped["absent_at_some_site"] == 2
    assert h.dropped["absent_at_first_site"] == 2


def test_duplicated_key_at_one_site_is_dropped_everywhere() -> None:
    b = list(BASE) + [("1", 200, "rs2_dup", "T", "C")]  # same position and allele pair as rs2
    h = harmonise([manifest(BASE), manifest(b)], ["a", "b"])
    assert "rs2" not in set(h.variants.variant_id)
    assert len(h.variants) == 4
    assert h.dropped["duplicate"] == 1
    assert h.dropped["absent_at_some_site"] == 0


def test_duplicated_key_at_first_site_is_dropped_and_counted_once() -> None:
    a = list(BASE) + [BASE[3], BASE[3]]  # rs4 three times
    h = harmonise([manifest(a), manifest(BASE)], ["a", "b"])
    assert list(h.variants.variant_id) == ["rs1", "rs2", "rs3", "rs5"]
    assert h.dropped["duplicate"] == 1


def test_multiallelic_split_is_not_a_duplicate() -> None:
    a = list(BASE) + [("1", 100, "rs1", "A", "T")]  # same position, different allele pair
    h = harmonise([manifest(a), manifest(a)], ["a", "b"])
    assert len(h.variants) == 6
    assert h.dropped["duplicate"] == 0


def test_chromosome_names_and_allele_case_are_normalised() -> None:
    a: list[Row] = [("1", 100, "rs1", "A", "G"), ("23", 5, "rsX", "C", "T"), ("26", 7, "rsMT", "A", "G")]
    b: list[Row] = [
        ("chr1", 100, "rs1", "a", "g"),
        ("chrX", 5, "rsX", "t", "c"),
        ("chrM", 7, "rsMT", "A", "G"),
    ]
    h = harmonise([manifest(a), manifest(b)], ["a", "b"])
    assert list(h.variants.chrom) == ["1", "X", "MT"]
    np.testing.assert_array_equal(h.alignments[1].index, [0, 1, 2])
    np.testing.assert_array_equal(h.alignments[1].flip, [False, True, False])


def test_normalise_chromosome() -> None:
    cases = {
        "chr1": "1", "CHR2": "2", "Chr22": "22", "01": "1", "23": "X", "24": "Y", "25": "XY",
        "26": "MT", "M": "MT", "chrM": "MT", "x": "X", "chrY": "Y", "MT": "MT", "XY": "XY",
    }  # fmt: skip
    assert list(normalise_chromosome(np.array(list(cases)))) == list(cases.values())


def test_unusable_alleles_are_dropped() -> None:
    bad: list[Row] = [("4", 1, "mono", "A", "A"), ("4", 2, "miss0", "0", "G"), ("4", 3, "missdot", "C", ".")]
    a = list(BASE) + bad
    h = harmonise([manifest(a), manifest(a)], ["a", "b"])
    assert len(h.variants) == 5
    assert h.dropped["unusable_alleles"] == 3
    assert h.dropped["duplicate"] == 0


def test_strand_flipped_pair_does_not_match() -> None:
    b = [("1", 100, "rs1", "T", "C")] + BASE[1:]  # A/G reported on the other strand
    h = harmonise([manifest(BASE), manifest(b)], ["a", "b"])
    assert "rs1" not in set(h.variants.variant_id)
    assert h.dropped["absent_at_some_site"] == 1


def test_id_mismatches_are_counted_when_matching_by_position() -> None:
    b = [(c, p, "." if i == "rs3" else i, a1, a2) for c, p, i, a1, a2 in BASE]
    c = [(c, p, f"{c}:{p}" if i == "rs4" else i, a1, a2) for c, p, i, a1, a2 in BASE]
    h = harmonise([manifest(BASE), manifest(b), manifest(c)], ["a", "b", "c"])
    assert len(h.variants) == 5
    assert h.id_mismatches == 2


def other_build(rows: list[Row]) -> list[Row]:
    return [(c, p + 1, i, a1, a2) for c, p, i, a1, a2 in rows]


def test_match_by_id_across_builds() -> None:
    b = other_build(BASE)
    b[1] = (b[1][0], b[1][1], b[1][2], b[1][4], b[1][3])
    h = harmonise([manifest(BASE), manifest(b)], ["a", "b"], match_by="id")
    np.testing.assert_array_equal(h.alignments[1].index, np.arange(5))
    np.testing.assert_array_equal(h.alignments[1].flip, [False, True, False, False, False])
    np.testing.assert_array_equal(h.variants.pos, [100, 200, 150, 300, 500])  # first site's positions
    assert h.id_mismatches == 0


def test_position_matching_across_builds_suggests_id() -> None:
    with pytest.raises(HarmonisationError) as info:
        harmonise([manifest(BASE), manifest(other_build(BASE))], ["north", "south"])
    message = str(info.value)
    assert "found no variants in common" in message
    assert "'north'" in message and "'south'" in message
    assert "5 variants share IDs" in message
    assert "genome builds" in message and "match_by='id'" in message


def test_position_matching_with_few_coincidences_still_suggests_id() -> None:
    rows: list[Row] = [("1", 1000 * k, f"rs{k}", "A", "G") for k in range(1, 101)]
    shifted = other_build(rows)
    shifted[0] = rows[0]  # one position happens to agree across builds
    with pytest.raises(HarmonisationError, match=r"found only 1 variant in common .* 100 variants share IDs"):
        harmonise([manifest(rows), manifest(shifted)], ["a", "b"])


def test_id_matching_across_naming_schemes_suggests_position() -> None:
    b = [(c, p, f"{c}:{p}", a1, a2) for c, p, _, a1, a2 in BASE]
    expected = r"5 variants share chromosome, position and alleles.*match_by='position'"
    with pytest.raises(HarmonisationError, match=expected):
        harmonise([manifest(BASE), manifest(b)], ["a", "b"], match_by="id")


def test_partial_overlap_is_not_an_error() -> None:
    # low overlap by position, and matching by ID would not find more: keep what matches
    b = BASE[:1] + [(c, p, i + "x", a1, a2) for c, p, i, a1, a2 in other_build(BASE[1:])]
    h = harmonise([manifest(BASE), manifest(b)], ["a", "b"])
    assert list(h.variants.variant_id) == ["rs1"]


def test_no_overlap_names_sites_without_a_misleading_hint() -> None:
    b: list[Row] = [("5", 1, "rs100", "A", "C"), ("5", 2, "rs101", "G", "T")]
    with pytest.raises(HarmonisationError) as info:
        harmonise([manifest(BASE), manifest(b)], ["site_a", "site_b"])
    message = str(info.value)
    assert "no variants in common" in message
    assert "'site_a' (5 usable variants)" in message and "'site_b' (2 usable variants)" in message
    assert "match_by=" not in message


def test_empty_site_is_no_overlap() -> None:
    with pytest.raises(HarmonisationError, match="no variants in common"):
        harmonise([manifest(BASE), manifest([])], ["a", "b"])


@pytest.mark.parametrize("n_sites", [0, 1])
def test_fewer_than_two_sites(n_sites: int) -> None:
    with pytest.raises(HarmonisationError, match=f"a study needs at least two sites, got {n_sites}"):
        harmonise([manifest(BASE)] * n_sites, ["a"] * n_sites)


def test_site_names_must_match_manifests() -> None:
    with pytest.raises(InputError, match="2 site names for 3"):
        harmonise([manifest(BASE)] * 3, ["a", "b"])
    with pytest.raises(InputError, match="distinct"):
        harmonise([manifest(BASE)] * 2, ["a", "a"])


def test_unknown_match_by() -> None:
    with pytest.raises(InputError, match=r"match_by='rsid' is not one of 'position', 'id'"):
        harmonise([manifest(BASE)] * 2, ["a", "b"], match_by="rsid")


def test_manifest_columns_must_have_equal_lengths() -> None:
    with pytest.raises(InputError, match="VariantManifest.pos has 1 rows, expected 2"):
        VariantManifest(
            chrom=np.array(["1", "1"]),
            pos=np.array([1]),
            variant_id=np.array(["a", "b"]),
            allele1=np.array(["A", "A"]),
            allele2=np.array(["C", "C"]),
        )


def test_object_arrays_and_long_alleles_are_accepted() -> None:
    rows: list[Row] = [("1", 10, "indel1", "ACGTACGTACGTACGT", "A"), ("1", 20, "snp", "C", "T")]
    a = manifest(rows)
    b = VariantManifest(
        chrom=np.array(["chr1", "chr1"], dtype=object),
        pos=np.array([20, 10]),
        variant_id=np.array(["snp", "indel1"], dtype=object),
        allele1=np.array(["t", "A"], dtype=object),
        allele2=np.array(["c", "acgtacgtacgtacgt"], dtype=object),
    )
    for match_by in ("position", "id"):
        h = harmonise([a, b], ["a", "b"], match_by=match_by)
        np.testing.assert_array_equal(h.alignments[1].index, [1, 0])
        np.testing.assert_array_equal(h.alignments[1].flip, [True, True])
        assert list(h.variants.effect_allele) == ["ACGTACGTACGTACGT", "C"]


# --- oracle: slow dict-based reference on seeded random manifests --------------------------------


@dataclass(frozen=True)
class NaiveResult:
    kept: list[int]  # first-site rows, in order
    per_site: list[list[tuple[int, bool]]]  # per site, (row, flip) for each kept variant
    dropped: dict[str, int]


def naive_harmonise(manifests: list[VariantManifest], match_by: str) -> NaiveResult:
    """The rules of engine.cohort.harmonise written out with plain dictionaries, one variant at a time."""

    def keys(m: VariantManifest) -> list[tuple[object, ...] | None]:
        out: list[tuple[object, ...] | None] = []
        for c, p, i, x, y in zip(m.chrom, m.pos, m.variant_id, m.allele1, m.allele2):
            x, y = str(x).upper(), str(y).upper()
            if x == y or {x, y} & {"0", "."}:
                out.append(None)
                continue
            pair = (min(x, y), max(x, y))
            chrom = str(normalise_chromosome(np.array([c]))[0])
            out.append((chrom, int(p), *pair) if match_by == "position" else (str(i), *pair))
        return out

    site_keys = [keys(m) for m in manifests]
    counts = [Counter(k for k in ks if k is not None) for ks in site_keys]
    where = [{k: r for r, k in enumerate(ks) if k is not None} for ks in site_keys]
    duplicated = {k for c in counts for k, n in c.items() if n > 1}
    kept = [r for r, k in enumerate(site_keys[0]) if k is not None and all(c[k] == 1 for c in counts)]
    per_site = []
    for m, w in zip(manifests, where):
        pairs = []
        for r in kept:
            key = site_keys[0][r]
            assert key is not None
            row = w[key]
            pairs.append((row, str(m.allele1[row]).upper() != str(manifests[0].allele1[r]).upper()))
        per_site.append(pairs)
    first = [k for k in site_keys[0] if k is not None and k not in duplicated]
    elsewhere = {k for c in counts[1:] for k in c} - duplicated
    dropped = {
        "unusable_alleles": sum(k is None for k in site_keys[0]),
        "duplicate": len(duplicated),
        "absent_at_some_site": sum(1 for k in first if not all(k in c for c in counts)),
        "absent_at_first_site": len(elsewhere - set(counts[0])),
    }
    return NaiveResult(kept, per_site, dropped)


def random_site(rng: np.random.Generator, universe: list[Row]) -> VariantManifest:
    """About 3/4 of the universe in random order, a few rows twice, random naming and allele order."""
    picked = [universe[i] for i in rng.permutation(len(universe))[: int(0.75 * len(universe))]]
    picked += [picked[i] for i in rng.integers(0, len(picked), size=5)]
    rows: list[Row] = []
    for i in rng.permutation(len(picked)):
        c, p, name, a1, a2 = picked[i]
        if rng.random() < 0.5:
            a1, a2 = a2, a1
        if rng.random() < 0.2:
            c = "chr" + c
        if rng.random() < 0.1:
            a1 = a1.lower()
        rows.append((c, p, name, a1, a2))
    return manifest(rows)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("match_by", ["position", "id"])
def test_matches_naive_reference(seed: int, match_by: str) -> None:
    rng = np.random.default_rng(seed)
    alleles = ["A", "C", "G", "T", "AT", "0"]
    universe: list[Row] = []
    for _ in range(400):
        a1, a2 = rng.choice(alleles, size=2, replace=False, p=[0.24, 0.24, 0.24, 0.24, 0.03, 0.01])
        # crowded positions and reused IDs, so keys collide in both modes (multi-allelic sites, ...)
        chrom, pos, name = str(rng.integers(1, 4)), int(rng.integers(1, 200)), f"rs{rng.integers(0, 350)}"
        universe.append((chrom, pos, name, a1, a2))
    universe.append(("1", 999, "rs_mono", "G", "G"))
    manifests = [random_site(rng, universe) for _ in range(3)]
    expected = naive_harmonise(manifests, match_by)
    assert len(expected.kept) > 50, "the simulation should keep a fair share of variants"

    h = harmonise(manifests, ["a", "b", "c"], match_by=match_by)
    np.testing.assert_array_equal(h.alignments[0].index, expected.kept)
    for alignment, pairs in zip(h.alignments, expected.per_site):
        np.testing.assert_array_equal(alignment.index, [r for r, _ in pairs])
        np.testing.assert_array_equal(alignment.flip, [f for _, f in pairs])
    m0 = manifests[0]
    np.testing.assert_array_equal(h.variants.pos, m0.pos[expected.kept])
    np.testing.assert_array_equal(h.variants.variant_id, m0.variant_id[expected.kept])
    np.testing.assert_array_equal(h.variants.effect_allele, np.char.upper(m0.allele1[expected.kept]))
    np.testing.assert_array_equal(h.variants.other_allele, np.char.upper(m0.allele2[expected.kept]))
    assert h.dropped == expected.dropped


# --- real data: HapMap3 (build 36) vs 1000 Genomes phase 1 (build 37), same SNP IDs -------------


def test_real_bims_from_different_builds() -> None:
    hm3, kg = read_bim(HM3_BIM), read_bim(KG_BIM)
    with pytest.raises(HarmonisationError) as info:
        harmonise([hm3, kg], ["hapmap3", "1kg"])
    message = str(info.value)
    assert "genome builds" in message and "match_by='id'" in message

    assert "only 5 variants in common" in message  # positions that coincide across builds by chance
    assert "14,079 variants share IDs" in message

    h = harmonise([hm3, kg], ["hapmap3", "1kg"], match_by="id")
    # recorded when written: all 14,079 match, none flipped; 190 sit at another row in the build-37
    # file (its order changed with the coordinates) and 14,074 have another position there
    assert len(h.variants) == 14_079
    assert h.dropped == NOTHING_DROPPED
    assert not h.alignments[1].flip.any()
    assert int((h.alignments[1].index != np.arange(14_079)).sum()) == 190
    np.testing.assert_array_equal(h.alignments[0].index, np.arange(14_079))
    np.testing.assert_array_equal(h.variants.pos, hm3.pos)  # first site's (build 36) positions
    np.testing.assert_array_equal(hm3.variant_id, kg.variant_id[h.alignments[1].index])
    assert int((kg.pos[h.alignments[1].index] != hm3.pos).sum()) == 14_074

    # the same site storing allele1/allele2 the other way round is all flips
    kg_swapped = VariantManifest(kg.chrom, kg.pos, kg.variant_id, kg.allele2, kg.allele1)
    h = harmonise([hm3, kg_swapped], ["hapmap3", "1kg"], match_by="id")
    assert len(h.variants) == 14_079
    assert h.alignments[1].flip.all()
