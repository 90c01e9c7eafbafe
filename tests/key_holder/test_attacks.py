"""Attacks on the key holder from the caller's side, over real mutual TLS on port 0.

A site (or any other holder of a consortium certificate) asks it for anything; a coordinator probes it
with refused decryptions, re-sends an aggregate under another registration, restarts it to make it
forget, streams more than it may or stalls. Each is refused with the one uniform answer, recorded in
the key holder's store, and releases nothing.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator

import grpc
import numpy as np
import pytest

from fedgwas.cli import main
from engine.privacy.he_rounds import RoundRegistration
from key_holder.keys import PUBLIC_FILE, REFUSAL, SECRET_FILE, KeyHolder, write_key_files
from coordinator.key_holder_client import KeyHolderClient
from key_holder.server import make_server, open_holder
from engine.privacy import he, he_encoding
from engine.errors import ConfigError, StudyFailed
from key_holder.store import STORE_FILE, KeyHolderStore
from protos import key_holder_pb2 as pb
from protos import key_holder_pb2_grpc as pb_grpc
from protos.guards import ServerMeter
from protos.limits import ServerLimits
from protos.pki import dev_pki
from protos.tls import secure_channel
from tests.engine.privacy.test_he import _blocks

N_VALUES = 3000
COORDINATOR = "analyst"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    return dev_pki(tmp_path_factory.mktemp("pki"), [COORDINATOR, "site1", "keyholder"])


@pytest.fixture(scope="module")
def master_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    write_key_files(directory)
    return directory


@pytest.fixture
def keys(master_keys: Path, tmp_path: Path) -> Path:
    """A keys directory of its own (the store lives there), with the module's key pair."""
    directory = tmp_path / "keys"
    directory.mkdir()
    for name in (SECRET_FILE, PUBLIC_FILE):
        shutil.copy2(master_keys / name, directory / name)
    return directory


@pytest.fixture(scope="module")
def public(master_keys: Path) -> he.PublicContext:
    return he.PublicContext((master_keys / PUBLIC_FILE).read_bytes())


class Running:
    """A key holder served over mutual TLS, with clients for the coordinator and for a site."""

    def __init__(self, keys: Path, pki, budget: int, limits: ServerLimits) -> None:
        self.holder: KeyHolder = open_holder(keys, (COORDINATOR,), refusal_budget=budget)
        self.meter = ServerMeter()
        self.server, port = make_server(self.holder, "127.0.0.1:0", tls=pki["keyholder"], limits=limits,
                                        meter=self.meter)
        self.server.start()
        self.address = f"127.0.0.1:{port}"
        self.pki = pki
        self.analyst = KeyHolderClient(self.address, timeout=30, connect_timeout=10, tls=pki[COORDINATOR])
        self.site = KeyHolderClient(self.address, timeout=30, connect_timeout=10, tls=pki["site1"])

    def stub(self, who: str) -> pb_grpc.KeyHolderStub:
        return pb_grpc.KeyHolderStub(secure_channel(self.address, self.pki[who], "keyholder"))

    def stop(self) -> None:
        self.analyst.close()
        self.site.close()
        self.server.stop(grace=None).wait()


@pytest.fixture
def start(keys: Path, pki) -> Iterator:
    running: list[Running] = []

    def _start(budget: int = 100, limits: ServerLimits = ServerLimits()) -> Running:
        running.append(Running(keys, pki, budget, limits))
        return running[-1]

    yield _start
    for item in running:
        item.stop()


def _registration(fingerprint: str, study: str = "s", round_: int = 1) -> RoundRegistration:
    return RoundRegistration(study_id=study, round=round_, participants=("site0", "site1", "site2"),
                             block_values=(N_VALUES, N_VALUES, N_VALUES), encoding=he_encoding.ENCODING,
                             context_sha256=fingerprint)


def _aggregate(public: he.PublicContext, block: int, scale: float = 1.0) -> tuple[bytes, list[bytes], np.ndarray]:
    values = [np.arange(N_VALUES) * scale + i + 1000 * block for i in range(3)]  # distinct totals per block
    _, payloads = _blocks(public, values, block)
    total = public.load(payloads[0], 1)
    for payload in payloads[1:]:
        total.add(public.load(payload, 1))
    return total.to_bytes(), payloads, np.sum(values, axis=0)


def _refusals(holder: KeyHolder) -> list[tuple[str, str, int]]:
    return [(e.caller, e.details["reason"], e.counted) for e in holder.store.events() if e.kind == "refused"]


