"""The ledger-head witness over real gRPC (port 0): co-signing, append-only refusals, persistence, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.audit.heads import read_public_key, sign_head
from engine.errors import HeadError
from protos.witness_client import WitnessClient
from witness.server import make_server
from witness.store import WitnessStore

ROOT = Path(__file__).resolve().parents[2]
H1, H2, H3 = "1" * 64, "2" * 64, "3" * 64


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[tuple[WitnessClient, Path]]:
    server, port = make_server(WitnessStore(tmp_path / "w"), "127.0.0.1:0")
    server.start()
    client = WitnessClient(f"127.0.0.1:{port}")
    yield client, tmp_path / "w"
    client.close()
    server.stop(grace=None)


def test_the_witness_cosigns_heads_that_move_forward_and_refuses_the_rest(witness) -> None:
    client, directory = witness
    key = Ed25519PrivateKey.generate()
    first = client.submit(sign_head(key, "site1", 1, H1))
    second = client.submit(sign_head(key, "site1", 2, H2))
    assert first.witness_key == second.witness_key == read_public_key(directory / "witness.key.pub")
    assert client.submit(second_head := sign_head(key, "site1", 2, H2)).verify(second_head)  # re-signed later: kept
    assert client.submit(second_head) == client.submit(second_head)  # the very same head: idempotent
    with pytest.raises(HeadError, match=r"refused \(HeadError\): site 'site1': rolled back from seq 2 to 1"):
        client.submit(sign_head(key, "site1", 1, H1))
    with pytest.raises(HeadError, match="conflicting heads at seq 2"):
        client.submit(sign_head(key, "site1", 2, H3))
    with pytest.raises(HeadError, match="signed by an unknown key"):
        client.submit(sign_head(Ed25519PrivateKey.generate(), "site1", 3, H3))
    forged = sign_head(key, "site1", 3, H3)
    with pytest.raises(HeadError, match=r"refused \(ProtocolError\): .* does not verify"):
        client.submit(type(forged)(forged.site, 4, forged.hash, forged.time, forged.public_key, forged.signature))
    # Another site is independent; the refused heads were not kept.
    client.submit(sign_head(Ed25519PrivateKey.generate(), "site2", 5, H1))
    key_bytes, held = client.heads("site1")
    assert [h.seq for h, _ in held] == [1, 2, 2] and key_bytes == first.witness_key
    assert [h.seq for h, _ in client.heads("site1", latest_only=True)[1]] == [2]
    assert sorted(h.site for h, _ in client.heads("")[1]) == ["site1"] * 3 + ["site2"]


def test_the_witness_keeps_its_heads_and_rules_across_restarts(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    store = WitnessStore(tmp_path / "w")
    store.submit(sign_head(key, "site1", 4, H1))
    reopened = WitnessStore(tmp_path / "w")
    assert reopened.public_key == store.public_key and [h.seq for h, _ in reopened.heads("site1")] == [4]
    with pytest.raises(HeadError, match="rolled back from seq 4 to 3"):
        reopened.submit(sign_head(key, "site1", 3, H2))
    # An edited record of heads is refused when the witness starts.
    path = tmp_path / "w" / "heads.jsonl"
    path.write_text(path.read_text().replace('"seq": 4', '"seq": 9'))
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="heads.jsonl' line 1: the head of site 'site1' at seq 9"):
        WitnessStore(tmp_path / "w")


def test_fedgwas_witness_serve_runs_until_terminated(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    process = subprocess.Popen([sys.executable, "-m", "fedgwas", "witness", "serve", "--dir", str(tmp_path / "w"),
                                "--listen", "127.0.0.1:0", "--ready-file", str(ready)],
                               cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        client = WitnessClient(info["address"])
        cosignature = client.submit(sign_head(Ed25519PrivateKey.generate(), "site1", 1, H1))
        assert cosignature.witness_key.hex() == info["key"]
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert (tmp_path / "w" / "heads.jsonl").read_text().count("\n") == 1


def test_refusals_have_their_status_on_the_wire(witness) -> None:
    import grpc

    from protos import witness_pb2 as pb
    from protos import witness_pb2_grpc as pb_grpc
    from protos.witness_client import head_to_proto

    client, _ = witness
    key = Ed25519PrivateKey.generate()
    client.submit(sign_head(key, "site1", 2, H2))
    with grpc.insecure_channel(client.address) as channel:
        stub = pb_grpc.WitnessStub(channel)
        for request, code in ((head_to_proto(sign_head(key, "site1", 1, H1)), grpc.StatusCode.FAILED_PRECONDITION),
                              (pb.SignedHead(site="site1", seq=3, hash=H3, time="t", public_key=bytes(32),
                                             signature=bytes(64)), grpc.StatusCode.INVALID_ARGUMENT),
                              (pb.SignedHead(site="site1", seq=3, hash="not hex"), grpc.StatusCode.INVALID_ARGUMENT)):
            with pytest.raises(grpc.RpcError) as caught:
                stub.Submit(request, timeout=10)
            assert caught.value.code() == code
