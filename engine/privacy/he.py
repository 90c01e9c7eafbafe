"""CKKS homomorphic encryption with TenSEAL: the only module of fedgwas that imports ``tenseal``.

Three roles use it, each through its own class, so that a process holds only what its role needs:

* the **key holder** generates the keys (:func:`generate_keys`) and decrypts aggregates
  (:class:`SecretContext`, the only class that can hold a secret key);
* a **site** encrypts its blocks under the public context (:meth:`PublicContext.encrypt`);
* the **aggregator** (coordinator) loads and sums ciphertexts (:meth:`PublicContext.load`,
  :class:`Ciphertexts`). A :class:`PublicContext` refuses context bytes that carry a secret key.

Parameters (:data:`PARAMETERS`): ring degree N = 8192, one 60-bit data prime plus a 60-bit special
prime (120 bits in all, far inside the 218 bits that N = 8192 allows at 128-bit security under the
HomomorphicEncryption.org standard), scale 2^22. Sums never multiply, so one data prime suffices;
slots carry exact integers (:mod:`engine.privacy.he_encoding`). Contexts received from elsewhere are checked
against these parameters *before* TenSEAL parses their keys: a context offering less than 128-bit
security, or any other parameters, is refused with a message that says which.

Ciphertexts travel as TenSEAL ``CKKSVector`` serialisations (one SEAL ciphertext per 4096 complex
slots). TenSEAL encrypts real vectors only, so sites encode complex slots with SEAL's own encoder
(``tenseal.sealapi``, which ships with TenSEAL), halving the ciphertexts per statistic.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import tenseal as ts
from tenseal import sealapi

from engine.errors import PrivacyError, ProtocolError
from engine.privacy.he_encoding import ENCODING, SLOTS_PER_CIPHERTEXT

#: Most coefficient-modulus bits per ring degree at 128-bit classical security (HE standard, ternary secrets).
MAX_COEFF_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
_TENSEAL_ERRORS = (ValueError, RuntimeError, TypeError, OverflowError)
__all__ = ["ENCODING", "PARAMETERS", "Ciphertexts", "HeParameters", "KeyPair", "PublicContext", "SecretContext",
           "check_parameters", "context_fingerprint", "generate_keys"]


@dataclass(frozen=True)
class HeParameters:
    """CKKS parameters: ring degree, coefficient-modulus prime sizes (bits), log2 of the scale."""

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 60)
    scale_bits: int = 22

    @property
    def total_coeff_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes)

    def describe(self) -> str:
        return (f"N={self.poly_modulus_degree}, coefficient modulus {list(self.coeff_mod_bit_sizes)} "
                f"({self.total_coeff_bits} bits), scale 2^{self.scale_bits}")


PARAMETERS = HeParameters()


def check_parameters(found: HeParameters, expected: HeParameters = PARAMETERS) -> None:
    """Refuse parameters below 128-bit security, then any that differ from the protocol's.

    Raises
    ------
    PrivacyError
        Naming the parameters found and the limit or the expected set.
    """
    limit = MAX_COEFF_BITS_128.get(found.poly_modulus_degree)
    if limit is None or found.total_coeff_bits > limit:
        allowed = "not a supported ring degree" if limit is None else f"at most {limit} bits for 128-bit security"
        raise PrivacyError(f"the CKKS context offers less than 128-bit security ({found.describe()}; {allowed})")
    if found != expected:
        raise PrivacyError(f"the CKKS context's parameters ({found.describe()}) do not match the protocol's "
                           f"({expected.describe()})")


@dataclass(frozen=True)
class KeyPair:
    """Serialised contexts: ``secret`` (keep at the key holder only) and ``public`` (for everyone)."""

    secret: bytes
    public: bytes


def generate_keys(parameters: HeParameters = PARAMETERS) -> KeyPair:
    """A fresh CKKS key pair under ``parameters`` (SEAL draws the keys from the OS CSPRNG)."""
    check_parameters(parameters, parameters)
    context = ts.context(ts.SCHEME_TYPE.CKKS, parameters.poly_modulus_degree,
                         coeff_mod_bit_sizes=list(parameters.coeff_mod_bit_sizes), n_threads=1)
    context.global_scale = 2.0 ** parameters.scale_bits
    flags = {"save_public_key": True, "save_galois_keys": False, "save_relin_keys": False}
    return KeyPair(secret=context.serialize(save_secret_key=True, **flags),
                   public=context.serialize(save_secret_key=False, **flags))


def context_fingerprint(public: bytes) -> str:
    """SHA-256 (hex) of a serialised public context: what sites pin in ``[keys] he_context_sha256``."""
    return hashlib.sha256(public).hexdigest()


class _MemoryFile:
    """A path that SEAL can write to and read from without touching disk (a memfd on Linux).

    SEAL's Python bindings save and load only through file paths; an anonymous in-memory file keeps
    ciphertexts and parameters off the file system. Elsewhere a private temporary file is used.
    """

    def __init__(self) -> None:
        self._temp: str | None = None
        if hasattr(os, "memfd_create"):
            self._fd = os.memfd_create("fedgwas-ckks", os.MFD_CLOEXEC)
            self.path = f"/proc/self/fd/{self._fd}"
            if os.path.exists(self.path):
                return
            os.close(self._fd)
        self._fd, self._temp = tempfile.mkstemp(prefix="fedgwas-ckks-")
        self.path = self._temp

    def read(self) -> bytes:
        return os.pread(self._fd, os.fstat(self._fd).st_size, 0)

    def write(self, data: bytes) -> None:
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def close(self) -> None:
        os.close(self._fd)
        if self._temp:
            os.unlink(self._temp)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _proto_fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a protobuf message's top-level fields."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise ProtocolError("the CKKS context is truncated")
            value, pos = data[pos: pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = data[pos: pos + size], pos + size
        else:
            raise ProtocolError(f"the CKKS context is not a TenSEAL context (wire type {wire})")
        yield number, wire, value


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos
    raise ProtocolError("the CKKS context is not a TenSEAL context (bad varint)")


def _inspect_context(data: bytes) -> tuple[HeParameters, bool]:
    """Ring degree and prime sizes of a serialised TenSEAL context, and whether it holds a secret key.

    Reads only the SEAL encryption parameters (field 1 of ``TenSEALContextProto``), so parameters can
    be refused before TenSEAL (which itself refuses contexts below 128-bit security) parses any key.
    The scale is not part of the SEAL parameters: ``scale_bits`` is set to -1 here.
    """
    raw_parameters, has_secret = None, False
    for number, wire, value in _proto_fields(data):
        if number == 1 and wire == 2:
            raw_parameters = value
        elif number == 3 and wire == 2 and value:
            has_secret = True
    if raw_parameters is None:
        raise ProtocolError("the CKKS context has no encryption parameters")
    memory = _MemoryFile()
    try:
        memory.write(raw_parameters)
        parameters = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
        parameters.load(memory.path)
    except _TENSEAL_ERRORS as exc:
        raise ProtocolError(f"the CKKS context's encryption parameters cannot be read: {exc}") from None
    finally:
        memory.close()
    if parameters.scheme() != sealapi.SCHEME_TYPE.CKKS:
        raise PrivacyError(f"the context uses scheme {parameters.scheme()}, not CKKS")
    bits = tuple(int(modulus.bit_count()) for modulus in parameters.coeff_modulus())
    return HeParameters(int(parameters.poly_modulus_degree()), bits, -1), has_secret


def _load_context(data: bytes, *, secret: bool) -> tuple[Any, HeParameters]:
    found, has_secret = _inspect_context(data)
    check_parameters(HeParameters(found.poly_modulus_degree, found.coeff_mod_bit_sizes, PARAMETERS.scale_bits))
    if has_secret and not secret:
        raise PrivacyError("the CKKS context carries a secret key: sites and the aggregator accept public "
                           "contexts only (is this the key holder's secret file?)")
    if secret and not has_secret:
        raise PrivacyError("the CKKS context has no secret key: the key holder needs its secret context")
    try:
        context = ts.context_from(data, n_threads=1)
    except _TENSEAL_ERRORS as exc:
        raise ProtocolError(f"the CKKS context cannot be loaded: {exc}") from None
    scale = float(context.global_scale)
    if scale != 2.0 ** PARAMETERS.scale_bits:
        raise PrivacyError(f"the CKKS context's scale is {scale:g}, the protocol's is 2^{PARAMETERS.scale_bits}")
    if not context.has_public_key():
        raise PrivacyError("the CKKS context has no public key")
    return context, PARAMETERS


class Ciphertexts:
    """A validated vector of ciphertexts of one block (aggregator side): add, then serialise."""

    def __init__(self, vector: Any, n_ciphertexts: int) -> None:
        self._vector = vector
        self.n_ciphertexts = n_ciphertexts

    def add(self, other: Ciphertexts) -> None:
        """Slot-wise sum, in place (``other`` must come from the same context and block layout)."""
        if other.n_ciphertexts != self.n_ciphertexts:
            raise ProtocolError(f"cannot add {other.n_ciphertexts} ciphertexts to {self.n_ciphertexts}")
        try:
            self._vector.add_(other._vector)
        except _TENSEAL_ERRORS as exc:
            raise ProtocolError(f"ciphertexts cannot be added: {exc}") from None

    def subtract(self, other: Ciphertexts) -> None:
        """Slot-wise difference, in place (same context and layout as :meth:`add`)."""
        if other.n_ciphertexts != self.n_ciphertexts:
            raise ProtocolError(f"cannot subtract {other.n_ciphertexts} ciphertexts from {self.n_ciphertexts}")
        try:
            self._vector.sub_(other._vector)
        except _TENSEAL_ERRORS as exc:
            raise ProtocolError(f"ciphertexts cannot be subtracted: {exc}") from None

    def to_bytes(self) -> bytes:
        return bytes(self._vector.serialize())


def _validated_vector(context: Any, payload: bytes, n_ciphertexts: int) -> Any:
    """A CKKSVector from untrusted bytes, checked against the protocol's layout and parameters."""
    try:
        vector = ts.ckks_vector_from(context, payload)
        ciphertexts = vector.data.ciphertext()
    except _TENSEAL_ERRORS as exc:
        raise ProtocolError(f"not a valid CKKS ciphertext vector ({len(payload)} bytes): {exc}") from None
    if len(ciphertexts) != n_ciphertexts or vector.size() != n_ciphertexts * SLOTS_PER_CIPHERTEXT:
        raise ProtocolError(f"expected {n_ciphertexts} ciphertexts of {SLOTS_PER_CIPHERTEXT} slots, got "
                            f"{len(ciphertexts)} holding {vector.size()} values")
    first = context.seal_context().data.first_parms_id()
    for index, ciphertext in enumerate(ciphertexts):
        if (ciphertext.parms_id() != first or ciphertext.size() != 2 or not ciphertext.is_ntt_form()
                or ciphertext.scale != 2.0 ** PARAMETERS.scale_bits):
            raise ProtocolError(f"ciphertext #{index} was not produced under the study's CKKS context "
                                f"(parameters, size, form or scale differ)")
    return vector


