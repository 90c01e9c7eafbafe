"""The site-agent wire format in both directions: engine dataclasses <-> protobuf messages.

Each pair sits side by side (``x_to_proto`` beside ``x_from_proto``), as Flower's
``common/serde.py`` keeps them. The coordinator uses the ``task_to_messages`` /
``description_from_responses`` / ``events_from_protos`` direction, the site agent the other one.
Every field of an incoming request is validated here or in the engine dataclass it builds, so a
malformed or hostile request becomes a :class:`ProtocolError` naming the field, before any work.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

from engine.cohort.consent import DataUse
from engine.cohort.harmonise import VariantManifest
from engine.errors import ProtocolError
from engine.tasks import CohortRequest, ResultBlock, SiteDescription, TaskDone, TaskProgress, TaskSpec
from engine.privacy.secure_round import (EncryptedShare, KeyAdvertisement, OutgoingShares, ShareReveal,
                                         SurvivorSignature)
from protos import round_messages
from protos import site_agent_pb2 as pb
from protos.task_header import header_fields, parameters_from_header
from protos.limits import (CHUNK_BYTES, MANIFEST_CHUNK_VARIANTS, MAX_ARRAY_ELEMENTS, MAX_ARRAYS, MAX_BLOCK_BYTES,
                           MAX_NAME_LENGTH, MAX_TASK_BYTES)
from protos.witness_client import head_from_proto, head_to_proto

#: Arrays every task carries, with their dtype; statistics may declare more (engine/stats/statistic.py).
TASK_ARRAYS = {"variant_index": "<i8", "flip": "|u1"}
#: Arrays named ``privacy:<name>`` carry the privacy mode's material (engine.tasks.PRIVACY_MATERIAL),
#: as 1-D bytes; they never reach the statistic, whose inputs are checked against its declaration.
PRIVACY_ARRAY_PREFIX = "privacy:"


# ---- coordinator -> site ---------------------------------------------------------------------

def cohort_to_proto(cohort: CohortRequest) -> pb.CohortSpec:
    data_use = None if cohort.data_use is None else \
        pb.DataUse(purpose=cohort.data_use.purpose, commercial=cohort.data_use.commercial)
    return pb.CohortSpec(phenotype=cohort.phenotype, covariates=list(cohort.covariates),
                         phenotype_coding=cohort.phenotype_coding, data_use=data_use, pca_run=cohort.pca_run,
                         missing_phenotype=cohort.missing_value,
                         xchr_model=None if cohort.xchr_model == 2 else cohort.xchr_model)


def _array_chunks(name: str, values: np.ndarray, dtype: str) -> Iterator[pb.TaskMessage]:
    array = np.ascontiguousarray(values, dtype=dtype)
    raw = array.tobytes()
    for offset in range(0, max(len(raw), 1), CHUNK_BYTES):
        yield pb.TaskMessage(array=pb.ArrayChunk(name=name, dtype=dtype, total_bytes=len(raw), offset=offset,
                                                 data=raw[offset: offset + CHUNK_BYTES], shape=array.shape))


def task_to_messages(task: TaskSpec) -> Iterator[pb.TaskMessage]:
    """A task as its header followed by its input arrays in chunks."""
    yield pb.TaskMessage(header=pb.TaskHeader(
        study_id=task.study_id, round=task.round, analysis=task.analysis,
        cohort=cohort_to_proto(task.cohort), privacy=task.privacy,
        participants=[pb.Participant(site_name=n) for n in task.participants], threshold=task.threshold,
        block_size=task.block_size, n_variants=task.n_variants, requester=task.requester,
        **header_fields(task.parameters),
    ))
    yield from _array_chunks("variant_index", task.variant_index, "<i8")
    yield from _array_chunks("flip", task.flip.astype(np.uint8), "|u1")
    for name, values in task.inputs.items():
        yield from _array_chunks(name, values, values.dtype.newbyteorder("<").str)
    for name, material in task.privacy_material.items():  # e.g. the public CKKS context ("he")
        yield from _array_chunks(f"privacy:{name}", np.frombuffer(material, dtype=np.uint8), "|u1")
    yield pb.TaskMessage(inputs_end=pb.InputsEnd())


def description_from_responses(responses: Iterable[pb.DescribeResponse]) -> tuple[SiteDescription, VariantManifest]:
    """Reassemble a site's description and its manifest from the Describe stream."""
    iterator = iter(responses)
    first = next(iterator, None)
    if first is None or first.WhichOneof("payload") != "info":
        raise ProtocolError("Describe stream must start with SiteInfo")
    info = first.info
    columns: dict[str, list] = {k: [] for k in ("chrom", "pos", "variant_id", "allele1", "allele2")}
    expected_offset = 0
    for response in iterator:
        if response.WhichOneof("payload") != "variants":
            raise ProtocolError("Describe stream has a second SiteInfo")
        chunk = response.variants
        if chunk.offset != expected_offset:
            raise ProtocolError(f"manifest chunk at offset {chunk.offset}, expected {expected_offset}")
        for key in columns:
            columns[key].extend(getattr(chunk, key))
        expected_offset += len(chunk.variant_id)
    if expected_offset != info.n_variants:
        raise ProtocolError(f"site {info.site_name!r} announced {info.n_variants} variants but sent {expected_offset}")
    description = SiteDescription(
        site_name=info.site_name, software_version=info.software_version,
        n_samples_total=info.n_samples_total, n_samples_analysed=info.n_samples_analysed,
        n_variants=info.n_variants, identity_public_key=bytes(info.identity_public_key),
        privacy_modes=tuple(info.privacy_modes), genotype_format=info.genotype_format,
        budget=dict(info.budget), multiallelic_skipped=info.multiallelic_skipped,
        genotyping_technology=info.genotyping_technology,
        overlap_public_key=bytes(info.overlap_public_key), overlap_key_signature=bytes(info.overlap_key_signature),
    )
    manifest = VariantManifest(
        chrom=np.array(columns["chrom"], dtype=str), pos=np.array(columns["pos"], dtype=np.int64),
        variant_id=np.array(columns["variant_id"], dtype=str), allele1=np.array(columns["allele1"], dtype=str),
        allele2=np.array(columns["allele2"], dtype=str),
    )
    return description, manifest


