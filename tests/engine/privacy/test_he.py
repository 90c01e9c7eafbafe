"""CKKS contexts and ciphertexts (engine.privacy.he) and the HE privacy mode (engine.privacy.protection).

Who may hold what: public contexts never carry the secret key; a context with too little security
or other parameters is refused before use; corrupt, truncated or foreign ciphertexts are refused
with a clear error and nothing is decrypted or released.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.privacy import he, he_encoding
from tests.consortium import pairwise_maskers
from engine.errors import PrivacyError, ProtocolError
from engine.privacy import roster as roster_module
from engine.privacy.protection import EncryptedRoundSum, make_aggregator, make_protector
from engine.privacy.roster import Roster, RosterEntry
from engine.privacy.secure_round import SiteRound, recover

N_VALUES = 5000  # two ciphertexts


@pytest.fixture(scope="module")
def keys() -> he.KeyPair:
    return he.generate_keys()


@pytest.fixture(scope="module")
def public(keys: he.KeyPair) -> he.PublicContext:
    return he.PublicContext(keys.public, expected_sha256=he.context_fingerprint(keys.public))


@pytest.fixture(scope="module")
def secret(keys: he.KeyPair) -> he.SecretContext:
    return he.SecretContext(keys.secret)


class Opener:
    """Decryptor for tests: the key holder's checks without the network (see test_key_holder for the real one)."""

    def __init__(self, secret: he.SecretContext, n_parties: int) -> None:
        self.secret, self.n_parties = secret, n_parties

    def decrypt(self, block: int, n_values: int, ciphertext: bytes, tag_offsets: np.ndarray | None = None) -> np.ndarray:
        slots = self.secret.decrypt(ciphertext, he_encoding.n_ciphertexts(n_values))
        return he_encoding.decode(slots, n_values, self.n_parties, tag_offsets).values


def _blocks(public: he.PublicContext, values: list[np.ndarray], block: int = 0) -> tuple[list[str], list[bytes]]:
    names, maskers = pairwise_maskers(len(values))
    protectors = [make_protector("he", masker=m, he_context=public) for m in maskers]
    return names, [p.protect(block, v) for p, v in zip(protectors, values)]


def _sum(public: he.PublicContext, names: list[str], payloads: list[bytes], n_values: int = N_VALUES) -> EncryptedRoundSum:
    sums = EncryptedRoundSum(len(names), (n_values,), context=public)
    for name, payload in zip(names, payloads):
        sums.add(name, 0, he_encoding.ENCODING, payload)
    return sums


def test_public_and_secret_contexts_are_kept_apart(keys: he.KeyPair, public: he.PublicContext,
                                                   secret: he.SecretContext) -> None:
    assert he.context_fingerprint(secret.public_bytes()) == public.fingerprint
    assert len(keys.public) < 400_000 and len(keys.secret) > len(keys.public)
    with pytest.raises(PrivacyError, match="carries a secret key"):
        he.PublicContext(keys.secret)
    with pytest.raises(PrivacyError, match="has no secret key"):
        he.SecretContext(keys.public)
    assert not hasattr(public, "decrypt")
    other = he.generate_keys().public
    with pytest.raises(PrivacyError, match="not issued by this study's key holder"):
        he.PublicContext(other, expected_sha256=public.fingerprint)
    with pytest.raises(ProtocolError, match="not a TenSEAL context|truncated|no encryption parameters"):
        he.PublicContext(b"\x0a\x05abc")


@pytest.mark.parametrize("parameters, message", [
    (he.HeParameters(8192, (60, 40, 60), 22), "do not match the protocol's"),
    (he.HeParameters(16384, (60, 60), 22), "do not match the protocol's"),
    (he.HeParameters(4096, (40, 20, 40), 22), "do not match the protocol's"),
])
def test_contexts_with_other_parameters_are_refused(parameters: he.HeParameters, message: str) -> None:
    with pytest.raises(PrivacyError, match=message):
        he.PublicContext(he.generate_keys(parameters).public)


def test_context_with_another_scale_is_refused() -> None:
    with pytest.raises(PrivacyError, match="scale"):
        he.PublicContext(he.generate_keys(he.HeParameters(scale_bits=30)).public)


