"""The site-agent wire format in both directions: engine dataclasses <-> protobuf messages.

Each pair sits side by side (``x_to_proto`` beside ``x_from_proto``), as Flower's
``common/serde.py`` keeps them. The coordinator uses the ``task_to_messages`` /
``description_from_responses`` / ``events_from_protos`` direction, the site agent the other one.
Every field of an incoming request is validated here or in the engine dataclass it builds, so a
malformed or hostile request becomes a :class:`ProtocolError` naming the field, before any work.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from engine.cohort.consent import DataUse
from engine.cohort.harmonise import VariantManifest
from engine.errors import ProtocolError
from engine.tasks import CohortRequest, ResultBlock, SiteDescription, TaskDone, TaskProgress, TaskSpec
from protos import site_agent_pb2 as pb
from protos.limits import (CHUNK_BYTES, MANIFEST_CHUNK_VARIANTS, MAX_ARRAY_ELEMENTS, MAX_ARRAYS, MAX_BLOCK_BYTES,
                           MAX_NAME_LENGTH)

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
                         phenotype_coding=cohort.phenotype_coding, data_use=data_use)


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
        participants=[pb.Participant(site_name=n, secagg_public_key=k) for n, k in task.participants],
        block_size=task.block_size, n_variants=task.n_variants, requester=task.requester,
        parameters=dict(task.parameters),
    ))
    yield from _array_chunks("variant_index", task.variant_index, "<i8")
    yield from _array_chunks("flip", task.flip.astype(np.uint8), "|u1")
    for name, values in task.inputs.items():
        yield from _array_chunks(name, values, values.dtype.newbyteorder("<").str)
    for name, material in task.privacy_material.items():  # e.g. the public CKKS context ("he")
        yield from _array_chunks(f"privacy:{name}", np.frombuffer(material, dtype=np.uint8), "|u1")


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
        n_variants=info.n_variants, secagg_public_key=bytes(info.secagg_public_key),
        privacy_modes=tuple(info.privacy_modes), genotype_format=info.genotype_format,
        budget=dict(info.budget),
    )
    manifest = VariantManifest(
        chrom=np.array(columns["chrom"], dtype=str), pos=np.array(columns["pos"], dtype=np.int64),
        variant_id=np.array(columns["variant_id"], dtype=str), allele1=np.array(columns["allele1"], dtype=str),
        allele2=np.array(columns["allele2"], dtype=str),
    )
    return description, manifest


def events_from_protos(events: Iterable[pb.TaskEvent]) -> Iterator[TaskProgress | ResultBlock | TaskDone]:
    """Reassemble chunked result blocks; validates ordering and sizes of the stream."""
    header: pb.BlockHeader | None = None
    buffer = bytearray()
    for event in events:
        kind = event.WhichOneof("payload")
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
            yield TaskDone(d.n_samples, d.n_blocks, d.n_design, d.compute_seconds, d.bytes_sent)
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
                         phenotype_coding=message.phenotype_coding or "quantitative", data_use=data_use)


def description_to_proto(description: SiteDescription) -> pb.DescribeResponse:
    return pb.DescribeResponse(info=pb.SiteInfo(
        site_name=description.site_name,
        software_version=description.software_version,
        n_samples_total=description.n_samples_total,
        n_samples_analysed=description.n_samples_analysed,
        n_variants=description.n_variants,
        secagg_public_key=description.secagg_public_key,
        privacy_modes=list(description.privacy_modes),
        genotype_format=description.genotype_format,
        budget=dict(description.budget),
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


def _array_from_chunks(name: str, chunks: list[pb.ArrayChunk]) -> np.ndarray:
    first = chunks[0]
    try:
        dtype = np.dtype(first.dtype)
    except TypeError:
        raise ProtocolError(f"task array {name!r} has an unknown dtype {first.dtype!r}") from None
    if dtype.kind not in "biuf" or dtype.byteorder == ">":
        raise ProtocolError(f"task array {name!r}: dtype {first.dtype!r} is not a little-endian number type")
    shape = tuple(int(d) for d in first.shape)
    if len(shape) > 4 or any(d > MAX_ARRAY_ELEMENTS for d in shape):
        raise ProtocolError(f"task array {name!r} has an unsupported shape {shape}")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if expected > MAX_ARRAY_ELEMENTS * 8:
        raise ProtocolError(f"task array {name!r} is too large ({expected} bytes)")
    buffer = bytearray()
    for chunk in chunks:
        if chunk.dtype != first.dtype or tuple(chunk.shape) != tuple(first.shape) or chunk.total_bytes != expected:
            raise ProtocolError(f"task array {name!r}: chunks disagree on dtype, shape or size")
        if chunk.offset != len(buffer) or len(buffer) + len(chunk.data) > expected:
            raise ProtocolError(f"task array {name!r}: chunk at offset {chunk.offset} is out of sequence or too long")
        buffer.extend(chunk.data)
    if len(buffer) != expected:
        raise ProtocolError(f"task array {name!r} is incomplete ({len(buffer)} of {expected} bytes)")
    return np.frombuffer(bytes(buffer), dtype=dtype).reshape(shape)


def task_from_messages(messages: Iterable[pb.TaskMessage]) -> TaskSpec:
    """Assemble a task from its header and array chunks, validating sizes, offsets and inputs."""
    iterator = iter(messages)
    first = next(iterator, None)
    if first is None or first.WhichOneof("payload") != "header":
        raise ProtocolError("a task stream must start with a TaskHeader")
    header = first.header
    n = header.n_variants
    if not 0 < n <= MAX_ARRAY_ELEMENTS:
        raise ProtocolError(f"task.n_variants {n} is out of range")
    chunks: dict[str, list[pb.ArrayChunk]] = {}
    for message in iterator:
        if message.WhichOneof("payload") != "array":
            raise ProtocolError("only ArrayChunk messages may follow the TaskHeader")
        if len(chunks) >= MAX_ARRAYS and message.array.name not in chunks:
            raise ProtocolError(f"a task may carry at most {MAX_ARRAYS} arrays")
        chunks.setdefault(message.array.name, []).append(message.array)
    arrays = {name: _array_from_chunks(name, parts) for name, parts in chunks.items()}
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
        participants=tuple((p.site_name, bytes(p.secagg_public_key)) for p in header.participants),
        block_size=header.block_size,
        variant_index=arrays.pop("__variant_index").astype(np.int64),
        flip=flip.astype(bool),
        requester=header.requester,
        inputs=arrays,
        parameters=dict(header.parameters),
        privacy_material=privacy_material,
    )


def event_to_protos(event: TaskProgress | ResultBlock | TaskDone) -> Iterator[pb.TaskEvent]:
    """One engine event as wire messages; result blocks are split into chunks of at most 1 MiB."""
    if isinstance(event, TaskProgress):
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
        yield pb.TaskEvent(done=pb.TaskSummary(
            n_samples=event.n_samples, n_blocks=event.n_blocks, n_design=event.n_design,
            compute_seconds=event.compute_seconds, bytes_sent=event.bytes_sent))