class PublicContext:
    """The public CKKS context: encrypt (sites) and load ciphertexts (aggregator); never decrypts.

    Parameters
    ----------
    data
        The serialised public context, as published by the key holder.
    expected_sha256
        The fingerprint pinned by this party (``None`` to skip, e.g. at the key holder's own client).

    Raises
    ------
    PrivacyError
        Wrong fingerprint (another key holder), a secret key present, too little security or
        parameters that are not the protocol's.
    ProtocolError
        Bytes that are not a TenSEAL CKKS context.
    """

    def __init__(self, data: bytes, *, expected_sha256: str | None = None) -> None:
        self.fingerprint = context_fingerprint(data)
        if expected_sha256 is not None and self.fingerprint != expected_sha256.lower():
            raise PrivacyError(f"the CKKS context has fingerprint {self.fingerprint[:16]}..., but "
                               f"{expected_sha256[:16]}... is pinned: it was not issued by this study's key holder")
        self._context, self.parameters = _load_context(data, secret=False)
        self.data = data
        self._encoder: Any = None
        self._encryptor: Any = None

    def encrypt(self, slots: np.ndarray) -> bytes:
        """Encrypt complex slots ``(n_ciphertexts, SLOTS_PER_CIPHERTEXT)``; returns the wire bytes."""
        if slots.ndim != 2 or slots.shape[1] != SLOTS_PER_CIPHERTEXT:
            raise ValueError(f"slots must be (n, {SLOTS_PER_CIPHERTEXT}), got {slots.shape}")
        seal_context = self._context.seal_context().data
        if self._encoder is None:
            self._encoder = sealapi.CKKSEncoder(seal_context)
            self._encryptor = sealapi.Encryptor(seal_context, self._context.public_key().data)
        scale = 2.0 ** self.parameters.scale_bits
        plain, cipher, memory = sealapi.Plaintext(), sealapi.Ciphertext(seal_context), _MemoryFile()
        try:
            serialised = []
            for row in slots:
                self._encoder.encode(row.tolist(), scale, plain)
                self._encryptor.encrypt(plain, cipher)
                cipher.save(memory.path)
                serialised.append(memory.read())
        finally:
            memory.close()
        return _vector_proto(serialised, scale)

    def load(self, payload: bytes, n_ciphertexts: int) -> Ciphertexts:
        """Ciphertexts of one block from the wire, validated; raises ProtocolError if malformed."""
        return Ciphertexts(_validated_vector(self._context, payload, n_ciphertexts), n_ciphertexts)


