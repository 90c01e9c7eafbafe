from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ContextRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ContextChunk(_message.Message):
    __slots__ = ("sha256", "total_bytes", "offset", "data")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    total_bytes: int
    offset: int
    data: bytes
    def __init__(self, sha256: _Optional[str] = ..., total_bytes: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class RoundRegistration(_message.Message):
    __slots__ = ("study_id", "round", "participants", "block_values", "encoding", "context_sha256", "requester")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_VALUES_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_SHA256_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    round: int
    participants: _containers.RepeatedScalarFieldContainer[str]
    block_values: _containers.RepeatedScalarFieldContainer[int]
    encoding: str
    context_sha256: str
    requester: str
    def __init__(self, study_id: _Optional[str] = ..., round: _Optional[int] = ..., participants: _Optional[_Iterable[str]] = ..., block_values: _Optional[_Iterable[int]] = ..., encoding: _Optional[str] = ..., context_sha256: _Optional[str] = ..., requester: _Optional[str] = ...) -> None: ...

class RegistrationReceipt(_message.Message):
    __slots__ = ("n_blocks", "registration_id")
    N_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_ID_FIELD_NUMBER: _ClassVar[int]
    n_blocks: int
    registration_id: str
    def __init__(self, n_blocks: _Optional[int] = ..., registration_id: _Optional[str] = ...) -> None: ...

class AggregateHeader(_message.Message):
    __slots__ = ("study_id", "round", "block", "n_values", "total_bytes", "registration_id", "tag_offsets")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    N_VALUES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    round: int
    block: int
    n_values: int
    total_bytes: int
    registration_id: str
    tag_offsets: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, study_id: _Optional[str] = ..., round: _Optional[int] = ..., block: _Optional[int] = ..., n_values: _Optional[int] = ..., total_bytes: _Optional[int] = ..., registration_id: _Optional[str] = ..., tag_offsets: _Optional[_Iterable[int]] = ...) -> None: ...

class AggregateChunk(_message.Message):
    __slots__ = ("offset", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class AggregateMessage(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: AggregateHeader
    chunk: AggregateChunk
    def __init__(self, header: _Optional[_Union[AggregateHeader, _Mapping]] = ..., chunk: _Optional[_Union[AggregateChunk, _Mapping]] = ...) -> None: ...

class TotalsChunk(_message.Message):
    __slots__ = ("total_values", "offset", "data")
    TOTAL_VALUES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    total_values: int
    offset: int
    data: bytes
    def __init__(self, total_values: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class ErrorDetail(_message.Message):
    __slots__ = ("kind", "message")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    message: str
    def __init__(self, kind: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