def _answer(stub: pb_grpc.KeyHolderStub, messages: list[pb.AggregateMessage]) -> tuple:
    """What a caller sees of a refused DecryptAggregate: status, message and trailing metadata."""
    with pytest.raises(grpc.RpcError) as info:
        list(stub.DecryptAggregate(iter(messages), timeout=30))
    return info.value.code(), info.value.details(), tuple(info.value.trailing_metadata() or ())


def _stream(registration: str, block: int, ciphertext: bytes, n_values: int = N_VALUES,
            study: str = "s") -> list[pb.AggregateMessage]:
    header = pb.AggregateHeader(study_id=study, round=1, block=block, n_values=n_values,
                                total_bytes=len(ciphertext), registration_id=registration)
    chunks = [pb.AggregateMessage(chunk=pb.AggregateChunk(offset=o, data=ciphertext[o: o + (1 << 20)]))
              for o in range(0, len(ciphertext), 1 << 20)]
    return [pb.AggregateMessage(header=header), *chunks]


def test_a_caller_other_than_the_coordinator_is_refused_whatever_it_asks(start, public) -> None:
    kh = start(budget=1)
    registration = kh.analyst.register_round(_registration(kh.holder.fingerprint))
    aggregate, _, expected = _aggregate(public, 0)
    for attempt in (kh.site.public_context, lambda: kh.site.register_round(_registration(kh.holder.fingerprint)),
                    lambda: kh.site.decrypt(registration, "s", 1, 0, N_VALUES, aggregate)):
        with pytest.raises(StudyFailed, match=f": {REFUSAL}$"):
            attempt()
    # 64 x 4 MiB behind a header: refused on the caller's identity, before a single byte is buffered.
    big = [pb.AggregateMessage(header=pb.AggregateHeader(study_id="s", round=1, block=0, n_values=N_VALUES,
                                                         total_bytes=64 << 22, registration_id=registration))]
    big += [pb.AggregateMessage(chunk=pb.AggregateChunk(offset=i << 22, data=bytes(4 << 20))) for i in range(64)]
    code, details, _ = _answer(kh.stub("site1"), big)
    assert (code, details) == (grpc.StatusCode.PERMISSION_DENIED, REFUSAL)
    assert kh.meter.buffered_bytes == 0
    # Recorded once per minute and caller (each refusal is logged), never counted against the budget.
    assert _refusals(kh.holder) == [("site1", "'site1' is not a configured coordinator (fetch the public context)", 0)]
    # None of it counted against the budget (1) nor touched the block: the coordinator still decrypts it.
    np.testing.assert_array_equal(kh.analyst.decrypt(registration, "s", 1, 0, N_VALUES, aggregate), expected)
    assert kh.meter.buffered_bytes == len(aggregate)


def test_every_refused_decryption_gets_the_same_answer(start, public) -> None:
    kh = start(budget=100)
    fingerprint = kh.holder.fingerprint
    registration = kh.analyst.register_round(_registration(fingerprint))
    aggregate, payloads, _ = _aggregate(public, 0)
    np.testing.assert_array_equal(len(kh.analyst.decrypt(registration, "s", 1, 0, N_VALUES, aggregate)), N_VALUES)
    other = kh.analyst.register_round(_registration(fingerprint, study="t"))
    third = kh.analyst.register_round(_registration(fingerprint, study="u"))
    analyst = kh.stub(COORDINATOR)
    attempts = {
        "not registered": (analyst, _stream("f" * 32, 1, aggregate)),
        "does not match the registration": (analyst, _stream(registration, 1, aggregate, n_values=N_VALUES - 1)),
        "already decrypted": (analyst, _stream(registration, 0, aggregate)),
        "tag check": (analyst, _stream(registration, 2, _aggregate(public, 2)[1][0])),  # one site's block alone
        "decrypted before": (analyst, _stream(other, 0, aggregate, study="t")),  # the same aggregate, new registration
        "not a valid CKKS": (analyst, _stream(third, 1, aggregate[:-5000], study="u")),
        "not a configured coordinator": (kh.stub("site1"), _stream(registration, 1, _aggregate(public, 1)[0])),
    }
    answers = set()
    for reason, (stub, stream) in attempts.items():
        answers.add(_answer(stub, stream))
        assert reason in _refusals(kh.holder)[-1][1]
    answers.add(_answer(kh.stub("site1"), []))  # again within the minute: not recorded, the same answer
    assert len(answers) == 1, answers  # the same status, message and metadata whatever failed
    code, details, metadata = answers.pop()
    detail = pb.ErrorDetail.FromString(dict(metadata)["fedgwas-error-bin"])
    assert (code, details, detail.message, detail.kind) == (grpc.StatusCode.PERMISSION_DENIED, REFUSAL, REFUSAL,
                                                             "KeyHolderRefusal")