def _tenseal_proto(tmp_path: Path):
    """TenSEAL's own context message, compiled from the .proto that ships with it."""
    import tenseal

    source = Path(tenseal.__file__).parent / "proto" / "tensealcontext.proto"
    (tmp_path / "tensealcontext.proto").write_text(source.read_text())
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", ".", "--python_out=.", "tensealcontext.proto"],
                   cwd=tmp_path, check=True)
    sys.path.insert(0, str(tmp_path))
    try:
        import tensealcontext_pb2
    finally:
        sys.path.remove(str(tmp_path))
    return tensealcontext_pb2


def test_context_with_too_little_security_is_refused_before_use(keys: he.KeyPair, tmp_path: Path) -> None:
    """A context whose SEAL parameters exceed 218 modulus bits at N = 8192 (below 128-bit security)."""
    from tenseal import sealapi

    weak = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    weak.set_poly_modulus_degree(8192)
    weak.set_coeff_modulus(sealapi.CoeffModulus.Create(8192, [60, 60, 60, 60]))
    path = tmp_path / "weak.parms"
    weak.save(str(path))
    proto = _tenseal_proto(tmp_path)
    message = proto.TenSEALContextProto()
    message.ParseFromString(keys.public)
    message.encryption_parameters = path.read_bytes()
    with pytest.raises(PrivacyError, match=r"less than 128-bit security .*240 bits.*at most 218 bits"):
        he.PublicContext(message.SerializeToString())


def test_sum_of_encrypted_blocks_is_exact(public: he.PublicContext, secret: he.SecretContext) -> None:
    rng = np.random.default_rng(1)
    values = [np.concatenate([rng.uniform(1e8, 1e9, 2500), rng.normal(0, 1e-3, 2500)]) for _ in range(3)]
    names, payloads = _blocks(public, values)
    for payload in payloads:
        assert he_encoding.SLOTS_PER_CIPHERTEXT * 2 * 16 < len(payload) < 300_000  # 2 ciphertexts of 131 kB
    grid = [np.rint(v * 2**24) / 2**24 for v in values]  # each site's value on the fixed-point grid
    with _sum(public, names, payloads) as sums:
        assert sums.delivered("site0") and not sums.delivered("site9")
        np.testing.assert_array_equal(Opener(secret, 3).decrypt(0, N_VALUES, sums.aggregate(tuple(names), 0)),
                                      [math.fsum(column) for column in zip(*grid)])


def test_one_sites_block_or_a_partial_sum_is_never_released(public: he.PublicContext, secret: he.SecretContext) -> None:
    values = [np.full(N_VALUES, 7.0) for _ in range(3)]
    _, payloads = _blocks(public, values)
    opener = Opener(secret, 3)
    with pytest.raises(PrivacyError, match="tag check"):
        opener.decrypt(0, N_VALUES, payloads[0])
    partial = public.load(payloads[0], 2)
    partial.add(public.load(payloads[1], 2))
    with pytest.raises(PrivacyError, match="tag check"):
        opener.decrypt(0, N_VALUES, partial.to_bytes())


def test_corrupt_and_truncated_ciphertexts_are_refused(public: he.PublicContext, secret: he.SecretContext) -> None:
    names, payloads = _blocks(public, [np.ones(N_VALUES)] * 2)
    bad = {
        "truncated": payloads[0][: len(payloads[0]) // 2],
        "one byte short": payloads[0][:-1],
        "garbage": os.urandom(4000),
        "empty": b"",
        "header": payloads[0][:40] + bytes([payloads[0][40] ^ 0x5A]) + payloads[0][41:],
    }
    for what, payload in bad.items():
        sums = EncryptedRoundSum(2, (N_VALUES,), context=public)
        with pytest.raises(ProtocolError, match="site 'site0' sent an invalid encrypted block 0"):
            sums.add("site0", 0, he_encoding.ENCODING, payload)
        assert not sums.delivered("site0"), what
    with pytest.raises(ProtocolError, match="expected 3 ciphertexts"):
        public.load(payloads[0], 3)
    # A flipped coefficient can still parse: the key holder's checks refuse the sum instead.
    flipped = bytearray(payloads[0])
    flipped[60_000] ^= 0x01  # inside the first ciphertext's coefficients
    with _sum(public, names, [bytes(flipped), payloads[1]]) as sums, \
            pytest.raises(PrivacyError, match="precision check|tag check"):
        Opener(secret, 2).decrypt(0, N_VALUES, sums.aggregate(tuple(names), 0))


def test_sites_with_mismatched_parameters_or_keys_are_refused(public: he.PublicContext, secret: he.SecretContext,
                                                               request: pytest.FixtureRequest) -> None:
    import tenseal as ts

    names, payloads = _blocks(public, [np.ones(N_VALUES)] * 2)
    sums = _sum(public, names[:1], payloads[:1])
    sums.n_parties = 2
    request.addfinalizer(sums.close)
    with pytest.raises(ProtocolError, match="site 'site1' sent 'ring128-masked' data"):
        sums.add(names[1], 0, "ring128-masked", payloads[1])
    # A site encrypting under other parameters (its own context, [60, 40, 60]): refused at load.
    context = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 60])
    context.global_scale = 2.0**22
    foreign_parameters = ts.ckks_vector(context, [1.0] * (2 * he_encoding.SLOTS_PER_CIPHERTEXT)).serialize()
    with pytest.raises(ProtocolError, match="site 'site1' sent an invalid encrypted block 0"):
        sums.add(names[1], 0, he_encoding.ENCODING, foreign_parameters)
    other_key = he.PublicContext(he.generate_keys().public)  # same parameters, another key holder
    _, foreign = _blocks(other_key, [np.ones(N_VALUES)] * 2)
    sums.add(names[1], 0, he_encoding.ENCODING, foreign[1])
    with pytest.raises(PrivacyError, match="precision check"):
        Opener(secret, 2).decrypt(0, N_VALUES, sums.aggregate(tuple(names), 0))


