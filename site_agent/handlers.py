"""What a site does for each request, independent of gRPC.

Handlers take validated engine-level requests and yield engine-level events; the servicer only
converts to and from protobuf. Every refusal happens before any genotype is read.
"""

from __future__ import annotations

import logging
import resource
import time
from typing import Callable, Iterator

import numpy as np

from engine.errors import InputError, PrivacyError, ProtocolError
from engine.analyses import get_analysis
from engine.protection import make_protector
from engine.secagg import PairwiseMasker
from engine.tasks import CohortRequest, ResultBlock, SiteDescription, TaskDone, TaskProgress, TaskSpec
from engine.version import __version__
from site_agent.data import SiteData

log = logging.getLogger("site_agent")

TaskEvent = TaskProgress | ResultBlock | TaskDone


def describe(data: SiteData, cohort: CohortRequest) -> SiteDescription:
    """The site's self-description for ``cohort`` (sizes only; the manifest is sent separately)."""
    selected = data.cohort(cohort)
    return SiteDescription(
        site_name=data.name,
        software_version=__version__,
        n_samples_total=data.genotypes.n_samples,
        n_samples_analysed=selected.n_samples,
        n_variants=data.genotypes.n_variants,
        secagg_public_key=data.secagg_public_key,
        privacy_modes=data.config.privacy_modes,
        genotype_format=data.genotypes.genotype_format,
    )


def _check_task(data: SiteData, task: TaskSpec) -> None:
    if task.privacy not in data.config.privacy_modes:
        raise PrivacyError(
            f"site {data.name!r} does not accept privacy mode {task.privacy!r}; it accepts {list(data.config.privacy_modes)}"
        )
    names = [name for name, _ in task.participants]
    if data.name not in names:
        raise ProtocolError(f"site {data.name!r} is not among the task's participants {names}")
    if len(names) < data.config.min_participants:
        raise PrivacyError(
            f"site {data.name!r} requires at least {data.config.min_participants} participating sites, "
            f"the task lists {len(names)}"
        )
    index = task.variant_index
    if index.min() < 0 or index.max() >= data.genotypes.n_variants:
        raise ProtocolError(
            f"task variant_index must lie in [0, {data.genotypes.n_variants}), got [{index.min()}, {index.max()}]"
        )


def run_task(data: SiteData, task: TaskSpec, is_active: Callable[[], bool] = lambda: True) -> Iterator[TaskEvent]:
    """Execute one round of ``task``: per block, the registered analysis, then protection.

    Stops early, without error, if ``is_active`` turns False (the client went away or its deadline
    passed).
    """
    _check_task(data, task)
    analysis = get_analysis(task.analysis)
    cohort = data.cohort(task.cohort)
    n_design = len(task.cohort.covariates) + 1
    if cohort.n_samples == 0:
        raise InputError(f"site {data.name!r} has no samples with phenotype {task.cohort.phenotype!r} and all covariates")
    masker = None
    if task.privacy == "secagg":
        masker = PairwiseMasker(data.name, data.secagg_key, dict(task.participants))
    protector = make_protector(task.privacy, masker=masker, study_id=task.study_id, round_=task.round)
    state = analysis.prepare(cohort, task.inputs)
    per_variant = {name: values for name, values in task.inputs.items() if analysis.inputs[name].per_variant}
    started = time.perf_counter()
    bytes_sent = 0
    yield TaskProgress("computing", 0, task.n_blocks)
    for block in range(task.n_blocks):
        if not is_active():
            log.warning("task %s round %d cancelled by the client at block %d", task.study_id, task.round, block)
            return
        start, stop = task.block_bounds(block)
        # bed-reader reads with several threads but holds the GIL, so reads are not overlapped.
        genotypes = data.genotypes.read_block(task.variant_index[start:stop], cohort.sample_index)
        inputs = {**task.inputs, **{name: values[start:stop] for name, values in per_variant.items()}}
        values = analysis.block(state, genotypes, task.flip[start:stop], inputs)
        payload = protector.protect(block, values)
        bytes_sent += len(payload)
        yield ResultBlock(block, start, stop - start, values.shape[1], protector.encoding, payload)
    elapsed = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log.info("task %s round %d: %d variants in %d blocks, %.2f s, peak RSS %.0f MiB", task.study_id,
             task.round, task.n_variants, task.n_blocks, elapsed, peak_mib)
    yield TaskDone(cohort.n_samples, task.n_blocks, n_design, elapsed, bytes_sent)
