"""What a site does for each request, independent of gRPC.

Handlers take validated engine-level requests and yield engine-level events; the servicer only
converts to and from protobuf. Every refusal happens before any genotype is read.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import time
from typing import TYPE_CHECKING, Callable, Generator, Iterator, Protocol, Sequence


from engine.errors import FedGwasError, InputError, PrivacyError, ProtocolError
from engine.stats.registry import get_statistic
from engine.stats.statistic import SiteStatistic
from engine.cohort import overlap
from engine.cohort.cohort import Cohort
from engine.io.genotype_sources import has_dosages
from engine.privacy.dp_release import CHECK_PHASE, PHASE_KEY
from engine.privacy.secure_round import (EncryptedShare, KeyAdvertisement, OutgoingShares, ShareReveal, SiteRound,
                                         SurvivorSignature, task_digest)
from engine.privacy.protection import Protector, make_protector
from engine.tasks import (DROP_SHARED_PARAMETER, KEEP_GENOTYPES_PARAMETER, CohortRequest, ResultBlock, SiteDescription, TaskDone, TaskProgress,
                          TaskSpec)
from engine.version import __version__
from engine.stats.pca.kernel import SCORES_PARAMETER
from engine.privacy import budget
from engine.privacy import roster as roster_module
from site_agent import cohort_guard, release, scores
from site_agent.compute.jobs import TaskContext
from site_agent.compute.pieces import join_pieces, task_pieces
from site_agent.data import SiteData
from engine.audit.ledger import canonical_json
from site_agent.release_registry import ReleaseRegistry, registry_path, statistic_keys

if TYPE_CHECKING:
    from engine.privacy.he import PublicContext

log = logging.getLogger("site_agent")

#: Privacy modes whose rounds run the signed key exchange against the roster.
SECURE_MODES = ("secagg", "he")


TaskEvent = TaskProgress | ResultBlock | TaskDone | KeyAdvertisement | OutgoingShares | SurvivorSignature | ShareReveal


class RoundInbox(Protocol):
    """The coordinator's messages of a round's later phases, in order (the servicer reads them off the stream)."""

    def peer_keys(self) -> Sequence[KeyAdvertisement]: ...

    def share_bundle(self) -> Sequence[EncryptedShare]: ...

    def survivors(self) -> Sequence[str]: ...

    def survivor_signatures(self) -> Sequence[SurvivorSignature]: ...


def describe(data: SiteData, cohort: CohortRequest, study_id: str = "", requester: str | None = None) -> SiteDescription:
    """The site's self-description for ``cohort`` (sizes only; the manifest is sent separately),
    with the DP budget that remains for ``study_id`` (and ``requester``, when known). Participants left out
    of the study as shared with another site are not counted."""
    selected = data.cohort(cohort, study_id=study_id)
    data.config.access.check_purpose(data.name, study_id, cohort.data_use)
    data.config.access.check_cohort_size(data.name, selected.n_samples)
    return SiteDescription(
        site_name=data.name,
        software_version=__version__,
        n_samples_total=data.genotypes.n_samples,
        n_samples_analysed=selected.n_samples,
        n_variants=data.genotypes.n_variants,
        identity_public_key=data.identity_public_key,
        privacy_modes=data.config.privacy_modes,
        genotype_format=data.genotypes.genotype_format,
        budget=budget.remaining(data.ledger, data.config.budget, study=study_id, requester=requester),
        multiallelic_skipped=int(getattr(data.genotypes, "multiallelic_skipped", 0)),
        genotyping_technology=data.config.genotyping_technology,
        overlap_public_key=data.overlap_public_key,
        overlap_key_signature=roster_module.sign(data.identity_key,
                                                 overlap.key_statement(data.name, data.overlap_public_key)),
    )


def describe_recorded(data: SiteData, cohort: CohortRequest, study_id: str, requester: str | None) -> SiteDescription:
    """:func:`describe` for an authorised requester and approved study and purpose, with a minimum
    cohort; every Describe is recorded in the ledger (``described`` with the cohort, or ``refused``)."""
    fields = {"requester": requester or "", "study": study_id, "analysis": "describe",
              "parameters": canonical_json({"phenotype": cohort.phenotype, "covariates": list(cohort.covariates),
                                            "purpose": "" if cohort.data_use is None else cohort.data_use.purpose})}
    try:
        data.config.access.authorise(data.name, study_id, None, requester)
        description = describe(data, cohort, study_id, requester)
    except FedGwasError as error:
        data.ledger.append(kind="refused", message=f"{type(error).__name__}: {error}", **fields)
        raise
    data.ledger.append(kind="described", message=f"{description.n_samples_analysed} samples analysed", **fields)
    return description


def _authorise(data: SiteData, task: TaskSpec, requester: str) -> None:
    """The site's ``[access]`` rules, the study's pinned purpose included (site_agent/policy.py)."""
    data.config.access.authorise(data.name, task.study_id, task.analysis, requester)
    data.config.access.check_purpose(data.name, task.study_id, task.cohort.data_use)


def _registry(data: SiteData) -> ReleaseRegistry | None:
    return None if data.config.ledger is None else ReleaseRegistry(registry_path(data.config.ledger))


def _check_cohort(data: SiteData, task: TaskSpec, cohort: Cohort, exact: bool) -> None:
    """Minimum cohort size and the differencing rules, on the cohort after every site filter."""
    access = data.config.access
    access.check_cohort_size(data.name, cohort.n_samples)
    if access.min_cohort_difference > 1 and data.config.ledger is not None:
        cohort_guard.check_and_record_cohort(cohort_guard.registry_path(data.config.ledger), data.name,
                                             cohort.sample_index, cohort.n_in_fam, access.min_cohort_difference)
    registry = _registry(data)
    if exact and registry is not None and not access.allow_cohort_differencing:
        registry.check_samples(data.name, task.study_id, cohort.sample_index, cohort.n_in_fam,
                               access.min_cohort_difference, record=False)


def _check_task(data: SiteData, task: TaskSpec) -> None:
    dropping = task.parameters.get(DROP_SHARED_PARAMETER) == data.name
    if dropping != data.excludes_shared(task.study_id):  # the site's exclusion and the task must agree
        raise ProtocolError(
            f"site {data.name!r} is to leave out the participants it shares with the other sites in study "
            f"{task.study_id!r}, but holds no such exclusion (the overlap exchange runs first; an agent restarted "
            f"since forgets it): refusing rather than analysing them" if dropping else
            f"site {data.name!r} left out the participants it shares with the other sites in study "
            f"{task.study_id!r}, but this task does not say so: refusing (use another study id to analyse them)")
    if task.privacy not in data.config.privacy_modes:
        raise PrivacyError(
            f"site {data.name!r} does not accept privacy mode {task.privacy!r}; it accepts {list(data.config.privacy_modes)}"
        )
    names = list(task.participants)
    if data.name not in names:
        raise ProtocolError(f"site {data.name!r} is not among the task's participants {names}")
    if task.privacy in SECURE_MODES:  # only roster members count, and nobody else may be named
        roster = data.require_roster()
        for name in names:
            roster.require(data.name, name)
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


def _he_context(data: SiteData, task: TaskSpec) -> "PublicContext | None":
    """For "he", the key holder's context carried by the task, only if it is the one this site pinned."""
    if task.privacy != "he":
        return None
    from engine.privacy.he import PublicContext  # imports tenseal: only for HE tasks

    pinned = data.config.he_context_sha256
    if pinned is None:
        raise PrivacyError(f"site {data.name!r} has no pinned key-holder context ([keys] he_context_sha256)")
    return PublicContext(task.privacy_material["he_context"], expected_sha256=pinned)