def test_refusals_lock_decryption_until_an_operator_resets_it(start, public, keys: Path, capsys) -> None:
    kh = start(budget=2)
    registration = kh.analyst.register_round(_registration(kh.holder.fingerprint))
    for block in (0, 1):  # two probes: single-site ciphertexts passed off as aggregates, under fresh study ids
        probe = kh.analyst.register_round(_registration(kh.holder.fingerprint, study=f"probe{block}"))
        with pytest.raises(StudyFailed, match=REFUSAL):
            kh.analyst.decrypt(probe, f"probe{block}", 1, block, N_VALUES, _aggregate(public, block)[1][0])
    # Locked for everyone and every study: an honest aggregate is refused, registrations too.
    aggregate, _, expected = _aggregate(public, 0)
    with pytest.raises(StudyFailed, match=f": {REFUSAL}$"):
        kh.analyst.decrypt(registration, "s", 1, 0, N_VALUES, aggregate)
    with pytest.raises(StudyFailed, match="decryption is locked at the key holder.*reset-lock"):
        kh.analyst.register_round(_registration(kh.holder.fingerprint, study="new"))
    assert main(["keyholder", "status", "--keys", str(keys)]) == 0
    assert "decryption LOCKED; 3 counted refusal(s)" in capsys.readouterr().out
    assert main(["keyholder", "reset-lock", "--keys", str(keys.parent), "--reason", "x"]) == 2  # no store there
    assert main(["keyholder", "reset-lock", "--keys", str(keys), "--reason", " "]) == 2
    assert main(["keyholder", "reset-lock", "--keys", str(keys), "--reason", "probes reviewed with the analyst"]) == 0
    assert "3 counted refusal(s) cleared" in capsys.readouterr().out
    # The running key holder decrypts again (the block refused while locked stays consumed).
    aggregate, _, expected = _aggregate(public, 1)
    np.testing.assert_array_equal(kh.analyst.decrypt(registration, "s", 1, 1, N_VALUES, aggregate), expected)
    kinds = [e.kind for e in kh.holder.store.events()]
    assert kinds.count("locked") == 1 and kinds.count("reset") == 1 and kinds[-1] == "released"


def test_a_restart_forgets_nothing(start, public, keys: Path) -> None:
    kh = start(budget=2)
    registration = kh.analyst.register_round(_registration(kh.holder.fingerprint))
    aggregate0, _, expected0 = _aggregate(public, 0)
    np.testing.assert_array_equal(kh.analyst.decrypt(registration, "s", 1, 0, N_VALUES, aggregate0), expected0)
    kh.stop()
    kh = start(budget=2)  # a new process would do the same: everything comes from keys/key_holder.sqlite
    with pytest.raises(StudyFailed, match=REFUSAL):
        kh.analyst.decrypt(registration, "s", 1, 0, N_VALUES, _aggregate(public, 0)[0])  # block 0 again
    aggregate1, _, expected1 = _aggregate(public, 1)
    np.testing.assert_array_equal(kh.analyst.decrypt(registration, "s", 1, 1, N_VALUES, aggregate1), expected1)
    with pytest.raises(StudyFailed, match=REFUSAL):  # the second refusal spends the budget: locked
        kh.analyst.decrypt(registration, "s", 1, 2, N_VALUES, _aggregate(public, 2)[1][1])
    kh.stop()
    kh = start(budget=100)  # a larger budget at restart does not unlock: only the operator does
    with pytest.raises(StudyFailed, match="decryption is locked"):
        kh.analyst.register_round(_registration(kh.holder.fingerprint, study="after-restart"))
    reasons = [r for _, r, _ in _refusals(kh.holder)]
    assert len(reasons) == 2 and reasons[0] == "the block was already decrypted or refused" and "tag check" in reasons[1]


