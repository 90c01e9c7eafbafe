"""Federated QC: pooled genotype counts, PLINK 2's QC reports and filters, PLINK 1.9's allelic test.

What leaves a site is one row of genotype counts per variant (``engine.stats.qc.counts.QcStatistic``), aggregated
under the study's privacy mode like any other statistic; the coordinator only sees the pooled
counts. Per-sample missingness (``.smiss``) is not computed here: it stays at each site.

Sex chromosomes as PLINK 2: one more ``qc`` round on the chrX/chrY/MT variants returns their counts
split by .fam sex, from which :func:`engine.sex_chromosomes.counts_by_class` gives PLINK 2's haploid
counts (``HAP_*`` in ``.gcount``, one allele per haploid call in ``.afreq``, chrY over males only in
``.vmiss``); ``.hardy`` leaves them out and ``.hardy.x`` tests chrX with females and males
(Graffelman-Weir), which is also what ``--hwe`` uses there (chrY and MT are not tested).

The order follows PLINK 2: the ``.afreq``/``.acount``/``.gcount``/``.vmiss`` reports cover every
harmonised variant; ``--geno`` is applied, then the ``.hardy`` report is written (so it lists the
variants that pass ``--geno``, as PLINK 2's does), then ``--hwe`` and ``--maf``. Association runs
on the variants that pass all three.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coordinator.results.dosage_files import write_dosage_afreq
from coordinator.results.qc_files import write_afreq, write_assoc, write_gcount, write_hardy, write_hardy_x, write_vmiss
from coordinator.rounds import RoundExecutor
from coordinator.study import QC_OUTPUT_NAME, QcSettings, StudyConfig
from engine.stats.qc.allelic import AllelicTest, allelic_test, minor_is_effect
from engine.errors import InputError
from engine.cohort.harmonise import Harmonisation, SiteAlignment
from engine.cohort.sex_chromosomes import AUTOSOMAL, X, chromosome_class, counts_by_class, x_hwe_neg_log10_p
from engine.io.genotype_sources import DOSAGE_FORMATS
from engine.stats.qc.counts import BY_SEX_INPUT, COUNT_COLUMNS, GenotypeCounts, VariantFilter, variant_filter
from engine.stats.qc.dosage import SUM_COLUMNS, DosageSums, dosage_filters, sums_by_class
from engine.tasks import CohortRequest

log = logging.getLogger("coordinator")

#: File extension written for each QC output name.
QC_EXTENSIONS = {"freq": "afreq", "freq-counts": "acount", "geno-counts": "gcount", "missing": "vmiss",
                 "hardy": "hardy", "freq-machr2": "afreq"}


@dataclass(frozen=True)
class SexChromosomeCounts:
    """chrX inputs of ``.hardy.x`` and chrX's HWE -log10 p (rows ``x_rows`` of the harmonised variants)."""

    x_rows: np.ndarray
    female: GenotypeCounts  # diploid counts of females only
    male_effect: np.ndarray
    male_other: np.ndarray


def _with_sex_chromosomes(executor: RoundExecutor, counts: GenotypeCounts) -> tuple[GenotypeCounts, SexChromosomeCounts | None]:
    """``counts`` with the chrX/Y/MT rows recounted by PLINK 2's haploid rules (one ``qc`` round by sex)."""
    kind = chromosome_class(executor.harmonised.variants.chrom)
    rows = np.flatnonzero(kind != AUTOSOMAL)
    if len(rows) == 0:
        return counts, None
    totals = executor.run("qc", 3 * len(COUNT_COLUMNS), cohort=CohortRequest(""), variants=rows,
                          inputs={BY_SEX_INPUT: np.ones(1)})
    groups = [np.asarray(totals[:, 4 * g: 4 * g + 4]) for g in range(3)]  # males, females, unknown
    for group in range(3):
        GenotypeCounts.from_totals(totals, group)  # validates the totals are counts
    mapped = counts_by_class(kind[rows], *groups)
    fields = {}
    for name in ("hom_effect", "het", "hom_other", "missing", "hap_effect", "hap_other", "hap_het"):
        column = np.array(getattr(counts, name), dtype=np.int64, copy=True)
        column[rows] = mapped[name]
        fields[name] = column
    x = kind[rows] == X
    sex = SexChromosomeCounts(
        x_rows=rows[x],
        female=GenotypeCounts(mapped["female_hom_effect"][x], mapped["female_het"][x], mapped["female_hom_other"][x],
                              np.zeros(int(x.sum()), dtype=np.int64)),
        male_effect=mapped["male_effect"][x], male_other=mapped["male_other"][x])
    return GenotypeCounts(**fields), sex