def run_task(data: SiteData, task: TaskSpec, inbox: RoundInbox | None = None, is_active: Callable[[], bool] = lambda: True,
             requester: str | None = None) -> Iterator[TaskEvent]:
    """Execute one round of ``task``: the key phases, per block the analysis, DP noise and protection,
    then (secagg and he) the consistency check and the unmasking shares.

    Every task is recorded in the site's ledger (site_agent/release.py): refused, or charged against
    the DP budget (durably, before any genotype is read) and then released or aborted. ``inbox`` gives
    the coordinator's messages of the later phases (:class:`RoundInbox`; needed for secagg and he).
    ``requester`` is the authenticated identity when the transport provides one, else
    ``task.requester``. Stops early, without error, if ``is_active`` turns False.
    """
    requester = task.requester if requester is None else requester
    check_only = task.parameters.get(PHASE_KEY) == CHECK_PHASE
    secure: SiteRound | None = None
    try:
        _check_task(data, task)
        _authorise(data, task, requester)
        analysis = get_statistic(task.analysis)
        dp_plan = release.plan(task)
        cohort = scores.task_cohort(data, task)
        n_design = len(task.cohort.covariates) + 1
        if cohort.n_samples == 0:
            raise InputError(f"site {data.name!r} has no samples with phenotype {task.cohort.phenotype!r} and all covariates")
        _check_cohort(data, task, cohort, exact=dp_plan is None)
        he_context = _he_context(data, task)
        keys = None if dp_plan is not None else statistic_keys(task)
        registry = _registry(data)
        if keys is not None and registry is not None:
            registry.check_participants(data.name, task.study_id, keys, task.participants)
        if task.privacy in SECURE_MODES and not check_only:
            if inbox is None:
                raise ProtocolError(f"privacy mode {task.privacy!r} needs the round's key exchange")
            secure = SiteRound(data.name, data.identity_key, data.require_roster(), task.participants, task.threshold,
                               task_digest(task), data.config.min_participants, data.config.max_colluding_sites)
    except FedGwasError as error:
        release.record_refusal(data, task, requester, error)
        raise
    if secure is not None:
        yield secure.advertisement
        try:
            secure.receive_keys(inbox.peer_keys())  # type: ignore[union-attr]
        except FedGwasError as error:
            release.record_refusal(data, task, requester, error)
            raise
    guard = release.admit(data, task, dp_plan, cohort.n_samples, requester, len(task.participants))
    if guard.check_only:
        yield _with_receipt(data, TaskDone(0, 0, n_design, 0.0, 0, rho_spent=0.0))
        return
    with guard:  # leaving it before released() records the task as aborted
        if dp_plan is None and registry is not None and not data.config.access.allow_cohort_differencing:
            # pin the study's sample set (checked again, atomically)
            registry.check_samples(data.name, task.study_id, cohort.sample_index, cohort.n_in_fam,
                                   data.config.access.min_cohort_difference, record=True)
        masker = None
        if secure is not None:  # secagg masks the values, he the tags of its ciphertexts: the same shares
            yield OutgoingShares(tuple(secure.shares()))
            secure.receive_shares(inbox.share_bundle())  # type: ignore[union-attr]
            masker = secure.masker()
        protector = make_protector(task.privacy, masker=masker, he_context=he_context)
        done = yield from _compute(data, task, analysis, guard.clip(cohort), protector, guard, is_active)
        if done is None:
            return
        contributors = tuple(sorted(task.participants))
        reveal: ShareReveal | None = None
        if secure is not None:  # nothing of the round opens before this site's reveal (self masks, self tags)
            survivors = tuple(sorted(inbox.survivors()))  # type: ignore[union-attr]
            if keys is not None and registry is not None:  # the sum will be over the survivors: same rule
                registry.check_participants(data.name, task.study_id, keys, survivors)
            yield secure.sign_survivors(survivors)
            reveal = secure.reveal(inbox.survivor_signatures())  # type: ignore[union-attr]
            contributors = secure.survivors
        if keys is not None and registry is not None:  # before the unmasking shares leave
            registry.record_participants(data.name, task.study_id, keys, contributors)
        if reveal is not None:
            yield reveal
        guard.released(contributors)
    yield _with_receipt(data, dataclasses.replace(done, contributors=contributors, rho_spent=guard.accepted.rho,
                                                  noise_scale=guard.noise_scale))


