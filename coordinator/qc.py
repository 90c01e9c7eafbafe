"""Federated QC: pooled genotype counts, PLINK 2's QC reports and filters, PLINK 1.9's allelic test.

What leaves a site is one row of genotype counts per variant (``engine.stats.qc.counts.QcStatistic``), aggregated
under the study's privacy mode like any other statistic; the coordinator only sees the pooled
counts. Per-sample missingness (``.smiss``) is not computed here: it stays at each site.

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
from coordinator.results.qc_files import write_afreq, write_assoc, write_gcount, write_hardy, write_vmiss
from coordinator.rounds import RoundExecutor
from coordinator.study import QC_OUTPUT_NAME, QcSettings, StudyConfig
from engine.stats.qc.allelic import AllelicTest, allelic_test, minor_is_effect
from engine.errors import InputError
from engine.cohort.harmonise import Harmonisation, SiteAlignment
from engine.io.genotype_sources import DOSAGE_FORMATS
from engine.stats.qc.counts import COUNT_COLUMNS, GenotypeCounts, VariantFilter, variant_filter
from engine.stats.qc.dosage import SUM_COLUMNS, DosageSums, dosage_filters
from engine.tasks import CohortRequest

log = logging.getLogger("coordinator")

#: File extension written for each QC output name.
QC_EXTENSIONS = {"freq": "afreq", "freq-counts": "acount", "geno-counts": "gcount", "missing": "vmiss",
                 "hardy": "hardy", "freq-machr2": "afreq"}


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


def run_qc(executor: RoundExecutor, settings: QcSettings, out_dir: Path, name: str = QC_OUTPUT_NAME) -> QcOutcome:
    """Count genotypes over every sample, write the requested reports, evaluate the filters.

    Hard-call reports and filters come from the ``qc`` round's counts; with dosage data, frequencies,
    ``--maf`` and MaCH R2 come from one more round of dosage sums (``dosage_sums``), as PLINK 2 uses
    dosages for them.
    """
    (counts,) = pooled_counts(executor)
    sums = None
    if _needs_dosage_sums(executor, settings):
        sums = DosageSums.from_totals(executor.run("dosage_sums", len(SUM_COLUMNS), cohort=CohortRequest("")))
    variants = executor.harmonised.variants
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
        write_hardy(path("hardy"), variants.take(passed), counts.take(passed), midp=settings.hardy_midp)
    result = None
    if settings.filters:
        result = variant_filter(counts, maf=settings.maf if sums is None else None, geno=settings.geno,
                                hwe=settings.hwe, hwe_midp=settings.hwe_midp)
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
    return CohortRequest(config.cohort.phenotype, (), coding if coding != "quantitative" else "case-control")


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
