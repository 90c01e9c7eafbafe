from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SignedHead(_message.Message):
    __slots__ = ("site", "seq", "hash", "time", "public_key", "signature")
    SITE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    site: str
    seq: int
    hash: str
    time: str
    public_key: bytes
    signature: bytes
    def __init__(self, site: _Optional[str] = ..., seq: _Optional[int] = ..., hash: _Optional[str] = ..., time: _Optional[str] = ..., public_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Cosignature(_message.Message):
    __slots__ = ("witness_key", "time", "signature")
    WITNESS_KEY_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    witness_key: bytes
    time: str
    signature: bytes
    def __init__(self, witness_key: _Optional[bytes] = ..., time: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class WitnessedHead(_message.Message):
    __slots__ = ("head", "cosignature")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    COSIGNATURE_FIELD_NUMBER: _ClassVar[int]
    head: SignedHead
    cosignature: Cosignature
    def __init__(self, head: _Optional[_Union[SignedHead, _Mapping]] = ..., cosignature: _Optional[_Union[Cosignature, _Mapping]] = ...) -> None: ...

class GetHeadsRequest(_message.Message):
    __slots__ = ("site", "latest_only")
    SITE_FIELD_NUMBER: _ClassVar[int]
    LATEST_ONLY_FIELD_NUMBER: _ClassVar[int]
    site: str
    latest_only: bool
    def __init__(self, site: _Optional[str] = ..., latest_only: _Optional[bool] = ...) -> None: ...

class GetHeadsResponse(_message.Message):
    __slots__ = ("heads", "witness_key")
    HEADS_FIELD_NUMBER: _ClassVar[int]
    WITNESS_KEY_FIELD_NUMBER: _ClassVar[int]
    heads: _containers.RepeatedCompositeFieldContainer[WitnessedHead]
    witness_key: bytes
    def __init__(self, heads: _Optional[_Iterable[_Union[WitnessedHead, _Mapping]]] = ..., witness_key: _Optional[bytes] = ...) -> None: ...

class ErrorDetail(_message.Message):
    __slots__ = ("kind", "message")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    message: str
    def __init__(self, kind: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