def _with_receipt(data: SiteData, done: TaskDone) -> TaskDone:
    """The summary with the site's signed ledger head, which covers this task's last ledger entry."""
    return done if data.heads is None else dataclasses.replace(done, ledger_head=data.heads.latest)


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
    # Blocks are read and computed by the site's compute backend (site_agent/compute/), several at a
    # time and ahead of this loop; noise and protection stay here, in block order.
    backend = data.backend()
    males_only = getattr(analysis, "males_only_on_y", False)
    dosage = getattr(analysis, "dosage", False) and has_dosages(data.genotypes)
    # Never suppress rare variants before noise (in a DP release the noise protects them), nor the rows
    # of a genotype-free statistic (they are not per variant).
    suppress = guard.plan is None and getattr(analysis, "uses_genotypes", True)
    context = TaskContext(data.source_spec, cohort.sample_index, analysis.name, state,
                          data.config.access.min_allele_count if suppress else 0, dosage=dosage,
                          store=data.store_for(cohort.sample_index) if cache else None,
                          males=data.genotypes.fam.sex[cohort.sample_index] == 1 if males_only else None,
                          on_y_rows=data.on_chromosome_y if males_only else None,
                          haploid_x_rows=data.on_chromosome_x if males_only and task.cohort.xchr_model == 1 else None)
    counts, jobs = task_pieces(task, per_variant, cohort.n_samples, None if getattr(analysis, "sequential_blocks", False)
                               else data.config.compute.chunk_bytes)
    pieces = backend.run(context, jobs, lambda rows: data.read_block(rows, cohort.sample_index, cache=cache, dosage=dosage))
    blocks = join_pieces(pieces, counts)
    try:
        for block, block_values in enumerate(blocks):
            if not is_active():
                log.warning("task %s round %d cancelled by the client at block %d", task.study_id, task.round, block)
                return None
            start, stop = task.block_bounds(block)
            values = guard.noise(block_values)
            payload = protector.protect(block, values)
            bytes_sent += len(payload)
            result = ResultBlock(block, start, stop - start, values.shape[1], protector.encoding, payload)
            guard.sent(result)
            yield result
    finally:
        pieces.close()  # cancels the pieces still in flight when the task stops early
    if SCORES_PARAMETER in task.parameters:  # the site keeps its PCA scores; they never leave it
        scores.keep(data, task, cohort, analysis.sample_values(state))  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log.info("task %s round %d: %d variants in %d blocks, %.2f s, peak RSS %.0f MiB, compute %s peak RSS %.0f MiB",
             task.study_id, task.round, task.n_variants, task.n_blocks, elapsed, peak_mib, backend.description,
             backend.worker_peak_rss_mib())
    return TaskDone(cohort.n_samples, task.n_blocks, n_design, elapsed, bytes_sent)


