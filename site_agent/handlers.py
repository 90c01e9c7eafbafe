"""What a site does for each request, independent of gRPC.

Handlers take validated engine-level requests and yield engine-level events; the servicer only
converts to and from protobuf. Every refusal happens before any genotype is read.
"""

from __future__ import annotations

import logging
import resource
import time
from typing import Callable, Generator, Iterator

import numpy as np

from engine.errors import FedGwasError, InputError, PrivacyError, ProtocolError
from engine.stats.registry import get_statistic
from engine.stats.statistic import SiteStatistic
from engine.cohort.cohort import Cohort
from engine.privacy.protection import make_protector
from engine.privacy.secagg import PairwiseMasker
from engine.tasks import (KEEP_GENOTYPES_PARAMETER, CohortRequest, ResultBlock, SiteDescription, TaskDone, TaskProgress,
                          TaskSpec)
from engine.privacy.protection import Protector
from engine.version import __version__
from engine.stats.pca.kernel import SCORES_PARAMETER
from engine.audit.records import REQUEST_ID_KEY
from engine.privacy import budget
from site_agent import cohort_guard, release, scores
from site_agent.data import SiteData

log = logging.getLogger("site_agent")

TaskEvent = TaskProgress | ResultBlock | TaskDone


def describe(data: SiteData, cohort: CohortRequest, study_id: str = "", requester: str | None = None) -> SiteDescription:
    """The site's self-description for ``cohort`` (sizes only; the manifest is sent separately),
    with the DP budget that remains for ``study_id`` (and ``requester``, when known)."""
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
        budget=budget.remaining(data.ledger, data.config.budget, study=study_id, requester=requester),
    )


def authorise_describe(data: SiteData, study_id: str, requester: str | None) -> None:
    """Refuse (and record in the ledger) a Describe from a requester or for a study the site does not serve."""
    try:
        data.config.access.authorise(data.name, study_id, None, requester)
    except PrivacyError as error:
        data.ledger.append(kind="refused", requester=requester or "", study=study_id, analysis="describe",
                           message=f"{type(error).__name__}: {error}")
        raise


def _authorise(data: SiteData, task: TaskSpec, requester: str) -> None:
    """The site's ``[access]`` rules and the replay rule (site_agent/policy.py, cohort_guard.py)."""
    data.config.access.authorise(data.name, task.study_id, task.analysis, requester)
    cohort_guard.check_not_replayed(data.ledger.entries(), data.name, task.study_id, task.round,
                                    task.parameters.get(REQUEST_ID_KEY, ""))


def _check_cohort(data: SiteData, cohort: Cohort) -> None:
    """Minimum cohort size and the differencing rule, on the cohort after every site filter."""
    access = data.config.access
    access.check_cohort_size(data.name, cohort.n_samples)
    if access.min_cohort_difference > 1 and data.config.ledger is not None:
        cohort_guard.check_and_record_cohort(cohort_guard.registry_path(data.config.ledger), data.name,
                                             cohort.sample_index, cohort.n_in_fam, access.min_cohort_difference)


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
    if SCORES_PARAMETER in task.parameters and not hasattr(get_statistic(task.analysis), "sample_values"):
        raise ProtocolError(f"task.parameters[{SCORES_PARAMETER!r}]: analysis {task.analysis!r} has no sample scores")
    index = task.variant_index
    if index.min() < 0 or index.max() >= data.genotypes.n_variants:
        raise ProtocolError(
            f"task variant_index must lie in [0, {data.genotypes.n_variants}), got [{index.min()}, {index.max()}]"
        )


def _protector(data: SiteData, task: TaskSpec) -> Protector:
    """The task's protector; for "he", only under the key holder's context that this site pinned."""
    masker = None
    if task.privacy in ("secagg", "he"):  # HE uses the pairwise keys for its zero-sum tags
        masker = PairwiseMasker(data.name, data.secagg_key, dict(task.participants))
    he_context = None
    if task.privacy == "he":
        from engine.privacy.he import PublicContext  # imports tenseal: only for HE tasks

        pinned = data.config.he_context_sha256
        if pinned is None:
            raise PrivacyError(f"site {data.name!r} has no pinned key-holder context ([keys] he_context_sha256)")
        he_context = PublicContext(task.privacy_material["he_context"], expected_sha256=pinned)
    # Masks are bound to the request id too: a restarted coordinator reusing round numbers gets fresh masks.
    request_id = task.parameters.get(REQUEST_ID_KEY, "")
    return make_protector(task.privacy, masker=masker, study_id=f"{task.study_id}#{request_id}" if request_id
                          else task.study_id, round_=task.round, he_context=he_context)


