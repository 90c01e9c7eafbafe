from protos import witness_pb2 as _witness_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OverlapRequest(_message.Message):
    __slots__ = ("study_id", "phase", "peer", "peer_public_key", "cohort", "first", "second", "requester")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    PEER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    FIRST_FIELD_NUMBER: _ClassVar[int]
    SECOND_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    phase: str
    peer: str
    peer_public_key: bytes
    cohort: CohortSpec
    first: _containers.RepeatedScalarFieldContainer[bytes]
    second: _containers.RepeatedScalarFieldContainer[bytes]
    requester: str
    def __init__(self, study_id: _Optional[str] = ..., phase: _Optional[str] = ..., peer: _Optional[str] = ..., peer_public_key: _Optional[bytes] = ..., cohort: _Optional[_Union[CohortSpec, _Mapping]] = ..., first: _Optional[_Iterable[bytes]] = ..., second: _Optional[_Iterable[bytes]] = ..., requester: _Optional[str] = ...) -> None: ...

class OverlapResponse(_message.Message):
    __slots__ = ("first", "second", "count")
    FIRST_FIELD_NUMBER: _ClassVar[int]
    SECOND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    first: _containers.RepeatedScalarFieldContainer[bytes]
    second: _containers.RepeatedScalarFieldContainer[bytes]
    count: int
    def __init__(self, first: _Optional[_Iterable[bytes]] = ..., second: _Optional[_Iterable[bytes]] = ..., count: _Optional[int] = ...) -> None: ...

class CohortSpec(_message.Message):
    __slots__ = ("phenotype", "covariates", "phenotype_coding", "data_use", "pca_run", "missing_phenotype")
    PHENOTYPE_FIELD_NUMBER: _ClassVar[int]
    COVARIATES_FIELD_NUMBER: _ClassVar[int]
    PHENOTYPE_CODING_FIELD_NUMBER: _ClassVar[int]
    DATA_USE_FIELD_NUMBER: _ClassVar[int]
    PCA_RUN_FIELD_NUMBER: _ClassVar[int]
    MISSING_PHENOTYPE_FIELD_NUMBER: _ClassVar[int]
    phenotype: str
    covariates: _containers.RepeatedScalarFieldContainer[str]
    phenotype_coding: str
    data_use: DataUse
    pca_run: str
    missing_phenotype: float
    def __init__(self, phenotype: _Optional[str] = ..., covariates: _Optional[_Iterable[str]] = ..., phenotype_coding: _Optional[str] = ..., data_use: _Optional[_Union[DataUse, _Mapping]] = ..., pca_run: _Optional[str] = ..., missing_phenotype: _Optional[float] = ...) -> None: ...