RoundEvent = KeyAdvertisement | list[EncryptedShare] | SurvivorSignature | ShareReveal


def events_from_protos(events: Iterable[pb.TaskEvent]) -> Iterator[TaskProgress | ResultBlock | TaskDone | RoundEvent]:
    """Reassemble chunked result blocks and the round's phase events; validates ordering and sizes."""
    header: pb.BlockHeader | None = None
    buffer = bytearray()
    for event in events:
        kind = event.WhichOneof("payload")
        if kind in ("keys", "shares", "survivor_signature", "reveal"):
            if header is not None:
                raise ProtocolError(f"{kind} sent inside block {header.block}")
            if kind == "keys":
                yield round_messages.advertisement_from_proto(event.keys)
            elif kind == "shares":
                yield round_messages.shares_from_proto(event.shares)
            elif kind == "survivor_signature":
                yield round_messages.survivor_signature_from_proto(event.survivor_signature)
            else:
                yield round_messages.reveal_from_proto(event.reveal)
            continue
        if kind == "progress":
            yield TaskProgress(event.progress.stage, event.progress.done, event.progress.total)
        elif kind == "block":
            if header is not None:
                raise ProtocolError(f"block {event.block.block} started before block {header.block} was complete")
            header = event.block
            if header.total_bytes > MAX_BLOCK_BYTES:
                raise ProtocolError(f"block {header.block} announces {header.total_bytes} bytes")
            buffer = bytearray()
        elif kind == "chunk":
            chunk = event.chunk
            if header is None or chunk.block != header.block or chunk.offset != len(buffer):
                raise ProtocolError(f"result chunk for block {chunk.block} at offset {chunk.offset} is out of sequence")
            buffer.extend(chunk.data)
            if len(buffer) > header.total_bytes:
                raise ProtocolError(f"block {header.block} is longer than announced")
        elif kind == "done":
            if header is not None:
                raise ProtocolError(f"stream ended inside block {header.block}")
            d = event.done
            yield TaskDone(d.n_samples, d.n_blocks, d.n_design, d.compute_seconds, d.bytes_sent,
                           head_from_proto(d.ledger_head) if d.HasField("ledger_head") else None,
                           tuple(d.contributors), d.rho_spent, d.noise_scale)
            continue
        if header is not None and len(buffer) == header.total_bytes and kind in ("block", "chunk"):
            yield ResultBlock(header.block, header.first_variant, header.n_variants, header.width,
                              header.encoding, bytes(buffer))
            header = None


