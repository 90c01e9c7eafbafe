from protos import witness_pb2 as _witness_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OverlapRequest(_message.Message):
    __slots__ = ("study_id", "phase", "peer", "peer_public_key", "cohort", "first", "second", "requester", "peer_key_signature", "drop_shared")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    PEER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    FIRST_FIELD_NUMBER: _ClassVar[int]
    SECOND_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    PEER_KEY_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    DROP_SHARED_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    phase: str
    peer: str
    peer_public_key: bytes
    cohort: CohortSpec
    first: _containers.RepeatedScalarFieldContainer[bytes]
    second: _containers.RepeatedScalarFieldContainer[bytes]
    requester: str
    peer_key_signature: bytes
    drop_shared: bool
    def __init__(self, study_id: _Optional[str] = ..., phase: _Optional[str] = ..., peer: _Optional[str] = ..., peer_public_key: _Optional[bytes] = ..., cohort: _Optional[_Union[CohortSpec, _Mapping]] = ..., first: _Optional[_Iterable[bytes]] = ..., second: _Optional[_Iterable[bytes]] = ..., requester: _Optional[str] = ..., peer_key_signature: _Optional[bytes] = ..., drop_shared: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("phenotype", "covariates", "phenotype_coding", "data_use", "pca_run", "missing_phenotype", "xchr_model")
    PHENOTYPE_FIELD_NUMBER: _ClassVar[int]
    COVARIATES_FIELD_NUMBER: _ClassVar[int]
    PHENOTYPE_CODING_FIELD_NUMBER: _ClassVar[int]
    DATA_USE_FIELD_NUMBER: _ClassVar[int]
    PCA_RUN_FIELD_NUMBER: _ClassVar[int]
    MISSING_PHENOTYPE_FIELD_NUMBER: _ClassVar[int]
    XCHR_MODEL_FIELD_NUMBER: _ClassVar[int]
    phenotype: str
    covariates: _containers.RepeatedScalarFieldContainer[str]
    phenotype_coding: str
    data_use: DataUse
    pca_run: str
    missing_phenotype: float
    xchr_model: int
    def __init__(self, phenotype: _Optional[str] = ..., covariates: _Optional[_Iterable[str]] = ..., phenotype_coding: _Optional[str] = ..., data_use: _Optional[_Union[DataUse, _Mapping]] = ..., pca_run: _Optional[str] = ..., missing_phenotype: _Optional[float] = ..., xchr_model: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("site_name", "software_version", "n_samples_total", "n_samples_analysed", "n_variants", "identity_public_key", "privacy_modes", "genotype_format", "budget", "multiallelic_skipped", "genotyping_technology", "overlap_public_key", "overlap_key_signature")
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
    IDENTITY_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_MODES_FIELD_NUMBER: _ClassVar[int]
    GENOTYPE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    MULTIALLELIC_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    GENOTYPING_TECHNOLOGY_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_KEY_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    site_name: str
    software_version: str
    n_samples_total: int
    n_samples_analysed: int
    n_variants: int
    identity_public_key: bytes
    privacy_modes: _containers.RepeatedScalarFieldContainer[str]
    genotype_format: str
    budget: _containers.ScalarMap[str, float]
    multiallelic_skipped: int
    genotyping_technology: str
    overlap_public_key: bytes
    overlap_key_signature: bytes
    def __init__(self, site_name: _Optional[str] = ..., software_version: _Optional[str] = ..., n_samples_total: _Optional[int] = ..., n_samples_analysed: _Optional[int] = ..., n_variants: _Optional[int] = ..., identity_public_key: _Optional[bytes] = ..., privacy_modes: _Optional[_Iterable[str]] = ..., genotype_format: _Optional[str] = ..., budget: _Optional[_Mapping[str, float]] = ..., multiallelic_skipped: _Optional[int] = ..., genotyping_technology: _Optional[str] = ..., overlap_public_key: _Optional[bytes] = ..., overlap_key_signature: _Optional[bytes] = ...) -> None: ...

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
    __slots__ = ("site_name",)
    SITE_NAME_FIELD_NUMBER: _ClassVar[int]
    site_name: str
    def __init__(self, site_name: _Optional[str] = ...) -> None: ...

class DpRequest(_message.Message):
    __slots__ = ("epsilon", "delta", "mechanism", "bounds")
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    epsilon: float
    delta: float
    mechanism: str
    bounds: _containers.RepeatedCompositeFieldContainer[ClipRange]
    def __init__(self, epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., mechanism: _Optional[str] = ..., bounds: _Optional[_Iterable[_Union[ClipRange, _Mapping]]] = ...) -> None: ...

class ClipRange(_message.Message):
    __slots__ = ("name", "lo", "hi")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LO_FIELD_NUMBER: _ClassVar[int]
    HI_FIELD_NUMBER: _ClassVar[int]
    name: str
    lo: float
    hi: float
    def __init__(self, name: _Optional[str] = ..., lo: _Optional[float] = ..., hi: _Optional[float] = ...) -> None: ...

class TaskHeader(_message.Message):
    __slots__ = ("study_id", "round", "analysis", "cohort", "privacy", "participants", "block_size", "n_variants", "requester", "parameters", "request_id", "threshold", "dp", "check_only", "keep_genotypes", "keep_scores", "drop_shared_from")
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
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DP_FIELD_NUMBER: _ClassVar[int]
    CHECK_ONLY_FIELD_NUMBER: _ClassVar[int]
    KEEP_GENOTYPES_FIELD_NUMBER: _ClassVar[int]
    KEEP_SCORES_FIELD_NUMBER: _ClassVar[int]
    DROP_SHARED_FROM_FIELD_NUMBER: _ClassVar[int]
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
    request_id: str
    threshold: int
    dp: DpRequest
    check_only: bool
    keep_genotypes: bool
    keep_scores: str
    drop_shared_from: str
    def __init__(self, study_id: _Optional[str] = ..., round: _Optional[int] = ..., analysis: _Optional[str] = ..., cohort: _Optional[_Union[CohortSpec, _Mapping]] = ..., privacy: _Optional[str] = ..., participants: _Optional[_Iterable[_Union[Participant, _Mapping]]] = ..., block_size: _Optional[int] = ..., n_variants: _Optional[int] = ..., requester: _Optional[str] = ..., parameters: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ..., threshold: _Optional[int] = ..., dp: _Optional[_Union[DpRequest, _Mapping]] = ..., check_only: _Optional[bool] = ..., keep_genotypes: _Optional[bool] = ..., keep_scores: _Optional[str] = ..., drop_shared_from: _Optional[str] = ...) -> None: ...

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

class InputsEnd(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KeyAdvertisement(_message.Message):
    __slots__ = ("site_name", "encryption_key", "mask_key", "nonce", "task_digest", "signature", "seed_commitment")
    SITE_NAME_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_KEY_FIELD_NUMBER: _ClassVar[int]
    MASK_KEY_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    TASK_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SEED_COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    site_name: str
    encryption_key: bytes
    mask_key: bytes
    nonce: bytes
    task_digest: bytes
    signature: bytes
    seed_commitment: bytes
    def __init__(self, site_name: _Optional[str] = ..., encryption_key: _Optional[bytes] = ..., mask_key: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., task_digest: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., seed_commitment: _Optional[bytes] = ...) -> None: ...

class PeerKeys(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[KeyAdvertisement]
    def __init__(self, keys: _Optional[_Iterable[_Union[KeyAdvertisement, _Mapping]]] = ...) -> None: ...

class EncryptedShare(_message.Message):
    __slots__ = ("sender", "recipient", "ciphertext")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    sender: str
    recipient: str
    ciphertext: bytes
    def __init__(self, sender: _Optional[str] = ..., recipient: _Optional[str] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class EncryptedShares(_message.Message):
    __slots__ = ("shares",)
    SHARES_FIELD_NUMBER: _ClassVar[int]
    shares: _containers.RepeatedCompositeFieldContainer[EncryptedShare]
    def __init__(self, shares: _Optional[_Iterable[_Union[EncryptedShare, _Mapping]]] = ...) -> None: ...

class SurvivorSet(_message.Message):
    __slots__ = ("sites",)
    SITES_FIELD_NUMBER: _ClassVar[int]
    sites: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sites: _Optional[_Iterable[str]] = ...) -> None: ...

class SurvivorSignature(_message.Message):
    __slots__ = ("site_name", "sites", "signature")
    SITE_NAME_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    site_name: str
    sites: _containers.RepeatedScalarFieldContainer[str]
    signature: bytes
    def __init__(self, site_name: _Optional[str] = ..., sites: _Optional[_Iterable[str]] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SurvivorSignatures(_message.Message):
    __slots__ = ("signatures",)
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    signatures: _containers.RepeatedCompositeFieldContainer[SurvivorSignature]
    def __init__(self, signatures: _Optional[_Iterable[_Union[SurvivorSignature, _Mapping]]] = ...) -> None: ...

class RevealedShare(_message.Message):
    __slots__ = ("owner", "secret", "x", "y")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    owner: str
    secret: str
    x: int
    y: bytes
    def __init__(self, owner: _Optional[str] = ..., secret: _Optional[str] = ..., x: _Optional[int] = ..., y: _Optional[bytes] = ...) -> None: ...

class ShareReveal(_message.Message):
    __slots__ = ("site_name", "shares")
    SITE_NAME_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    site_name: str
    shares: _containers.RepeatedCompositeFieldContainer[RevealedShare]
    def __init__(self, site_name: _Optional[str] = ..., shares: _Optional[_Iterable[_Union[RevealedShare, _Mapping]]] = ...) -> None: ...

class TaskMessage(_message.Message):
    __slots__ = ("header", "array", "inputs_end", "peer_keys", "share_bundle", "survivors", "survivor_signatures")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    INPUTS_END_FIELD_NUMBER: _ClassVar[int]
    PEER_KEYS_FIELD_NUMBER: _ClassVar[int]
    SHARE_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    SURVIVOR_SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    header: TaskHeader
    array: ArrayChunk
    inputs_end: InputsEnd
    peer_keys: PeerKeys
    share_bundle: EncryptedShares
    survivors: SurvivorSet
    survivor_signatures: SurvivorSignatures
    def __init__(self, header: _Optional[_Union[TaskHeader, _Mapping]] = ..., array: _Optional[_Union[ArrayChunk, _Mapping]] = ..., inputs_end: _Optional[_Union[InputsEnd, _Mapping]] = ..., peer_keys: _Optional[_Union[PeerKeys, _Mapping]] = ..., share_bundle: _Optional[_Union[EncryptedShares, _Mapping]] = ..., survivors: _Optional[_Union[SurvivorSet, _Mapping]] = ..., survivor_signatures: _Optional[_Union[SurvivorSignatures, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("n_samples", "n_blocks", "n_design", "compute_seconds", "bytes_sent", "ledger_head", "contributors", "rho_spent", "noise_scale")
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    N_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    N_DESIGN_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    LEDGER_HEAD_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    RHO_SPENT_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALE_FIELD_NUMBER: _ClassVar[int]
    n_samples: int
    n_blocks: int
    n_design: int
    compute_seconds: float
    bytes_sent: int
    ledger_head: _witness_pb2.SignedHead
    contributors: _containers.RepeatedScalarFieldContainer[str]
    rho_spent: float
    noise_scale: float
    def __init__(self, n_samples: _Optional[int] = ..., n_blocks: _Optional[int] = ..., n_design: _Optional[int] = ..., compute_seconds: _Optional[float] = ..., bytes_sent: _Optional[int] = ..., ledger_head: _Optional[_Union[_witness_pb2.SignedHead, _Mapping]] = ..., contributors: _Optional[_Iterable[str]] = ..., rho_spent: _Optional[float] = ..., noise_scale: _Optional[float] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("progress", "block", "chunk", "done", "keys", "shares", "survivor_signature", "reveal")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    SURVIVOR_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    REVEAL_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    block: BlockHeader
    chunk: BlockChunk
    done: TaskSummary
    keys: KeyAdvertisement
    shares: EncryptedShares
    survivor_signature: SurvivorSignature
    reveal: ShareReveal
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., block: _Optional[_Union[BlockHeader, _Mapping]] = ..., chunk: _Optional[_Union[BlockChunk, _Mapping]] = ..., done: _Optional[_Union[TaskSummary, _Mapping]] = ..., keys: _Optional[_Union[KeyAdvertisement, _Mapping]] = ..., shares: _Optional[_Union[EncryptedShares, _Mapping]] = ..., survivor_signature: _Optional[_Union[SurvivorSignature, _Mapping]] = ..., reveal: _Optional[_Union[ShareReveal, _Mapping]] = ...) -> None: ...

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