def test_an_aggregate_is_not_decrypted_again_under_another_registration(start, public) -> None:
    kh = start(budget=100)
    first = kh.analyst.register_round(_registration(kh.holder.fingerprint))
    aggregate, _, expected = _aggregate(public, 0)
    np.testing.assert_array_equal(kh.analyst.decrypt(first, "s", 1, 0, N_VALUES, aggregate), expected)
    # The same study and round registered again (as a re-run would), and an unrelated study.
    again = kh.analyst.register_round(_registration(kh.holder.fingerprint))
    unrelated = kh.analyst.register_round(_registration(kh.holder.fingerprint, study="unrelated", round_=7))
    with pytest.raises(StudyFailed, match=REFUSAL):
        kh.analyst.decrypt(again, "s", 1, 0, N_VALUES, aggregate)
    assert _refusals(kh.holder)[-1][1] == "this ciphertext was decrypted before"
    with pytest.raises(StudyFailed, match=REFUSAL):
        kh.analyst.decrypt(unrelated, "unrelated", 7, 0, N_VALUES, aggregate)
    # Re-randomised (CKKS is malleable): the aggregate plus a fresh encryption of zero has other bytes
    # and decrypts to the same totals, which is all it yields; the store shows the same release twice.
    rerandomised = public.load(aggregate, 1)
    rerandomised.add(public.load(public.encrypt(np.zeros((1, he_encoding.SLOTS_PER_CIPHERTEXT), complex)), 1))
    assert rerandomised.to_bytes() != aggregate
    fresh = kh.analyst.register_round(_registration(kh.holder.fingerprint, study="fresh"))  # 'unrelated' is locked
    np.testing.assert_array_equal(kh.analyst.decrypt(fresh, "fresh", 1, 0, N_VALUES, rerandomised.to_bytes()),
                                  expected)
    released = [e for e in kh.holder.store.events() if e.kind == "released"]
    assert len(released) == 2 and released[0].release_sha256 == released[1].release_sha256
    assert released[0].ciphertext_sha256 != released[1].ciphertext_sha256
    kh.stop()  # and after a restart, under yet another registration
    kh = start(budget=100)
    after = kh.analyst.register_round(_registration(kh.holder.fingerprint, study="after-restart"))
    with pytest.raises(StudyFailed, match=REFUSAL):
        kh.analyst.decrypt(after, "after-restart", 1, 0, N_VALUES, aggregate)
    assert _refusals(kh.holder)[-1][1] == "this ciphertext was decrypted before"


def test_a_tampered_store_stops_the_key_holder(start, keys: Path, public) -> None:
    kh = start()
    kh.analyst.register_round(_registration(kh.holder.fingerprint))
    kh.stop()
    with sqlite3.connect(keys / STORE_FILE) as connection:
        connection.execute("UPDATE events SET detail = replace(detail, 'site2', 'sybil') WHERE kind = 'registered'")
    with pytest.raises(ConfigError, match="was tampered with: event 1 was edited"):
        KeyHolderStore(keys / STORE_FILE)
    with sqlite3.connect(keys / STORE_FILE) as connection:
        connection.execute("DELETE FROM events")
    assert KeyHolderStore(keys / STORE_FILE).events() == []  # an emptied store is a fresh one: keep it backed up


def test_stalled_streams_are_cut_and_do_not_block_the_coordinator(start, public) -> None:
    kh = start(limits=ServerLimits(header_seconds=1.0, idle_seconds=1.0, untrusted_rpcs=2))
    registration = kh.analyst.register_round(_registration(kh.holder.fingerprint))
    release = threading.Event()

    def stall(first: list[pb.AggregateMessage]) -> Iterator[pb.AggregateMessage]:
        yield from first
        release.wait(30)

    outcomes: list[grpc.StatusCode] = []

    def call(who: str, first: list[pb.AggregateMessage]) -> None:
        try:
            list(kh.stub(who).DecryptAggregate(stall(first), timeout=30))
        except grpc.RpcError as error:
            outcomes.append(error.code())

    aggregate, _, expected = _aggregate(public, 0)
    header_only = _stream(registration, 0, aggregate)[:2]  # the header and one chunk, then silence
    # Four streams that never send a header and one that stops after its first chunk, all under the
    # coordinator's own certificate (a site's are refused on its identity before anything is read).
    threads = [threading.Thread(target=call, args=(COORDINATOR, [])) for _ in range(4)]
    threads += [threading.Thread(target=call, args=(COORDINATOR, header_only))]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    np.testing.assert_array_equal(kh.analyst.decrypt(registration, "s", 1, 1, N_VALUES, _aggregate(public, 1)[0]),
                                  _aggregate(public, 1)[2])
    assert time.monotonic() - started < 5
    for thread in threads:
        thread.join(20)
    release.set()
    assert [c.name for c in outcomes] == ["CANCELLED"] * 5, outcomes
    assert kh.meter.cut == 5
    # The cut stream consumed nothing: block 0 still decrypts.
    np.testing.assert_array_equal(kh.analyst.decrypt(registration, "s", 1, 0, N_VALUES, aggregate), expected)