def compare_cohorts(data: SiteData, study_id: str, phase: str, peer: str, peer_public_key: bytes,
                    peer_key_signature: bytes, cohort: CohortRequest, first: list[bytes], second: list[bytes],
                    requester: str | None, drop_shared: bool = False) -> tuple[list[bytes], list[bytes], int]:
    """One phase of the private overlap count with ``peer`` (:mod:`engine.overlap`):
    ``(first, second, count)`` of the response. The IDs are the IIDs of this site's analysed samples.

    ``drop_shared`` (the study drops shared participants from the counting site): at ``reblind`` the
    peer's values are returned in the order given (the counting site learns which of its own
    participants this site also lists); at ``count`` this site leaves the participants it shares with
    ``peer`` out of every later cohort of the study (:meth:`SiteData.exclude_shared`). Both are recorded
    in the site's ledger (kind ``overlap``).

    Raises
    ------
    PrivacyError
        The site's ``[access]`` rules refuse ``overlap`` for this study and requester, or the cohort is
        below the site's minimum.
    ProtocolError
        Unknown phase, this site named as its own peer, a malformed key or blinded ID, or (phase
        ``count``) a double-blinded set that is not exactly this site's own (a probe of subsets).
    PrivacyError
        The site has no roster, the peer is not in it, or the peer's key is not signed by the peer's
        roster identity key (a key the coordinator substituted).
    """
    data.config.access.authorise(data.name, study_id, "overlap", requester)
    if phase not in overlap.PHASES:
        raise ProtocolError(f"overlap phase {phase!r} is not one of {list(overlap.PHASES)}")
    if peer == data.name or len(peer_public_key) != overlap.POINT_BYTES:
        raise ProtocolError(f"overlap peer {peer!r} must be another site with a {overlap.POINT_BYTES}-byte public key")
    peer_identity = data.require_roster().require(data.name, peer)
    if not roster_module.verify(peer_identity.identity_key, overlap.key_statement(peer, peer_public_key),
                                peer_key_signature):
        raise PrivacyError(f"site {data.name!r} refuses the overlap check: the key given for {peer!r} is not "
                           f"signed by {peer!r}'s identity key in the roster")
    selected = data.cohort(cohort)
    data.config.access.check_cohort_size(data.name, selected.n_samples)
    ids = overlap.unique_ids(data.genotypes.fam.iid[selected.sample_index])
    scalar = overlap.blinding_scalar(data.overlap_key, study_id, data.name, peer)
    own = overlap.hash_ids(ids, overlap.id_key(data.overlap_key, peer_public_key, study_id, data.name, peer))
    if phase == "blind":
        return overlap.blind(own, scalar), [], 0
    if phase == "reblind":
        if drop_shared:
            _record_overlap(data, study_id, peer, requester, f"kept the order of {peer!r}'s {len(first)} blinded IDs: "
                            f"{peer!r} learns which of its participants this site also lists, and drops them")
        return overlap.blind(first, scalar, keep_order=drop_shared), overlap.blind(own, scalar), 0
    if len(set(first)) != len(ids):
        raise ProtocolError(f"overlap count: {len(set(first))} doubly blinded IDs, this site has {len(ids)}: "
                            "only the whole set is compared")
    if drop_shared:
        key = overlap.id_key(data.overlap_key, peer_public_key, study_id, data.name, peer)
        shared = overlap.shared_own_ids(ids, key, scalar, first, second)
        data.exclude_shared(study_id, shared)
        _record_overlap(data, study_id, peer, requester, f"{len(shared)} participants shared with {peer!r} left out "
                        f"of every cohort of the study")
        count = len(shared)
    else:
        count = overlap.count_shared(first, second, scalar)
    log.info("overlap with %s for study %s: %d participants shared%s", peer, study_id, count,
             " (left out here)" if drop_shared else "")
    return [], [], count


def _record_overlap(data: SiteData, study_id: str, peer: str, requester: str | None, message: str) -> None:
    """A ledger entry (kind ``overlap``) for a step of the one-sided exchange that drops shared participants."""
    data.ledger.append(kind="overlap", message=message, requester=requester or "", study=study_id,
                       analysis="overlap", parameters=canonical_json({"peer": peer, "drop_shared": True}))
