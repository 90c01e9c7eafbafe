"""Imputed dosages from BGEN and VCF (``DS`` or ``GP``), imported once into a cached PLINK 2 fileset.

A site with a BGEN or a dosage VCF imports it once, like ``plink2 --bgen/--vcf ... --make-pgen``,
into ``cache_dir`` (keyed by the files' paths, sizes and modification times) and reads the cached
``.pgen`` through pgenlib from then on: every later pass (each round of an iterative fit, QC, each
study) reads the compact, indexed PLINK 2 format instead of decompressing BGEN blocks again.

What PLINK 2 does on import, and so what this does:

* dosages are stored on PLINK 2's grid of 1/16384 (pgenlib's writer rounds to it);
* a hard call is stored where the dosage is within 0.1 of an integer (PLINK 2's default
  ``--hard-call-threshold 0.1``), else the hard call is missing (QC counts use hard calls, as PLINK 2's
  ``--hardy``/``--missing``/``--geno-counts`` do); another threshold is applied when the fileset is
  read (:class:`engine.io.hard_calls.HardCallRules`, pgenlib's writer always stores 0.1's);
* dosages within ``--dosage-erase-threshold`` of their hard call are erased (replaced by the hard
  call) before they are written; the cache key includes that threshold, so changing it re-imports;
* the counted allele (ALT) is the BGEN's second allele (``ref-first``) and the VCF's ALT;
* multi-allelic variants are skipped and counted, as for ``.pgen`` and VCF hard calls.

``DS`` is the ALT dosage; with ``GP`` the dosage is ``P(het) + 2 P(hom ALT)``. A missing value
(``.``) is a missing dosage.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from engine.errors import InputError
from engine.io.hard_calls import HardCallRules
from engine.io.bgen import BgenVariantInfo, bgen_samples, iter_dosages, read_header, scan_variants
from engine.io.plink import FamTable
from engine.io.vcf import vcf_records, vcf_samples

log = logging.getLogger("engine")

#: VCF FORMAT fields a site may read dosages from (PLINK 2's ``--vcf FILE dosage=DS|GP``).
VCF_DOSAGE_FIELDS = ("DS", "GP")
#: pgenlib's (and PLINK 2's) code for a missing dosage.
_MISSING_DOSAGE = -9.0
_BATCH = 1024


@dataclass(frozen=True)
class DosageImport:
    """A cached PLINK 2 fileset with dosages: its prefix, how many variants, how many were skipped."""

    prefix: Path
    n_variants: int
    multiallelic_skipped: int


@dataclass(frozen=True)
class DosageVariant:
    """One biallelic variant of a dosage fileset: REF and ALT (the counted allele)."""

    chrom: str
    pos: int
    variant_id: str
    ref: str
    alt: str


def _cache_prefix(cache_dir: Path, sources: Iterable[Path | None], tag: str, rules: HardCallRules) -> Path:
    """The cache entry of an import: keyed by the sources' paths, sizes and times and the erase threshold
    (the only rule that changes what is written; the hard-call threshold is applied on read)."""
    parts = [] if rules.dosage_erase_threshold == 0 else [f"dosage_erase_threshold={rules.dosage_erase_threshold!r}"]
    for source in sources:
        if source is not None:
            stat = source.stat()
            parts.append(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}")
    key = hashlib.sha256(("\n".join(parts) + f"\n{tag}").encode()).hexdigest()[:16]
    first = next(s for s in sources if s is not None)
    return cache_dir / f"{first.name.split('.')[0]}-{tag}-{key}"


def _cached(prefix: Path) -> DosageImport | None:
    marker = Path(f"{prefix}.import.json")
    if not marker.exists():
        return None
    info = json.loads(marker.read_text())
    return DosageImport(prefix, info["n_variants"], info["multiallelic_skipped"])


def write_dosage_fileset(prefix: Path, samples: FamTable, variants: list[DosageVariant],
                         dosages: Iterator[np.ndarray], source: Path, skipped: int,
                         rules: HardCallRules = HardCallRules()) -> DosageImport:
    """Write ``prefix.pgen/.pvar/.psam`` with the dosages ``(n_samples,)`` (NaN missing) of ``variants``,
    erasing those within ``rules.dosage_erase_threshold`` of their hard call.

    The files are written under temporary names and renamed at the end, so an interrupted import
    leaves no cache entry behind.
    """
    import pgenlib  # only sites with dosage data need it

    n = len(samples)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(f"{prefix}.pgen.partial")
    writer = pgenlib.PgenWriter(bytes(partial), n, variant_ct=len(variants), nonref_flags=False,
                                hardcall_phase_present=False, dosage_present=True)
    batch = np.empty((_BATCH, n))  # float64: pgenlib rounds to 1/16384, float32 would move ties
    filled = 0
    try:
        for dosage in dosages:
            row = batch[filled]
            np.copyto(row, dosage)
            rules.erase(row)
            row[np.isnan(row)] = _MISSING_DOSAGE
            filled += 1
            if filled == _BATCH:
                writer.append_dosages_batch(batch)
                filled = 0
        if filled:
            writer.append_dosages_batch(batch[:filled])
    except BaseException:
        try:
            writer.close()
        except RuntimeError:  # pgenlib refuses to close with fewer variants than declared: expected here
            pass
        partial.unlink(missing_ok=True)
        raise
    writer.close()
    with open(f"{prefix}.psam", "w", encoding="utf-8") as psam:
        psam.write("#FID\tIID\tSEX\n")
        psam.writelines(f"{f}\t{i}\t{s if s in (1, 2) else 'NA'}\n" for f, i, s in
                        zip(samples.fid, samples.iid, samples.sex.tolist()))
    with open(f"{prefix}.pvar", "w", encoding="utf-8") as pvar:
        pvar.write("#CHROM\tPOS\tID\tREF\tALT\n")
        pvar.writelines(f"{v.chrom}\t{v.pos}\t{v.variant_id}\t{v.ref}\t{v.alt}\n" for v in variants)
    partial.replace(f"{prefix}.pgen")
    Path(f"{prefix}.import.json").write_text(json.dumps({"source": str(source), "n_variants": len(variants),
                                                         "multiallelic_skipped": skipped,
                                                         "dosage_erase_threshold": rules.dosage_erase_threshold}))
    if skipped:
        log.warning("%s: %d multi-allelic variants skipped", source, skipped)
    return DosageImport(prefix, len(variants), skipped)


def _variant_id(variant_id: str, chrom: str, pos: int, ref: str, alt: str) -> str:
    return variant_id if variant_id and variant_id != "." else f"{chrom}:{pos}:{ref}:{alt}"


def import_bgen(path: Path, sample: Path | None, cache_dir: Path,
                rules: HardCallRules = HardCallRules()) -> DosageImport:
    """Import a BGEN v1.2/v1.3 (with its ``.sample`` file, or embedded IDs) into ``cache_dir``."""
    prefix = _cache_prefix(cache_dir, (path, sample), "bgen", rules)
    cached = _cached(prefix)
    if cached is not None:
        return cached
    header = read_header(path)
    samples = bgen_samples(path, sample)
    infos: list[BgenVariantInfo] = []
    skipped = 0
    for info in scan_variants(header):
        if len(info.alleles) != 2:
            skipped += 1
            continue
        infos.append(info)
    if not infos:
        raise InputError(f"BGEN {str(path)!r} has no biallelic variants")
    variants = [DosageVariant(i.chrom, i.pos, _variant_id(i.rsid or i.variant_id, i.chrom, i.pos, *i.alleles),
                         i.alleles[0], i.alleles[1]) for i in infos]
    return write_dosage_fileset(prefix, samples, variants, iter_dosages(header, infos), path, skipped, rules)


def vcf_dosage(record: Any, field: str, n_samples: int, path: Path) -> np.ndarray:
    """ALT dosages ``(n_samples,)`` float64 of a biallelic record from FORMAT ``DS`` or ``GP`` (NaN missing)."""
    where = f"VCF {str(path)!r} record {record.CHROM}:{record.POS}"
    values = record.format(field)
    if values is None:
        raise InputError(f"{where} has no FORMAT field {field!r} (--vcf-dosage {field})")
    # htslib parses FORMAT floats to float32; the decimal as written (at most 6 decimals, as imputation
    # servers and PLINK 2 write them) is recovered before rounding to PLINK 2's 1/16384 grid, as PLINK 2
    # parses the text (float32's error moves values near a rounding tie to the wrong side).
    values = np.round(np.asarray(values, dtype=np.float64), 6)
    expected = 1 if field == "DS" else 3
    if values.shape != (n_samples, expected):
        raise InputError(f"{where}: FORMAT {field} has shape {values.shape}, expected ({n_samples}, {expected}) "
                         f"for a biallelic diploid record")
    values[values < -1e30] = np.nan  # htslib's missing float (and cyvcf2's int missing) read as NaN
    dosage = values[:, 0] if field == "DS" else values[:, 1] + 2.0 * values[:, 2]
    bad = np.isfinite(dosage) & ((dosage < -1e-6) | (dosage > 2.0 + 1e-6))
    if np.any(bad):
        raise InputError(f"{where}: {field} gives dosage {dosage[np.flatnonzero(bad)[0]]:g}, expected 0..2")
    return np.clip(dosage, 0.0, 2.0)


def import_vcf_dosage(path: Path, field: str, cache_dir: Path, rules: HardCallRules = HardCallRules()) -> DosageImport:
    """Import the ``DS`` or ``GP`` dosages of a VCF/BCF into ``cache_dir`` (PLINK 2's ``--vcf FILE dosage=FIELD``)."""
    if field not in VCF_DOSAGE_FIELDS:
        raise InputError(f"VCF dosage field {field!r} is not one of {list(VCF_DOSAGE_FIELDS)}")
    if not path.exists():
        raise InputError(f"VCF/BCF {str(path)!r} does not exist")
    prefix = _cache_prefix(cache_dir, (path,), field.lower(), rules)
    cached = _cached(prefix)
    if cached is not None:
        return cached
    samples = vcf_samples(path)
    variants: list[DosageVariant] = []
    skipped = 0
    for record in vcf_records(path):  # first pass: which records are biallelic (the .pgen needs the count)
        if len(record.ALT) != 1:
            skipped += 1
            continue
        ref, alt = record.REF, record.ALT[0]
        if not alt or alt == ".":
            raise InputError(f"VCF {str(path)!r} record {record.CHROM}:{record.POS}: no ALT allele")
        variants.append(DosageVariant(record.CHROM, record.POS, _variant_id(record.ID or ".", record.CHROM, record.POS,
                                                                       ref, alt), ref, alt))
    if not variants:
        raise InputError(f"VCF {str(path)!r} has no biallelic records")
    n = len(samples)
    dosages = (vcf_dosage(record, field, n, path) for record in vcf_records(path) if len(record.ALT) == 1)
    return write_dosage_fileset(prefix, samples, variants, dosages, path, skipped, rules)