# ---- site -> coordinator / site side of requests ---------------------------------------------

def cohort_from_proto(message: pb.CohortSpec) -> CohortRequest:
    names = [message.phenotype, *message.covariates]
    if any(len(n) > MAX_NAME_LENGTH for n in names):
        raise ProtocolError(f"cohort names must be at most {MAX_NAME_LENGTH} characters")
    data_use = None
    if message.HasField("data_use") and message.data_use.purpose:
        if len(message.data_use.purpose) > MAX_NAME_LENGTH:
            raise ProtocolError(f"cohort.data_use.purpose must be at most {MAX_NAME_LENGTH} characters")
        data_use = DataUse(message.data_use.purpose, bool(message.data_use.commercial))
    return CohortRequest(phenotype=message.phenotype, covariates=tuple(message.covariates),
                         phenotype_coding=message.phenotype_coding or "quantitative", data_use=data_use,
                         pca_run=message.pca_run,
                         missing_value=message.missing_phenotype if message.HasField("missing_phenotype") else -9.0,
                         xchr_model=message.xchr_model if message.HasField("xchr_model") else 2)


def description_to_proto(description: SiteDescription) -> pb.DescribeResponse:
    return pb.DescribeResponse(info=pb.SiteInfo(
        site_name=description.site_name,
        software_version=description.software_version,
        n_samples_total=description.n_samples_total,
        n_samples_analysed=description.n_samples_analysed,
        n_variants=description.n_variants,
        identity_public_key=description.identity_public_key,
        privacy_modes=list(description.privacy_modes),
        genotype_format=description.genotype_format,
        budget=dict(description.budget),
        multiallelic_skipped=description.multiallelic_skipped,
        genotyping_technology=description.genotyping_technology,
        overlap_public_key=description.overlap_public_key, overlap_key_signature=description.overlap_key_signature,
    ))


def manifest_to_protos(manifest: VariantManifest, chunk_variants: int = 0) -> Iterator[pb.DescribeResponse]:
    step = chunk_variants if 0 < chunk_variants <= MANIFEST_CHUNK_VARIANTS else MANIFEST_CHUNK_VARIANTS
    for start in range(0, len(manifest.variant_id), step):
        stop = start + step
        yield pb.DescribeResponse(variants=pb.VariantChunk(
            offset=start,
            chrom=manifest.chrom[start:stop].tolist(),
            pos=manifest.pos[start:stop].tolist(),
            variant_id=manifest.variant_id[start:stop].tolist(),
            allele1=manifest.allele1[start:stop].tolist(),
            allele2=manifest.allele2[start:stop].tolist(),
        ))


class _ArrayBuffer:
    """One array being received: its declared dtype, shape and size, and the bytes so far."""

    def __init__(self, first: pb.ArrayChunk) -> None:
        name = first.name
        try:
            self.dtype = np.dtype(first.dtype)
        except TypeError:
            raise ProtocolError(f"task array {name!r} has an unknown dtype {first.dtype!r}") from None
        if self.dtype.kind not in "biuf" or self.dtype.byteorder == ">":
            raise ProtocolError(f"task array {name!r}: dtype {first.dtype!r} is not a little-endian number type")
        self.shape = tuple(int(d) for d in first.shape)
        if len(self.shape) > 4 or any(d > MAX_ARRAY_ELEMENTS for d in self.shape):
            raise ProtocolError(f"task array {name!r} has an unsupported shape {self.shape}")
        self.expected = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        if self.expected > MAX_ARRAY_ELEMENTS * 8:
            raise ProtocolError(f"task array {name!r} is too large ({self.expected} bytes)")
        self.name, self.first, self.buffer = name, first, bytearray()

    def add(self, chunk: pb.ArrayChunk) -> None:
        """Append a chunk, refusing one that disagrees with the declaration or goes past its size."""
        first = self.first
        if chunk.dtype != first.dtype or tuple(chunk.shape) != tuple(first.shape) or chunk.total_bytes != self.expected:
            raise ProtocolError(f"task array {self.name!r}: chunks disagree on dtype, shape or size")
        if chunk.offset != len(self.buffer) or len(self.buffer) + len(chunk.data) > self.expected:
            raise ProtocolError(f"task array {self.name!r}: chunk at offset {chunk.offset} is out of sequence "
                                "or too long")
        self.buffer.extend(chunk.data)

    def array(self) -> np.ndarray:
        if len(self.buffer) != self.expected:
            raise ProtocolError(f"task array {self.name!r} is incomplete ({len(self.buffer)} of {self.expected} bytes)")
        return np.frombuffer(bytes(self.buffer), dtype=self.dtype).reshape(self.shape)