def _hwe_neg_log10_p(counts: GenotypeCounts, sex: SexChromosomeCounts | None, kind: np.ndarray,
                     midp: bool) -> np.ndarray | None:
    """Per-variant HWE -log10 p with PLINK 2's sex-chromosome rules (None: no sex chromosome)."""
    if sex is None:
        return None
    out = np.full(len(counts), np.nan)
    auto = np.flatnonzero((kind == AUTOSOMAL) & (counts.n_observed > 0))
    out[auto] = counts.take(auto).hwe_neg_log10_p(midp=midp)
    out[sex.x_rows] = x_hwe_neg_log10_p(sex.female.hom_other, sex.female.het, sex.female.hom_effect,
                                        sex.male_other, sex.male_effect, midp=midp)
    return out


@dataclass(frozen=True)
class QcOutcome:
    """Pooled counts over every sample (all harmonised variants), the filter, and the files written."""

    counts: GenotypeCounts
    filter: VariantFilter | None
    files: dict[str, Path]

    @property
    def keep(self) -> np.ndarray:
        return self.filter.keep if self.filter is not None else np.ones(len(self.counts), dtype=bool)


def pooled_counts(executor: RoundExecutor, cohort: CohortRequest | None = None,
                  variants: np.ndarray | None = None) -> tuple[GenotypeCounts, ...]:
    """One ``qc`` round: pooled counts over every sample, or (controls, cases) with a phenotype."""
    cohort = cohort or CohortRequest("")
    groups = 2 if cohort.phenotype else 1
    totals = executor.run("qc", len(COUNT_COLUMNS) * groups, cohort=cohort, variants=variants)
    return tuple(GenotypeCounts.from_totals(totals, group) for group in range(groups))


def _needs_dosage_sums(executor: RoundExecutor, settings: QcSettings) -> bool:
    """Whether PLINK 2 would use dosages here: frequencies or ``--maf`` with a site that has dosages,
    or MaCH R2 (reported or filtered)."""
    dosage_sites = any(d.genotype_format in DOSAGE_FORMATS for d in executor.descriptions.values())
    frequencies = bool({"freq", "freq-counts"} & set(settings.outputs)) or settings.maf is not None
    return (dosage_sites and frequencies) or settings.mach_r2 is not None or "freq-machr2" in settings.outputs


def _dosage_sums(executor: RoundExecutor) -> DosageSums:
    """Pooled dosage sums over every sample; the chrX/Y/MT rows recounted by PLINK 2's haploid rules from
    one more ``dosage_sums`` round split by sex (:func:`engine.stats.qc.dosage.sums_by_class`)."""
    sums = DosageSums.from_totals(executor.run("dosage_sums", len(SUM_COLUMNS), cohort=CohortRequest("")))
    kind = chromosome_class(executor.harmonised.variants.chrom)
    rows = np.flatnonzero(kind != AUTOSOMAL)
    if len(rows) == 0:
        return sums
    by_sex = executor.run("dosage_sums", 3 * len(SUM_COLUMNS), cohort=CohortRequest(""), variants=rows,
                          inputs={BY_SEX_INPUT: np.ones(1)})
    return sums_by_class(sums, rows, kind[rows], by_sex)


