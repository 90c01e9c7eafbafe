"""The key holder: key files, what it agrees to decrypt, and its gRPC service (real server on port 0).

It decrypts only the complete aggregate of a registered round, each block once; one refused
aggregate locks the study; every refusal gives the same answer and releases nothing (the reason is
in the store). Attacks over mutual TLS (callers, budget, restart): tests/test_key_holder_attacks.py.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Iterator

import grpc
import numpy as np
import pytest

from fedgwas.cli import main
from key_holder.keys import (
    ANY_CALLER,
    PUBLIC_FILE,
    REFUSAL,
    SECRET_FILE,
    KeyHolder,
    KeyHolderRefusal,
    RoundRegistration,
    load_key_files,
    write_key_files,
)
from coordinator.key_holder_client import KeyHolderClient, RoundDecryptor
from key_holder.server import make_server
from engine.privacy import he, he_encoding
from engine.errors import ConfigError, InputError, PrivacyError, ProtocolError, StudyFailed
from key_holder.store import STORE_FILE, KeyHolderStore
from protos import key_holder_pb2 as pb
from protos import key_holder_pb2_grpc as pb_grpc
from tests.engine.privacy.test_he import _blocks

N_VALUES = 5000


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keyholder")
    write_key_files(directory)
    return directory


@pytest.fixture
def holder(key_dir: Path, tmp_path: Path) -> KeyHolder:
    return KeyHolder(*load_key_files(key_dir), KeyHolderStore(tmp_path / STORE_FILE), coordinators=(ANY_CALLER,))


@pytest.fixture(scope="module")
def public(key_dir: Path) -> he.PublicContext:
    return he.PublicContext((key_dir / PUBLIC_FILE).read_bytes())


def _registration(holder: KeyHolder, study: str = "s", round_: int = 1, sites: int = 3, **changes) -> RoundRegistration:
    fields = dict(study_id=study, round=round_, participants=tuple(f"site{i}" for i in range(sites)),
                  block_values=(N_VALUES, N_VALUES), encoding=he_encoding.ENCODING, context_sha256=holder.fingerprint)
    fields.update(changes)
    return RoundRegistration(**fields)


def _aggregate(public: he.PublicContext, values: list[np.ndarray], block: int = 0) -> tuple[bytes, list[bytes]]:
    _, payloads = _blocks(public, values, block)
    total = public.load(payloads[0], 2)
    for payload in payloads[1:]:
        total.add(public.load(payload, 2))
    return total.to_bytes(), payloads


def _reasons(holder: KeyHolder) -> list[str]:
    return [e.details["reason"] for e in holder.store.events() if e.kind == "refused"]


def test_key_files_are_owner_only_never_overwritten_and_checked(tmp_path: Path) -> None:
    fingerprint = write_key_files(tmp_path)
    secret = tmp_path / SECRET_FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert he.context_fingerprint((tmp_path / PUBLIC_FILE).read_bytes()) == fingerprint
    with pytest.raises(InputError, match="refusing to overwrite"):
        write_key_files(tmp_path)
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by group or others"):
        load_key_files(tmp_path)
    secret.chmod(0o600)
    (tmp_path / PUBLIC_FILE).write_bytes(he.generate_keys().public)
    with pytest.raises(ConfigError, match="is not the public context of"):
        load_key_files(tmp_path)
    with pytest.raises(ConfigError, match="cannot read the HE keys"):
        load_key_files(tmp_path / "missing")


@pytest.mark.parametrize("changes, error, message", [
    ({"sites": 1}, PrivacyError, "sums over 2 to 32 sites"),
    ({"sites": 33}, PrivacyError, "sums over 2 to 32 sites"),
    ({"context_sha256": "0" * 64}, PrivacyError, "not this key holder's"),
    ({"encoding": "ring128-masked"}, ProtocolError, "is not 'ckks-int2-v1'"),
    ({"participants": ("a", "a")}, ProtocolError, "distinct"),
    ({"block_values": ()}, ProtocolError, "block_values"),
])
def test_registration_policy(holder: KeyHolder, changes: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        holder.register(_registration(holder, **changes))


def test_decrypts_a_registered_aggregate_once(holder: KeyHolder, public: he.PublicContext) -> None:
    values = [np.arange(N_VALUES) * 1.5 + i for i in range(3)]
    aggregate, _ = _aggregate(public, values)
    with pytest.raises(KeyHolderRefusal, match=REFUSAL):
        holder.decrypt("no-such-registration", "s", 1, 0, N_VALUES, aggregate)
    registration, n_blocks = holder.register(_registration(holder))
    assert n_blocks == 2
    with pytest.raises(KeyHolderRefusal, match=REFUSAL):
        holder.decrypt(registration, "s", 1, 0, N_VALUES - 1, aggregate)
    np.testing.assert_array_equal(holder.decrypt(registration, "s", 1, 1, N_VALUES, _aggregate(public, values, 1)[0]),
                                  values[0] + values[1] + values[2])
    with pytest.raises(KeyHolderRefusal, match=REFUSAL):
        holder.decrypt(registration, "s", 1, 1, N_VALUES, _aggregate(public, values, 1)[0])
    assert holder.decrypted_blocks == 1
    assert _reasons(holder) == ["the round is not registered (or not under this registration id)",
                                "block 0 with 4999 values does not match the registration",
                                "the block was already decrypted or refused"]


def test_one_sites_ciphertext_is_refused_and_locks_the_study(holder: KeyHolder, public: he.PublicContext) -> None:
    values = [np.full(N_VALUES, 3.0) for _ in range(3)]
    aggregate, payloads = _aggregate(public, values, block=1)
    registration, _ = holder.register(_registration(holder))
    other, _ = holder.register(_registration(holder, study="other"))
    with pytest.raises(KeyHolderRefusal, match=REFUSAL):
        holder.decrypt(registration, "s", 1, 1, N_VALUES, payloads[0])  # site0's block alone, as if it were the sum
    assert "tag check" in _reasons(holder)[-1]
    with pytest.raises(KeyHolderRefusal, match=REFUSAL):
        holder.decrypt(registration, "s", 1, 0, N_VALUES, _aggregate(public, values, block=0)[0])
    assert _reasons(holder)[-1] == "the study is locked after a refused aggregate"
    with pytest.raises(PrivacyError, match="locked"):
        holder.register(_registration(holder, round_=2))
    np.testing.assert_array_equal(holder.decrypt(other, "other", 1, 1, N_VALUES, aggregate), np.full(N_VALUES, 9.0))
    assert holder.decrypted_blocks == 1


def test_tag_offsets_are_checked_on_the_header_and_against_the_tags(holder: KeyHolder, public: he.PublicContext) -> None:
    values = [np.full(N_VALUES, 2.0) for _ in range(3)]
    aggregate, _ = _aggregate(public, values)
    registration, _ = holder.register(_registration(holder, block_values=(N_VALUES, N_VALUES, N_VALUES)))
    with pytest.raises(KeyHolderRefusal, match=REFUSAL):  # 2 ciphertexts take 4 offsets
        holder.decrypt(registration, "s", 1, 0, N_VALUES, aggregate, tag_offsets=np.zeros(3, dtype=np.int64))
    assert _reasons(holder)[-1] == "the request states 3 tag offsets, the block takes 4 below 2^30"
    with pytest.raises(KeyHolderRefusal, match=REFUSAL):  # pairwise tags sum to 0 here, not to 1
        holder.decrypt(registration, "s", 1, 1, N_VALUES, _aggregate(public, values)[0],
                       tag_offsets=np.ones((2, 2), dtype=np.int64))
    assert "tag check" in _reasons(holder)[-1] and holder.decrypted_blocks == 0


def test_corrupt_aggregate_is_refused_with_nothing_released(holder: KeyHolder, public: he.PublicContext) -> None:
    aggregate, _ = _aggregate(public, [np.ones(N_VALUES)] * 2)
    registration, _ = holder.register(_registration(holder, sites=2))
    with pytest.raises(KeyHolderRefusal, match=REFUSAL):
        holder.decrypt(registration, "s", 1, 0, N_VALUES, aggregate[: len(aggregate) // 3])
    assert "not a valid CKKS ciphertext vector" in _reasons(holder)[-1]
    with pytest.raises(KeyHolderRefusal, match=REFUSAL):
        holder.decrypt(registration, "s", 1, 1, N_VALUES, aggregate)
    assert holder.decrypted_blocks == 0


@pytest.fixture
def served(holder: KeyHolder) -> Iterator[tuple[KeyHolderClient, KeyHolder]]:
    """A plaintext key holder accepting any caller (the development mode); TLS: test_key_holder_attacks.py."""
    server, port = make_server(holder, "127.0.0.1:0")
    server.start()
    client = KeyHolderClient(f"127.0.0.1:{port}", timeout=30, connect_timeout=10)
    yield client, holder
    client.close()
    server.stop(grace=None)


def test_grpc_round_trip(served, public: he.PublicContext) -> None:
    client, holder = served
    client.wait_healthy()
    context = client.public_context()
    assert he.context_fingerprint(context) == holder.fingerprint == public.fingerprint
    values = [np.round(np.linspace(-1e6, 1e6, N_VALUES) * 1024) / 1024 + i for i in range(3)]  # on the 2^-24 grid
    aggregate, payloads = _aggregate(public, values)
    decryptor = RoundDecryptor(client, "s", 1, client.register_round(_registration(holder)))
    zero = np.zeros((he_encoding.n_ciphertexts(N_VALUES), 2), dtype=np.int64)  # pairwise tags only: they sum to 0
    np.testing.assert_array_equal(decryptor.decrypt(0, N_VALUES, aggregate, zero), np.sum(values, axis=0))
    with pytest.raises(StudyFailed, match=f"the key holder refused block 1 of round 1: {REFUSAL}$"):
        decryptor.decrypt(1, N_VALUES, payloads[2], zero)
    assert "tag check" in _reasons(holder)[-1]
    with pytest.raises(StudyFailed, match="refused to register round 1: .*locked"):
        client.register_round(_registration(holder))


def test_hostile_decrypt_streams_get_the_uniform_refusal(served) -> None:
    client, holder = served
    holder.refusal_budget = 100
    stub = pb_grpc.KeyHolderStub(grpc.insecure_channel(client.address))
    registration, _ = holder.register(_registration(holder, block_values=(1, 1, 1)))

    def header(block: int, total_bytes: int = 10) -> pb.AggregateMessage:
        return pb.AggregateMessage(header=pb.AggregateHeader(study_id="s", round=1, block=block, n_values=1,
                                                             total_bytes=total_bytes, registration_id=registration))

    cases = {
        "must start with an AggregateHeader": [pb.AggregateMessage(chunk=pb.AggregateChunk(offset=0, data=b"x"))],
        "truncated": [header(0), pb.AggregateMessage(chunk=pb.AggregateChunk(offset=0, data=b"12345"))],
        "out of sequence": [header(1), pb.AggregateMessage(chunk=pb.AggregateChunk(offset=3, data=b"12345"))],
        "out of range for the block": [header(2, total_bytes=1 << 30)],
    }
    for reason, stream in cases.items():
        with pytest.raises(grpc.RpcError) as info:
            list(stub.DecryptAggregate(iter(stream), timeout=10))
        assert (info.value.code(), info.value.details()) == (grpc.StatusCode.PERMISSION_DENIED, REFUSAL)
        assert reason in _reasons(holder)[-1]


def test_unreachable_key_holder_is_a_clear_failure() -> None:
    client = KeyHolderClient("127.0.0.1:1", timeout=2, connect_timeout=1)
    with pytest.raises(StudyFailed, match="key holder"):
        client.wait_healthy()
    client.close()


def test_cli_keys_he(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "he", "--out", str(tmp_path / "kh")]) == 0
    out = capsys.readouterr().out
    fingerprint = he.context_fingerprint((tmp_path / "kh" / PUBLIC_FILE).read_bytes())
    assert f"public context sha256: {fingerprint}" in out and "--he-context" in out
    assert stat.S_IMODE((tmp_path / "kh" / SECRET_FILE).stat().st_mode) == 0o600
    assert main(["keys", "he", "--out", str(tmp_path / "kh")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["keyholder", "serve", "--keys", str(tmp_path / "nothing"), "--listen", "127.0.0.1:0",
                 "--insecure"]) == 2
    assert "cannot read the HE keys" in capsys.readouterr().err
    assert main(["keyholder", "serve", "--keys", str(tmp_path / "kh"), "--listen", "127.0.0.1:0",
                 "--tls-dir", str(tmp_path)]) == 2
    assert "--coordinator NAME" in capsys.readouterr().err
    assert main(["keyholder", "serve", "--keys", str(tmp_path / "kh"), "--listen", "127.0.0.1:0", "--insecure",
                 "--coordinator", "analyst"]) == 2
    assert "--coordinator needs --tls-dir" in capsys.readouterr().err