class DataUse(_message.Message):
    __slots__ = ("purpose", "commercial")
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    COMMERCIAL_FIELD_NUMBER: _ClassVar[int]
    purpose: str
    commercial: bool
    def __init__(self, purpose: _Optional[str] = ..., commercial: _Optional[bool] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ("study_id", "cohort", "manifest_chunk_variants")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_CHUNK_VARIANTS_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    cohort: CohortSpec
    manifest_chunk_variants: int
    def __init__(self, study_id: _Optional[str] = ..., cohort: _Optional[_Union[CohortSpec, _Mapping]] = ..., manifest_chunk_variants: _Optional[int] = ...) -> None: ...

class SiteInfo(_message.Message):
    __slots__ = ("site_name", "software_version", "n_samples_total", "n_samples_analysed", "n_variants", "secagg_public_key", "privacy_modes", "genotype_format", "budget", "multiallelic_skipped", "genotyping_technology")
    class BudgetEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SITE_NAME_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_ANALYSED_FIELD_NUMBER: _ClassVar[int]
    N_VARIANTS_FIELD_NUMBER: _ClassVar[int]
    SECAGG_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_MODES_FIELD_NUMBER: _ClassVar[int]
    GENOTYPE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    MULTIALLELIC_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    GENOTYPING_TECHNOLOGY_FIELD_NUMBER: _ClassVar[int]
    site_name: str
    software_version: str
    n_samples_total: int
    n_samples_analysed: int
    n_variants: int
    secagg_public_key: bytes
    privacy_modes: _containers.RepeatedScalarFieldContainer[str]
    genotype_format: str
    budget: _containers.ScalarMap[str, float]
    multiallelic_skipped: int
    genotyping_technology: str
    def __init__(self, site_name: _Optional[str] = ..., software_version: _Optional[str] = ..., n_samples_total: _Optional[int] = ..., n_samples_analysed: _Optional[int] = ..., n_variants: _Optional[int] = ..., secagg_public_key: _Optional[bytes] = ..., privacy_modes: _Optional[_Iterable[str]] = ..., genotype_format: _Optional[str] = ..., budget: _Optional[_Mapping[str, float]] = ..., multiallelic_skipped: _Optional[int] = ..., genotyping_technology: _Optional[str] = ...) -> None: ...

class VariantChunk(_message.Message):
    __slots__ = ("offset", "chrom", "pos", "variant_id", "allele1", "allele2")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CHROM_FIELD_NUMBER: _ClassVar[int]
    POS_FIELD_NUMBER: _ClassVar[int]
    VARIANT_ID_FIELD_NUMBER: _ClassVar[int]
    ALLELE1_FIELD_NUMBER: _ClassVar[int]
    ALLELE2_FIELD_NUMBER: _ClassVar[int]
    offset: int
    chrom: _containers.RepeatedScalarFieldContainer[str]
    pos: _containers.RepeatedScalarFieldContainer[int]
    variant_id: _containers.RepeatedScalarFieldContainer[str]
    allele1: _containers.RepeatedScalarFieldContainer[str]
    allele2: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, offset: _Optional[int] = ..., chrom: _Optional[_Iterable[str]] = ..., pos: _Optional[_Iterable[int]] = ..., variant_id: _Optional[_Iterable[str]] = ..., allele1: _Optional[_Iterable[str]] = ..., allele2: _Optional[_Iterable[str]] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("info", "variants")
    INFO_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    info: SiteInfo
    variants: VariantChunk
    def __init__(self, info: _Optional[_Union[SiteInfo, _Mapping]] = ..., variants: _Optional[_Union[VariantChunk, _Mapping]] = ...) -> None: ...

class Participant(_message.Message):
    __slots__ = ("site_name", "secagg_public_key")
    SITE_NAME_FIELD_NUMBER: _ClassVar[int]
    SECAGG_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    site_name: str
    secagg_public_key: bytes
    def __init__(self, site_name: _Optional[str] = ..., secagg_public_key: _Optional[bytes] = ...) -> None: ...

class TaskHeader(_message.Message):
    __slots__ = ("study_id", "round", "analysis", "cohort", "privacy", "participants", "block_size", "n_variants", "requester", "parameters")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    N_VARIANTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    round: int
    analysis: str
    cohort: CohortSpec
    privacy: str
    participants: _containers.RepeatedCompositeFieldContainer[Participant]
    block_size: int
    n_variants: int
    requester: str
    parameters: _containers.ScalarMap[str, str]
    def __init__(self, study_id: _Optional[str] = ..., round: _Optional[int] = ..., analysis: _Optional[str] = ..., cohort: _Optional[_Union[CohortSpec, _Mapping]] = ..., privacy: _Optional[str] = ..., participants: _Optional[_Iterable[_Union[Participant, _Mapping]]] = ..., block_size: _Optional[int] = ..., n_variants: _Optional[int] = ..., requester: _Optional[str] = ..., parameters: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ArrayChunk(_message.Message):
    __slots__ = ("name", "dtype", "total_bytes", "offset", "data", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    total_bytes: int
    offset: int
    data: bytes
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., total_bytes: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class TaskMessage(_message.Message):
    __slots__ = ("header", "array")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    header: TaskHeader
    array: ArrayChunk
    def __init__(self, header: _Optional[_Union[TaskHeader, _Mapping]] = ..., array: _Optional[_Union[ArrayChunk, _Mapping]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("stage", "done", "total")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    stage: str
    done: int
    total: int
    def __init__(self, stage: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class BlockHeader(_message.Message):
    __slots__ = ("block", "first_variant", "n_variants", "width", "encoding", "total_bytes")
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    FIRST_VARIANT_FIELD_NUMBER: _ClassVar[int]
    N_VARIANTS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    block: int
    first_variant: int
    n_variants: int
    width: int
    encoding: str
    total_bytes: int
    def __init__(self, block: _Optional[int] = ..., first_variant: _Optional[int] = ..., n_variants: _Optional[int] = ..., width: _Optional[int] = ..., encoding: _Optional[str] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class BlockChunk(_message.Message):
    __slots__ = ("block", "offset", "data")
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    block: int
    offset: int
    data: bytes
    def __init__(self, block: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class TaskSummary(_message.Message):
    __slots__ = ("n_samples", "n_blocks", "n_design", "compute_seconds", "bytes_sent", "ledger_head")
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    N_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    N_DESIGN_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    LEDGER_HEAD_FIELD_NUMBER: _ClassVar[int]
    n_samples: int
    n_blocks: int
    n_design: int
    compute_seconds: float
    bytes_sent: int
    ledger_head: _witness_pb2.SignedHead
    def __init__(self, n_samples: _Optional[int] = ..., n_blocks: _Optional[int] = ..., n_design: _Optional[int] = ..., compute_seconds: _Optional[float] = ..., bytes_sent: _Optional[int] = ..., ledger_head: _Optional[_Union[_witness_pb2.SignedHead, _Mapping]] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("progress", "block", "chunk", "done")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    block: BlockHeader
    chunk: BlockChunk
    done: TaskSummary
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., block: _Optional[_Union[BlockHeader, _Mapping]] = ..., chunk: _Optional[_Union[BlockChunk, _Mapping]] = ..., done: _Optional[_Union[TaskSummary, _Mapping]] = ...) -> None: ...

class ErrorDetail(_message.Message):
    __slots__ = ("kind", "message", "field", "site")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    message: str
    field: str
    site: str
    def __init__(self, kind: _Optional[str] = ..., message: _Optional[str] = ..., field: _Optional[str] = ..., site: _Optional[str] = ...) -> None: ...