def run_qc(executor: RoundExecutor, settings: QcSettings, out_dir: Path, name: str = QC_OUTPUT_NAME) -> QcOutcome:
    """Count genotypes over every sample, write the requested reports, evaluate the filters.

    Hard-call reports and filters come from the ``qc`` round's counts; with dosage data, frequencies,
    ``--maf`` and MaCH R2 come from one more round of dosage sums (``dosage_sums``), as PLINK 2 uses
    dosages for them.
    """
    (counts,) = pooled_counts(executor)
    counts, sex = _with_sex_chromosomes(executor, counts)
    sums = _dosage_sums(executor) if _needs_dosage_sums(executor, settings) else None
    variants = executor.harmonised.variants
    kind = chromosome_class(variants.chrom)
    files: dict[str, Path] = {}

    def path(output: str) -> Path:
        files[output] = out_dir / f"{name}.{QC_EXTENSIONS[output]}"
        return files[output]

    if sums is not None:
        for output in ("freq", "freq-counts", "freq-machr2"):
            if output in settings.outputs:
                write_dosage_afreq(path(output), variants, sums, as_counts=output == "freq-counts",
                                   mach_r2=output == "freq-machr2")
    elif "freq" in settings.outputs:
        write_afreq(path("freq"), variants, counts)
    if sums is None and "freq-counts" in settings.outputs:
        write_afreq(path("freq-counts"), variants, counts, as_counts=True)
    if "geno-counts" in settings.outputs:
        write_gcount(path("geno-counts"), variants, counts)
    if "missing" in settings.outputs:
        write_vmiss(path("missing"), variants, counts)
    if "hardy" in settings.outputs:
        passed = variant_filter(counts, geno=settings.geno).keep
        diploid = passed & (kind == AUTOSOMAL)
        write_hardy(path("hardy"), variants.take(diploid), counts.take(diploid), midp=settings.hardy_midp)
        if sex is not None and len(sex.x_rows):
            x_passed = passed[sex.x_rows]
            files["hardy.x"] = write_hardy_x(out_dir / f"{name}.hardy.x", variants.take(sex.x_rows[x_passed]),
                                             sex.female.take(x_passed), sex.male_effect[x_passed],
                                             sex.male_other[x_passed], midp=settings.hardy_midp)
    result = None
    if settings.filters:
        result = variant_filter(counts, maf=settings.maf if sums is None else None, geno=settings.geno,
                                hwe=settings.hwe, hwe_midp=settings.hwe_midp,
                                hwe_neg_log10_p=_hwe_neg_log10_p(counts, sex, kind, settings.hwe_midp)
                                if settings.hwe is not None else None)
        if sums is not None:
            result = dosage_filters(result, sums, settings.maf, settings.mach_r2)
        log.info("QC filters %s dropped %s of %d variants", settings.filters, result.dropped, len(counts))
    return QcOutcome(counts=counts, filter=result, files=files)


def restrict(harmonised: Harmonisation, keep: np.ndarray) -> Harmonisation:
    """The harmonised variants where ``keep`` (bool ``(m,)``) holds, with every site's alignment."""
    return Harmonisation(
        variants=harmonised.variants.take(keep),
        alignments=tuple(SiteAlignment(index=a.index[keep], flip=a.flip[keep]) for a in harmonised.alignments),
        dropped=harmonised.dropped, id_mismatches=harmonised.id_mismatches)


def assoc_cohort(config: StudyConfig) -> CohortRequest:
    """The case/control cohort of the allelic test: the phenotype only (no covariates), 1/2 coded
    unless the study reads it as 0/1."""
    coding = config.cohort.phenotype_coding
    return CohortRequest(config.cohort.phenotype, (), coding if coding != "quantitative" else "case-control",
                         missing_value=config.cohort.missing_value)


def run_assoc(executor: RoundExecutor, config: StudyConfig, all_samples: GenotypeCounts) -> tuple[AllelicTest, Path]:
    """PLINK 1.9's allelic test on the executor's (filtered) variants; writes ``NAME.assoc``.

    ``all_samples`` are the pooled counts over every sample of the same variants (A1 is their
    minor allele).

    Raises
    ------
    InputError
        If the pooled phenotype has no cases or no controls.
    """
    controls, cases = pooled_counts(executor, assoc_cohort(config))
    n_cases, n_controls = (int(c.n_samples.max(initial=0)) for c in (cases, controls))
    if n_cases == 0 or n_controls == 0:
        raise InputError(f"phenotype {config.cohort.phenotype!r} has {n_cases} cases and {n_controls} controls "
                         "over all sites: the allelic test needs both")
    log.info("allelic test: %d cases, %d controls", n_cases, n_controls)
    test = allelic_test(cases, controls, minor_is_effect(all_samples))
    variants = executor.harmonised.variants
    path = write_assoc(config.out_dir / f"{config.output_name}.assoc", variants, variants.pos, test)
    return test, path