def test_protector_and_aggregator_refuse_missing_material(public: he.PublicContext) -> None:
    with pytest.raises(PrivacyError, match="public context"):
        make_protector("he", masker=pairwise_maskers(2)[1][0])
    with pytest.raises(PrivacyError, match="masker"):
        make_protector("he", he_context=public)
    with pytest.raises(PrivacyError, match="summed over their survivors"):
        make_aggregator("he", 2, 10)


def test_a_dropped_site_is_recovered_and_only_the_survivors_sum_opens(public: he.PublicContext,
                                                                      secret: he.SecretContext) -> None:
    """Double-masked tags: the survivors' reveals give the offsets of their sum, and of nothing else."""
    names = ("a", "b", "c", "d")
    keys = {n: roster_module.generate_identity_key() for n in names}
    roster = Roster(tuple(RosterEntry(n, roster_module.public_bytes(k)) for n, k in keys.items()))
    rounds = {n: SiteRound(n, keys[n], roster, names, 0, b"d" * 32, 2) for n in names}
    for r in rounds.values():
        r.receive_keys([x.advertisement for x in rounds.values()])
    outgoing = {n: r.shares() for n, r in rounds.items()}
    for n, r in rounds.items():
        r.receive_shares([x for shares in outgoing.values() for x in shares if x.recipient == n])
    rng = np.random.default_rng(5)
    values = {n: rng.normal(0, 1e3, N_VALUES) for n in names}
    payloads = {n: make_protector("he", masker=r.masker(), he_context=public).protect(0, values[n])
                for n, r in rounds.items()}
    survivors = ("a", "b", "d")  # c delivered its block, then dropped out before the consistency check
    signatures = [rounds[n].sign_survivors(survivors) for n in survivors]
    reveals = [rounds[n].reveal(signatures) for n in survivors]
    unmasker = recover(rounds["a"].context, {n: r.advertisement for n, r in rounds.items()}, survivors, reveals, 3)
    sums = EncryptedRoundSum(4, (N_VALUES,), context=public)
    for n in names:
        sums.add(n, 0, he_encoding.ENCODING, payloads[n])
    offsets = sums.tag_offsets(unmasker, 0)
    assert offsets.shape == (2, 2) and np.all(offsets < 2**30)
    opener = Opener(secret, 3)
    # c's block was added to the running sum as it arrived; the survivors' sum takes it out again.
    np.testing.assert_allclose(opener.decrypt(0, N_VALUES, sums.aggregate(survivors, 0), offsets),
                               values["a"] + values["b"] + values["d"], rtol=0, atol=3 * 2.0**-24)
    with pytest.raises(ProtocolError, match="already aggregated"):
        sums.aggregate(survivors, 0)
    sums.close()

    def total(members) -> bytes:
        out = public.load(payloads[members[0]], 2)
        for name in members[1:]:
            out.add(public.load(payloads[name], 2))
        return out.to_bytes()

    # Without the offsets (tags of pairwise masks only, as before), with all four, or for a subset: refused.
    for members, stated in [(survivors, None), (names, offsets), (("a", "b"), offsets), (("c",), offsets)]:
        with pytest.raises(PrivacyError, match="tag check"):
            Opener(secret, len(members) + 1).decrypt(0, N_VALUES, total(members), stated)