def task_header(first: pb.TaskMessage | None) -> pb.TaskHeader:
    """The header of a task stream from its first message (``None``: the stream was empty)."""
    if first is None or first.WhichOneof("payload") != "header":
        raise ProtocolError("a task stream must start with a TaskHeader")
    if not 0 < first.header.n_variants <= MAX_ARRAY_ELEMENTS:
        raise ProtocolError(f"task.n_variants {first.header.n_variants} is out of range")
    if not first.header.request_id:
        raise ProtocolError("task.request_id is empty: every round carries the coordinator's request id")
    return first.header


def read_task_arrays(messages: Iterator[pb.TaskMessage], max_bytes: int = MAX_TASK_BYTES,
                     on_bytes: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """The arrays following a task header, assembled as they arrive, up to ``inputs_end``.

    Each array may carry only the bytes its first chunk declares (dtype x shape), and all arrays
    together at most ``max_bytes``: a stream that declares or sends more is refused at the first
    chunk that would exceed it, so nothing beyond the declaration is ever buffered. ``on_bytes`` is
    told the size of every chunk accepted (the server's meter). The messages after ``inputs_end``
    (the round's later phases) stay in ``messages``.
    """
    buffers: dict[str, _ArrayBuffer] = {}
    declared = 0
    for message in messages:
        kind = message.WhichOneof("payload")
        if kind == "inputs_end":
            break
        if kind != "array":
            raise ProtocolError("only ArrayChunk messages, then inputs_end, may follow the TaskHeader")
        chunk = message.array
        buffer = buffers.get(chunk.name)
        if buffer is None:
            if len(buffers) >= MAX_ARRAYS:
                raise ProtocolError(f"a task may carry at most {MAX_ARRAYS} arrays")
            buffer = buffers[chunk.name] = _ArrayBuffer(chunk)
            declared += buffer.expected
            if declared > max_bytes:
                raise ProtocolError(f"the task's arrays declare {declared} bytes, more than this site accepts "
                                    f"({max_bytes} bytes)")
        buffer.add(chunk)
        if on_bytes is not None:
            on_bytes(len(chunk.data))
    else:
        raise ProtocolError("the task stream ended before inputs_end")
    return {name: buffer.array() for name, buffer in buffers.items()}


def task_from_messages(messages: Iterable[pb.TaskMessage], *, header: pb.TaskHeader | None = None,
                       max_bytes: int = MAX_TASK_BYTES, on_bytes: Callable[[int], None] | None = None) -> TaskSpec:
    """Assemble a task from its header and array chunks, validating sizes, offsets and inputs.

    ``header``: already read (and authorised) by the caller with :func:`task_header`; the messages
    are then the array chunks that follow it. Later messages (the round's phases) stay in
    ``messages`` (read them with :class:`StreamInbox`).
    """
    iterator = iter(messages)
    if header is None:
        header = task_header(next(iterator, None))
    n = header.n_variants
    parameters = parameters_from_header(header)
    arrays = read_task_arrays(iterator, max_bytes, on_bytes)
    for name, dtype in TASK_ARRAYS.items():
        array = arrays.pop(name, None)
        if array is None or array.shape != (n,) or array.dtype != np.dtype(dtype):
            raise ProtocolError(f"task array {name!r} is missing or incomplete (need {n} values of {dtype})")
        arrays[f"__{name}"] = array
    flip = arrays.pop("__flip")
    privacy_material = {}
    for name in [n for n in arrays if n.startswith(PRIVACY_ARRAY_PREFIX)]:
        array = arrays.pop(name)
        if array.dtype != np.uint8 or array.ndim != 1:
            raise ProtocolError(f"task array {name!r} must be 1-D bytes (dtype |u1), got {array.dtype.str} {array.shape}")
        privacy_material[name.removeprefix(PRIVACY_ARRAY_PREFIX)] = array.tobytes()
    if np.any(flip > 1):
        raise ProtocolError("task array 'flip' must hold only 0 and 1")
    return TaskSpec(
        study_id=header.study_id,
        round=header.round,
        analysis=header.analysis,
        cohort=cohort_from_proto(header.cohort),
        privacy=header.privacy,
        participants=tuple(p.site_name for p in header.participants),
        threshold=header.threshold,
        block_size=header.block_size,
        variant_index=arrays.pop("__variant_index").astype(np.int64),
        flip=flip.astype(bool),
        requester=header.requester,
        inputs=arrays,
        parameters=parameters,
        privacy_material=privacy_material,
    )


class StreamInbox:
    """The round's later phases, read off the rest of the task stream (:class:`site_agent.handlers.RoundInbox`)."""

    def __init__(self, messages: Iterator[pb.TaskMessage]) -> None:
        self._messages = messages

    def _next(self, kind: str) -> pb.TaskMessage:
        message = next(self._messages, None)
        if message is None:
            raise ProtocolError(f"the coordinator ended the task stream while the site waited for {kind}")
        if message.WhichOneof("payload") != kind:
            raise ProtocolError(f"expected {kind} from the coordinator, got {message.WhichOneof('payload')}")
        return message

    def peer_keys(self) -> list[KeyAdvertisement]:
        return round_messages.peer_keys_from_proto(self._next("peer_keys").peer_keys)

    def share_bundle(self) -> list[EncryptedShare]:
        return round_messages.shares_from_proto(self._next("share_bundle").share_bundle)

    def survivors(self) -> list[str]:
        sites = list(self._next("survivors").survivors.sites)
        if len(sites) > round_messages.MAX_PARTICIPANTS:
            raise ProtocolError("SurvivorSet lists too many sites")
        return sites

    def survivor_signatures(self) -> list[SurvivorSignature]:
        signatures = self._next("survivor_signatures").survivor_signatures.signatures
        if len(signatures) > round_messages.MAX_PARTICIPANTS:
            raise ProtocolError("SurvivorSignatures lists too many signatures")
        return [round_messages.survivor_signature_from_proto(s) for s in signatures]


def event_to_protos(event: object) -> Iterator[pb.TaskEvent]:
    """One engine event as wire messages; result blocks are split into chunks of at most 1 MiB."""
    if isinstance(event, KeyAdvertisement):
        yield pb.TaskEvent(keys=round_messages.advertisement_to_proto(event))
    elif isinstance(event, OutgoingShares):
        yield pb.TaskEvent(shares=round_messages.shares_to_proto(event.shares))
    elif isinstance(event, SurvivorSignature):
        yield pb.TaskEvent(survivor_signature=round_messages.survivor_signature_to_proto(event))
    elif isinstance(event, ShareReveal):
        yield pb.TaskEvent(reveal=round_messages.reveal_to_proto(event))
    elif isinstance(event, TaskProgress):
        yield pb.TaskEvent(progress=pb.Progress(stage=event.stage, done=event.done, total=event.total))
    elif isinstance(event, ResultBlock):
        yield pb.TaskEvent(block=pb.BlockHeader(
            block=event.block, first_variant=event.first_variant, n_variants=event.n_variants,
            width=event.width, encoding=event.encoding, total_bytes=len(event.payload)))
        view = memoryview(event.payload)
        for offset in range(0, len(view), CHUNK_BYTES):
            yield pb.TaskEvent(chunk=pb.BlockChunk(block=event.block, offset=offset,
                                                   data=bytes(view[offset: offset + CHUNK_BYTES])))
    else:
        assert isinstance(event, TaskDone)
        yield pb.TaskEvent(done=pb.TaskSummary(
            n_samples=event.n_samples, n_blocks=event.n_blocks, n_design=event.n_design,
            compute_seconds=event.compute_seconds, bytes_sent=event.bytes_sent,
            ledger_head=None if event.ledger_head is None else head_to_proto(event.ledger_head),
            contributors=list(event.contributors), rho_spent=event.rho_spent, noise_scale=event.noise_scale))
