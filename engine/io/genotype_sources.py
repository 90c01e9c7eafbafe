"""Genotype sources other than PLINK 1: PLINK 2 .pgen/.pvar/.psam and VCF/BCF.

Every source offers what the site needs from :class:`engine.io.plink.BedFile`: ``fam`` (sample IDs),
``manifest`` (variants with ``allele1`` = the counted allele), ``n_samples``, ``n_variants``,
``genotype_format`` and ``read_block(variant_index, sample_index)`` returning int8 allele counts of
shape ``(n_samples, n_variants)`` in Fortran order with -127 for a missing call. Sources with dosages
(``has_dosages``) also offer ``read_dosages`` with the same shape, float32, NaN for a missing dosage.

* ``.pgen`` is read with pgenlib; the counted allele is ALT (``allele1`` = ALT, ``allele2`` = REF, as
  a .bim has ALT in column 5). Multi-allelic variants are left out of the manifest and reported.
* BGEN, and VCF/BCF dosages (``DS``/``GP``), are imported once into a cached ``.pgen`` with dosages
  (:mod:`engine.io.dosage`) and read as ``.pgen``.
* VCF/BCF hard calls (``GT``) are imported once (like ``plink2 --vcf``) into a PLINK 1 fileset in a cache directory, keyed
  by the file's size and modification time, then read as a .bed. Multi-allelic records are skipped
  and counted; malformed records stop the import with the record's position.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from engine.io.bed_writer import BedWriter, write_bim, write_fam
from engine.errors import InputError
from engine.cohort.harmonise import VariantManifest
from engine.io.bgen import bgen_samples
from engine.io.dosage import DosageImport, import_bgen, import_vcf_dosage
from engine.io.hard_calls import HardCallRules
from engine.io.vcf import vcf_records, vcf_samples
from engine.io.plink import BedFile, FamTable, MISSING_INT8

log = logging.getLogger("engine")

FORMATS = ("plink1", "pgen", "vcf", "bgen")
#: ``genotype_format`` of the sources that read dosages (a VCF read through ``DS``/``GP`` reports "vcf-dosage").
DOSAGE_FORMATS = ("pgen", "bgen", "vcf-dosage")


class GenotypeSource(Protocol):
    fam: FamTable
    manifest: VariantManifest
    genotype_format: str

    @property
    def n_samples(self) -> int: ...

    @property
    def n_variants(self) -> int: ...

    def read_block(self, variant_index: np.ndarray | slice, sample_index: np.ndarray | None = None) -> np.ndarray: ...


def has_dosages(source: GenotypeSource) -> bool:
    """True when ``source`` reads dosages (``read_dosages``) besides hard calls."""
    return bool(getattr(source, "has_dosages", False))


def _read_psam(path: Path) -> FamTable:
    """A .psam (``#FID IID ...`` or ``#IID ...`` header, optional SEX column) or a .fam."""
    try:
        lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise InputError(f".psam file {str(path)!r} does not exist") from None
    if not lines or not lines[0][0].startswith("#"):
        from engine.io.plink import read_fam  # a headerless .psam is a .fam
        return read_fam(path)
    header = [lines[0][0].lstrip("#")] + lines[0][1:]
    if "IID" not in header:
        raise InputError(f".psam file {str(path)!r}: header {lines[0]} has no IID column")
    rows = lines[1:]
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise InputError(f".psam file {str(path)!r} line {number}: expected {len(header)} columns, found {len(row)}")
    table = np.array(rows, dtype=str).reshape(len(rows), len(header))
    iid = table[:, header.index("IID")]
    fid = table[:, header.index("FID")] if "FID" in header else iid.copy()
    sex_text = table[:, header.index("SEX")] if "SEX" in header else np.full(len(rows), "0")
    sex = np.where(sex_text == "1", 1, np.where(sex_text == "2", 2, 0)).astype(np.int8)
    return FamTable(fid=fid, iid=iid, sex=sex, source=str(path))


class PgenFile:
    """A PLINK 2 fileset ``prefix.pgen/.pvar/.psam`` read with pgenlib (biallelic variants only)."""

    genotype_format = "pgen"
    #: Dosages are read where the .pgen stores them (hard calls elsewhere, as 0/1/2).
    has_dosages = True

    def __init__(self, prefix: Path | str) -> None:
        import pgenlib  # only sites with .pgen data need it

        prefix = Path(prefix)
        if prefix.suffix in (".pgen", ".pvar", ".psam"):
            prefix = prefix.with_suffix("")
        self.pgen_path, pvar_path, psam_path = (Path(f"{prefix}{e}") for e in (".pgen", ".pvar", ".psam"))
        for path in (self.pgen_path, pvar_path, psam_path):
            if not path.exists():
                raise InputError(f"PLINK 2 file {str(path)!r} does not exist")
        self.fam = _read_psam(psam_path)
        try:
            pvar = pgenlib.PvarReader(bytes(pvar_path))
            self._reader = pgenlib.PgenReader(bytes(self.pgen_path), raw_sample_ct=len(self.fam), pvar=pvar)
        except RuntimeError as exc:
            raise InputError(f"cannot open {str(self.pgen_path)!r}: {exc}") from None
        n = pvar.get_variant_ct()
        allele_counts = np.diff(pvar.get_allele_idx_offsets().astype(np.int64))
        self._rows = np.flatnonzero(allele_counts == 2)  # manifest row -> .pgen variant index
        self.multiallelic_skipped = int(n - len(self._rows))
        if self.multiallelic_skipped:
            log.warning("%s: %d multi-allelic variants skipped", pvar_path, self.multiallelic_skipped)
        rows = self._rows.tolist()
        self.manifest = VariantManifest(
            chrom=np.array([pvar.get_variant_chrom(i).decode() for i in rows], dtype=str),
            pos=np.array([pvar.get_variant_pos(i) for i in rows], dtype=np.int64),
            variant_id=np.array([pvar.get_variant_id(i).decode() for i in rows], dtype=str),
            allele1=np.array([pvar.get_allele_code(i, 1).decode() for i in rows], dtype=str),
            allele2=np.array([pvar.get_allele_code(i, 0).decode() for i in rows], dtype=str),
        )
        self._subset: tuple[int, ...] | None = None

    @property
    def n_samples(self) -> int:
        return len(self.fam)

    @property
    def n_variants(self) -> int:
        return len(self._rows)

    def _select(self, variant_index: np.ndarray | slice, sample_index: np.ndarray | None) -> tuple[np.ndarray, int]:
        """pgen rows of ``variant_index`` and the number of selected samples (sets pgenlib's subset)."""
        key = None if sample_index is None or len(sample_index) == self.n_samples else tuple(sample_index.tolist())
        if key != self._subset:
            subset = None if key is None else np.asarray(sample_index, dtype=np.uint32)
            self._reader.change_sample_subset(subset)
            self._subset = key
        return self._rows[variant_index].astype(np.uint32), self.n_samples if key is None else len(key)

    def read_block(self, variant_index: np.ndarray | slice, sample_index: np.ndarray | None = None) -> np.ndarray:
        """int8 ALT hard calls ``(n_selected_samples, n_selected_variants)``, Fortran order, -127 missing."""
        rows, n_selected = self._select(variant_index, sample_index)
        out = np.empty((len(rows), n_selected), dtype=np.int8)
        self._reader.read_list(rows, out)
        out[out == -9] = MISSING_INT8
        return out.T  # (samples, variants), Fortran order

    def read_dosages(self, variant_index: np.ndarray | slice, sample_index: np.ndarray | None = None) -> np.ndarray:
        """float32 ALT dosages ``(n_selected_samples, n_selected_variants)``, Fortran order, NaN missing.

        Exact: PLINK 2 stores dosages in units of 1/16384, which float32 represents exactly.
        """
        rows, n_selected = self._select(variant_index, sample_index)
        out = np.empty((len(rows), n_selected), dtype=np.float32)
        self._reader.read_dosages_list(rows, out)
        out[out == -9] = np.nan
        return out.T

    def close(self) -> None:
        self._reader.close()


@dataclass(frozen=True)
class VcfImport:
    """What importing a VCF produced: the cached PLINK 1 prefix and what was skipped."""

    prefix: Path
    n_variants: int
    multiallelic_skipped: int


def _vcf_records(path: Path) -> Iterator[tuple[str, int, str, str, str, np.ndarray]]:
    for record in vcf_records(path, gts012=True):
        try:  # (cyvcf2's record.FORMAT crashes the process on such a record; gt_types raises)
            gt_types = record.gt_types
        except Exception:  # cyvcf2 raises a bare Exception when a record has no GT
            raise InputError(f"VCF {str(path)!r} record {record.CHROM}:{record.POS} has no GT field: for a "
                             f"dosage-only VCF give the dosage field (--vcf-dosage DS or GP; site config "
                             f"vcf_dosage = \"DS\")") from None
        yield record.CHROM, record.POS, record.ID or ".", record.REF, ",".join(record.ALT), gt_types




def import_vcf(path: Path, cache_dir: Path, block: int = 4096) -> VcfImport:
    """Import ``path`` into ``cache_dir`` as a PLINK 1 fileset counting ALT (reused while unchanged)."""
    if not path.exists():
        raise InputError(f"VCF/BCF {str(path)!r} does not exist")
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    prefix = cache_dir / f"{path.name.split('.')[0]}-{key}"
    marker = Path(f"{prefix}.import.json")
    if marker.exists():
        info = json.loads(marker.read_text())
        return VcfImport(prefix, info["n_variants"], info["multiallelic_skipped"])
    cache_dir.mkdir(parents=True, exist_ok=True)
    samples = vcf_samples(path)
    columns: dict[str, list] = {k: [] for k in ("chrom", "pos", "id", "alt", "ref")}
    skipped = 0
    pending: list[np.ndarray] = []
    codes = np.array([0, 1, 2, MISSING_INT8], dtype=np.int8)  # cyvcf2 gts012: HOM_REF, HET, HOM_ALT, UNKNOWN
    with BedWriter(Path(f"{prefix}.bed.partial"), len(samples.iid)) as writer:
        for chrom, pos, variant_id, ref, alt, gt_types in _vcf_records(path):
            if "," in alt:
                skipped += 1
                continue
            if not alt or alt == ".":
                raise InputError(f"VCF {str(path)!r} record {chrom}:{pos}: no ALT allele (monomorphic sites need an ALT)")
            if len(gt_types) != len(samples.iid):
                raise InputError(f"VCF {str(path)!r} record {chrom}:{pos}: {len(gt_types)} genotypes for {len(samples.iid)} samples")
            for key_, value in zip(("chrom", "pos", "id", "alt", "ref"), (chrom, pos, variant_id, alt, ref)):
                columns[key_].append(value)
            pending.append(codes[np.asarray(gt_types, dtype=np.int64)])
            if len(pending) == block:
                writer.write_block(np.column_stack(pending))
                pending = []
        if pending:
            writer.write_block(np.column_stack(pending))
    if not columns["pos"]:
        raise InputError(f"VCF {str(path)!r} has no biallelic records")
    ids = np.array(columns["id"], dtype=object)
    missing_id = ids == "."
    ids[missing_id] = [f"{c}:{p}:{r}:{a}" for c, p, r, a in zip(np.array(columns["chrom"])[missing_id],
                                                              np.array(columns["pos"])[missing_id],
                                                              np.array(columns["ref"])[missing_id],
                                                              np.array(columns["alt"])[missing_id])]
    write_fam(Path(f"{prefix}.fam"), samples.fid, samples.iid, samples.sex)
    write_bim(Path(f"{prefix}.bim"), np.array(columns["chrom"]), ids.astype(str), np.array(columns["pos"]),
              np.array(columns["alt"]), np.array(columns["ref"]))
    Path(f"{prefix}.bed.partial").replace(f"{prefix}.bed")
    marker.write_text(json.dumps({"source": str(path), "n_variants": len(columns["pos"]),
                                  "multiallelic_skipped": skipped}))
    if skipped:
        log.warning("%s: %d multi-allelic records skipped", path, skipped)
    return VcfImport(prefix, len(columns["pos"]), skipped)


class VcfFile(BedFile):
    """A VCF/BCF, imported once into a cached PLINK 1 fileset and read from there."""

    genotype_format = "vcf"

    def __init__(self, path: Path | str, cache_dir: Path, num_threads: int | None = None) -> None:
        self.vcf_path = Path(path)
        self.imported = import_vcf(self.vcf_path, cache_dir)
        self.multiallelic_skipped = self.imported.multiallelic_skipped
        super().__init__(self.imported.prefix, num_threads=num_threads)


class DosagePgenFile(PgenFile):
    """A BGEN or a VCF's dosages (``DS``/``GP``), imported once into a cached ``.pgen`` (:mod:`engine.io.dosage`).

    Hard calls follow ``rules.hard_call_threshold``: the stored ones (PLINK 2's default 0.1, what
    pgenlib's writer stores) or, for another threshold, the ones PLINK 2's import would store, made
    from the dosages as they are read.
    """

    def __init__(self, imported: DosageImport, genotype_format: str, rules: HardCallRules = HardCallRules()) -> None:
        super().__init__(imported.prefix)
        self.genotype_format = genotype_format
        self.multiallelic_skipped = imported.multiallelic_skipped
        self.rules = rules

    def read_block(self, variant_index: np.ndarray | slice, sample_index: np.ndarray | None = None) -> np.ndarray:
        """int8 ALT hard calls ``(n_selected_samples, n_selected_variants)``, Fortran order, -127 missing."""
        if self.rules.default_hard_calls:
            return super().read_block(variant_index, sample_index)
        return np.asfortranarray(self.rules.hard_calls(self.read_dosages(variant_index, sample_index)))


def open_genotypes(fmt: str, path: Path, cache_dir: Path, num_threads: int | None = None,
                   sample: Path | None = None, vcf_dosage: str | None = None,
                   hard_calls: HardCallRules = HardCallRules()) -> GenotypeSource:
    """The genotype source for a site's configured format (``plink1``, ``pgen``, ``vcf`` or ``bgen``).

    ``sample`` is a BGEN's ``.sample`` file (None: the IDs embedded in the BGEN); ``vcf_dosage``
    (``DS`` or ``GP``) reads a VCF's dosages instead of its ``GT`` hard calls; ``hard_calls`` are the
    hard-call rules of a BGEN or dosage-VCF import (PLINK 2 applies none to a ``.pgen`` it reads).
    """
    hard_calls.check_applies(fmt, vcf_dosage)
    if fmt == "plink1":
        return BedFile(path, num_threads=num_threads)
    if fmt == "pgen":
        return PgenFile(path)
    if fmt == "vcf" and vcf_dosage:
        return DosagePgenFile(import_vcf_dosage(path, vcf_dosage, cache_dir, hard_calls), "vcf-dosage", hard_calls)
    if fmt == "vcf":
        return VcfFile(path, cache_dir, num_threads=num_threads)
    if fmt == "bgen":
        return DosagePgenFile(import_bgen(path, sample, cache_dir, hard_calls), "bgen", hard_calls)
    raise InputError(f"genotype format {fmt!r} is not one of {list(FORMATS)}")


def sample_ids(fmt: str, path: Path, sample: Path | None = None) -> FamTable:
    """Sample IDs of a genotype file without opening the genotypes (for splitting phenotype files)."""
    if fmt == "bgen":
        return bgen_samples(path, sample)
    if fmt == "plink1":
        from engine.io.plink import bfile_paths, read_fam
        return read_fam(bfile_paths(path)[2])
    if fmt == "pgen":
        prefix = path.with_suffix("") if path.suffix in (".pgen", ".pvar", ".psam") else path
        return _read_psam(Path(f"{prefix}.psam"))
    if fmt == "vcf":
        return vcf_samples(path)
    raise InputError(f"genotype format {fmt!r} is not one of {list(FORMATS)}")
