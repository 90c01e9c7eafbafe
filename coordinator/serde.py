"""Coordinator side of the wire format: engine dataclasses <-> protobuf messages."""

from __future__ import annotations

from typing import Iterable, Iterator

import grpc
import numpy as np

from engine.errors import ProtocolError
from engine.harmonise import VariantManifest
from engine.tasks import CohortRequest, ResultBlock, SiteDescription, TaskDone, TaskProgress, TaskSpec
from protos import site_agent_pb2 as pb

CHUNK_BYTES = 1 << 20
ERROR_METADATA_KEY = "fedgwas-error-bin"
MAX_BLOCK_BYTES = 1 << 31


def cohort_to_proto(cohort: CohortRequest) -> pb.CohortSpec:
    data_use = None if cohort.data_use is None else \
        pb.DataUse(purpose=cohort.data_use.purpose, commercial=cohort.data_use.commercial)
    return pb.CohortSpec(phenotype=cohort.phenotype, covariates=list(cohort.covariates),
                         phenotype_coding=cohort.phenotype_coding, data_use=data_use,
                         missing_phenotype=cohort.missing_value)


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
        budget=dict(info.budget), multiallelic_skipped=info.multiallelic_skipped,
        genotyping_technology=info.genotyping_technology,
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


def error_detail(error: grpc.RpcError) -> pb.ErrorDetail | None:
    """The structured error a site attached to a failed call, if any."""
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == ERROR_METADATA_KEY:
            detail = pb.ErrorDetail()
            detail.ParseFromString(value)
            return detail
    return None