def _vector_proto(ciphertexts: list[bytes], scale: float) -> bytes:
    """A TenSEAL ``CKKSVectorProto`` (sizes, ciphertexts, scale) around SEAL-serialised ciphertexts."""
    sizes = b"".join(_varint(SLOTS_PER_CIPHERTEXT) for _ in ciphertexts)
    out = bytearray(b"\x0a" + _varint(len(sizes)) + sizes)
    for ciphertext in ciphertexts:
        out += b"\x12" + _varint(len(ciphertext)) + ciphertext
    out += b"\x19" + struct.pack("<d", scale)
    return bytes(out)


class SecretContext:
    """The key holder's context, with the secret key: decrypts validated aggregates only.

    Loading one raises the audit event ``fedgwas.he.secret_context`` and each decryption
    ``fedgwas.he.decrypt`` (see :func:`sys.addaudithook`), so a test can prove that a process
    (the aggregator's) never does either.
    """

    def __init__(self, data: bytes) -> None:
        sys.audit("fedgwas.he.secret_context")
        self._context, self.parameters = _load_context(data, secret=True)
        seal_context = self._context.seal_context().data
        self._decryptor = sealapi.Decryptor(seal_context, self._context.secret_key().data)
        self._encoder = sealapi.CKKSEncoder(seal_context)

    def public_bytes(self) -> bytes:
        """The public context that belongs to this secret key (deterministic serialisation)."""
        return bytes(self._context.serialize(save_public_key=True, save_secret_key=False,
                                             save_galois_keys=False, save_relin_keys=False))

    def decrypt(self, payload: bytes, n_ciphertexts: int) -> np.ndarray:
        """Decrypted complex slots ``(n_ciphertexts, SLOTS_PER_CIPHERTEXT)`` of a validated vector.

        The result still carries CKKS noise: it must go through :func:`engine.privacy.he_encoding.decode`
        (rounding and checks) before anything is released.
        """
        vector = _validated_vector(self._context, payload, n_ciphertexts)
        sys.audit("fedgwas.he.decrypt", n_ciphertexts)
        out = np.empty((n_ciphertexts, SLOTS_PER_CIPHERTEXT), dtype=np.complex128)
        plain = sealapi.Plaintext()
        for index, ciphertext in enumerate(vector.data.ciphertext()):
            self._decryptor.decrypt(ciphertext, plain)
            out[index] = self._encoder.decode_complex(plain)
        return out