def run_task(data: SiteData, task: TaskSpec, is_active: Callable[[], bool] = lambda: True,
             requester: str | None = None) -> Iterator[TaskEvent]:
    """Execute one round of ``task``: per block, the registered analysis, DP noise, then protection.

    Every task is recorded in the site's ledger (site_agent/release.py): refused, or charged against
    the DP budget (durably, before any genotype is read) and then released or aborted. ``requester``
    is the authenticated identity when the transport provides one, else ``task.requester``.
    Stops early, without error, if ``is_active`` turns False (the client went away or its deadline
    passed).
    """
    requester = task.requester if requester is None else requester
    try:
        _check_task(data, task)
        _authorise(data, task, requester)
        analysis = get_statistic(task.analysis)
        cohort = scores.task_cohort(data, task)
        n_design = len(task.cohort.covariates) + 1
        if cohort.n_samples == 0:
            raise InputError(f"site {data.name!r} has no samples with phenotype {task.cohort.phenotype!r} and all covariates")
        _check_cohort(data, cohort)
        protector = _protector(data, task)
        dp_plan = release.plan(task)
    except FedGwasError as error:
        release.record_refusal(data, task, requester, error)
        raise
    guard = release.admit(data, task, dp_plan, cohort.n_samples, requester)
    if guard.check_only:
        yield TaskDone(0, 0, n_design, 0.0, 0)
        return
    with guard:  # leaving it before released() records the task as aborted
        done = yield from _compute(data, task, analysis, guard.clip(cohort), protector, guard, is_active)
        if done is None:
            return
        guard.released()
    yield done


def _compute(data: SiteData, task: TaskSpec, analysis: SiteStatistic, cohort: Cohort, protector: Protector,
             guard: release.ReleaseGuard, is_active: Callable[[], bool]) -> Generator[TaskEvent, None, TaskDone | None]:
    """Blocks of the analysis, noised and protected; returns the summary (``None`` if cancelled)."""
    n_design = len(task.cohort.covariates) + 1
    state = analysis.prepare(cohort, task.inputs)
    per_variant = {name: values for name, values in task.inputs.items() if analysis.inputs[name].per_variant}
    started = time.perf_counter()
    bytes_sent = 0
    scan = getattr(analysis, "scan", None)  # two-pass analyses (PCA): a first pass over every block
    cache = scan is not None or task.parameters.get(KEEP_GENOTYPES_PARAMETER) == "1"
    if scan is not None:
        yield TaskProgress("scanning", 0, task.n_blocks)
        for block in range(task.n_blocks):
            if not is_active():
                log.warning("task %s round %d cancelled by the client at block %d", task.study_id, task.round, block)
                return None
            start, stop = task.block_bounds(block)
            genotypes = data.read_block(task.variant_index[start:stop], cohort.sample_index, cache=True)
            scan(state, genotypes, task.flip[start:stop],
                 {**task.inputs, **{name: values[start:stop] for name, values in per_variant.items()}})
    yield TaskProgress("computing", 0, task.n_blocks)
    for block in range(task.n_blocks):
        if not is_active():
            log.warning("task %s round %d cancelled by the client at block %d", task.study_id, task.round, block)
            return None
        start, stop = task.block_bounds(block)
        # bed-reader reads with several threads but holds the GIL, so reads are not overlapped.
        genotypes = data.read_block(task.variant_index[start:stop], cohort.sample_index, cache=cache,
                                    dosage=getattr(analysis, "dosage", False))
        inputs = {**task.inputs, **{name: values[start:stop] for name, values in per_variant.items()}}
        values = analysis.block(state, genotypes, task.flip[start:stop], inputs)
        if getattr(analysis, "uses_genotypes", True):  # rows of a genotype-free statistic are not per variant
            values = cohort_guard.suppress_rare(values, genotypes, data.config.access.min_allele_count)
        values = guard.noise(values)
        payload = protector.protect(block, values)
        bytes_sent += len(payload)
        result = ResultBlock(block, start, stop - start, values.shape[1], protector.encoding, payload)
        guard.sent(result)
        yield result
    if SCORES_PARAMETER in task.parameters:  # the site keeps its PCA scores; they never leave it
        scores.keep(data, task, cohort, analysis.sample_values(state))  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log.info("task %s round %d: %d variants in %d blocks, %.2f s, peak RSS %.0f MiB", task.study_id,
             task.round, task.n_variants, task.n_blocks, elapsed, peak_mib)
    return TaskDone(cohort.n_samples, task.n_blocks, n_design, elapsed, bytes_sent)
