"""Private cross-site overlap (engine/overlap.py): the count is right, and nobody learns which.

Engine-level checks of the DH private set intersection cardinality, an end-to-end ``fedgwas local
--overlap-check`` with real site processes, and the attacker's side: what the relaying coordinator sees
is unlinkable to the IDs, and a count over a subset of a site's set is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedgwas.cli import main
from coordinator.client import SiteClient, SiteEndpoint
from engine.errors import SiteFailure
from engine.tasks import CohortRequest
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from tests.consortium import provision_sites
from site_agent.server import make_server
from engine.cohort import overlap
from engine.errors import ProtocolError
from engine.simulate import SimulationSpec, simulate_study


def _exchange(a_ids: list[str], b_ids: list[str], study: str = "s") -> tuple[int, list[bytes], list[bytes]]:
    """The three phases between sites A and B; returns the count and what the relay saw."""
    ka, kb = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    pa, pb = (k.public_key().public_bytes_raw() for k in (ka, kb))
    key_a, key_b = overlap.id_key(ka, pb, study, "A", "B"), overlap.id_key(kb, pa, study, "B", "A")
    assert key_a == key_b
    sa, sb = overlap.blinding_scalar(ka, study, "A", "B"), overlap.blinding_scalar(kb, study, "B", "A")
    blinded_a = overlap.blind(overlap.hash_ids(a_ids, key_a), sa)
    double = overlap.blind(blinded_a, sb)
    single_b = overlap.blind(overlap.hash_ids(b_ids, key_b), sb)
    return overlap.count_shared(double, single_b, sa), blinded_a, single_b


def test_count_is_the_size_of_the_intersection() -> None:
    a = [f"P{i}" for i in range(0, 300)]
    b = [f"P{i}" for i in range(250, 400)]
    count, _, _ = _exchange(a, b)
    assert count == 50
    assert _exchange(a, [f"Q{i}" for i in range(100)])[0] == 0


def test_the_relay_cannot_link_blinded_values_to_ids() -> None:
    """What the coordinator relays: no value equals a plain or keyed hash it could compute, the same
    ID gives unrelated values at the two sites and in another study, and the lists are sorted."""
    ids = [f"P{i}" for i in range(50)]
    _, seen_a, seen_b = _exchange(ids, ids)
    _, other_study, _ = _exchange(ids, ids, study="another")
    guesses = {hashlib.sha256(x.encode()).digest() for x in ids} | \
        {hmac.new(b"", x.encode(), hashlib.sha256).digest() for x in ids}
    assert not guesses & (set(seen_a) | set(seen_b))
    assert not set(seen_a) & set(seen_b) and not set(seen_a) & set(other_study)
    assert seen_a == sorted(seen_a) and seen_b == sorted(seen_b)


def test_malformed_points_are_refused() -> None:
    scalar = X25519PrivateKey.generate()
    with pytest.raises(ProtocolError, match="32"):
        overlap.blind([b"short"], scalar)
    with pytest.raises(ProtocolError, match="small-order"):
        overlap.blind([bytes(32)], scalar)


@pytest.fixture(scope="module")
def shared_sites(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two simulated sites, the second also listing 3 of the first site's participants."""
    root = tmp_path_factory.mktemp("overlap")
    study = simulate_study(SimulationSpec(site_sizes=(40, 40), n_variants=20, seed=3, write_pooled=False), root)
    a, b = study.site_bfiles
    fam_a = Path(f"{a}.fam").read_text().splitlines()
    # site B's last 3 samples become site A's first 3 participants (same FID/IID)
    fam_b = Path(f"{b}.fam").read_text().splitlines()
    fam_b[-3:] = [" ".join(line.split()[:2] + old.split()[2:]) for line, old in zip(fam_a[:3], fam_b[-3:])]
    Path(f"{b}.fam").write_text("\n".join(fam_b) + "\n")
    return a, b, study.pheno_path


def test_local_study_reports_how_many_participants_two_sites_share(shared_sites, tmp_path: Path) -> None:
    a, b, pheno = shared_sites
    out = tmp_path / "out"
    code = main(["local", "--bfile", str(a), "--bfile", str(b), "--freq", "--overlap-check", "--out", str(out),
                 "--no-progress", "--insecure-transport"])
    assert code == 0
    summary = json.loads((out / "fedgwas.qc.summary.json").read_text())
    assert summary["participant_overlaps"] == {f"{Path(a).name}+{Path(b).name}": 3}


def test_a_count_over_part_of_a_sites_set_is_refused(shared_sites, tmp_path: Path) -> None:
    """The attacker's side: a coordinator that feeds site A a subset of its doubly blinded IDs (to learn
    whether those participants are shared) is refused; the whole set is counted."""
    a, b, pheno = shared_sites
    clients, servers = [], []
    configs = provision_sites(tmp_path, {"A": a, "B": b}, pheno, None)
    for name, config in configs.items():
        server, port = make_server(load_site_data(load_site_config(config)), "127.0.0.1:0")
        server.start()
        servers.append(server)
        clients.append(SiteClient(SiteEndpoint(name, f"127.0.0.1:{port}"), timeout=30))
    try:
        site_a, site_b = clients
        a_info, b_info = (site.describe("s1", CohortRequest(""))[0] for site in clients)
        key_a = (a_info.overlap_public_key, a_info.overlap_key_signature)
        key_b = (b_info.overlap_public_key, b_info.overlap_key_signature)
        # A key the coordinator substitutes (its own, or A's key under B's name) is refused.
        with pytest.raises(SiteFailure, match="not signed by 'B'"):
            site_a.compare_cohorts("s1", "blind", "B", (key_a[0], key_b[1]), CohortRequest(""))
        blinded, _, _ = site_a.compare_cohorts("s1", "blind", "B", key_b, CohortRequest(""))
        double, single, _ = site_b.compare_cohorts("s1", "reblind", "A", key_a, CohortRequest(""), first=blinded)
        with pytest.raises(SiteFailure, match="only the whole set is compared"):
            site_a.compare_cohorts("s1", "count", "B", key_b, CohortRequest(""), first=double[:5], second=single)
        assert site_a.compare_cohorts("s1", "count", "B", key_b, CohortRequest(""), first=double,
                                      second=single)[2] == 3
    finally:
        for client in clients:
            client.close()
        for server in servers:
            server.stop(grace=None)


def test_one_sided_exchange_tells_only_the_dropping_site_which_of_its_own_are_shared() -> None:
    """A learns exactly its participants that B lists, from what B returns in order; with B's reply
    sorted (the counting exchange) the positions no longer identify anyone."""
    a_ids = overlap.unique_ids([f"P{i}" for i in range(0, 60)])
    b_ids = overlap.unique_ids([f"P{i}" for i in range(50, 90)] + ["Q1"])
    ka, kb = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    key = overlap.id_key(ka, kb.public_key().public_bytes_raw(), "s", "A", "B")
    sa, sb = overlap.blinding_scalar(ka, "s", "A", "B"), overlap.blinding_scalar(kb, "s", "B", "A")
    sent = overlap.blind(overlap.hash_ids(a_ids, key), sa)
    in_order = overlap.blind(sent, sb, keep_order=True)
    single_b = overlap.blind(overlap.hash_ids(b_ids, key), sb)
    assert overlap.shared_own_ids(a_ids, key, sa, in_order, single_b) == sorted(f"P{i}" for i in range(50, 60))
    assert set(overlap.shared_own_ids(a_ids, key, sa, overlap.blind(sent, sb), single_b)) != \
        {f"P{i}" for i in range(50, 60)}  # sorted: the count survives, the identities do not
    assert len(set(overlap.blind(sent, sb)) & set(overlap.blind(single_b, sa))) == 10


def test_the_relay_learns_no_identity_in_the_one_sided_exchange() -> None:
    """What the coordinator relays when A drops its shared participants: still no value it could
    compute from a guessed ID, and B's in-order reply is unrelated to A's (re-blinded by B's secret)."""
    ids = [f"P{i}" for i in range(40)]
    ka, kb = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    key = overlap.id_key(ka, kb.public_key().public_bytes_raw(), "s", "A", "B")
    sa, sb = overlap.blinding_scalar(ka, "s", "A", "B"), overlap.blinding_scalar(kb, "s", "B", "A")
    sent = overlap.blind(overlap.hash_ids(ids, key), sa)
    in_order = overlap.blind(sent, sb, keep_order=True)
    single_b = overlap.blind(overlap.hash_ids(ids[20:], key), sb)
    guesses = {hashlib.sha256(x.encode()).digest() for x in ids} | \
        {hmac.new(b"", x.encode(), hashlib.sha256).digest() for x in ids}
    seen = set(sent) | set(in_order) | set(single_b)
    assert not guesses & seen and not set(sent) & set(in_order) and not set(in_order) & set(single_b)
    assert sorted(in_order) == overlap.blind(sent, sb)  # the same values as the counting exchange, reordered
    assert overlap.shared_own_ids(ids, key, sa, in_order, single_b) == sorted(ids[20:])


@pytest.fixture(scope="module")
def duplicated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sites A (people 0..219) and B (people 200..419): 20 participants at both, with the same IDs,
    genotypes and phenotype; ``pooled`` lists everyone once."""
    from engine.io.bed_writer import BedWriter, write_bim, write_fam

    root = tmp_path_factory.mktemp("duplicated")
    rng = np.random.default_rng(11)
    n, m = 420, 40
    g = rng.binomial(2, rng.uniform(0.05, 0.5, m), size=(n, m)).astype(np.int8)
    g[rng.random((n, m)) < 0.01] = -127
    fid, iid = np.array([f"F{i}" for i in range(n)]), np.array([f"I{i}" for i in range(n)])
    sex = rng.integers(1, 3, n).astype(np.int8)
    age = rng.uniform(20, 70, n).round(1)
    qt = 0.02 * age + 0.4 * np.where(g[:, 0] >= 0, g[:, 0], 0) + rng.normal(size=n)
    for name, rows in (("A", slice(0, 220)), ("B", slice(200, 420)), ("pooled", slice(0, 420))):
        write_fam(root / f"{name}.fam", fid[rows], iid[rows], sex[rows])
        write_bim(root / f"{name}.bim", np.array(["1"] * m), np.array([f"v{j}" for j in range(m)]),
                  np.arange(m) * 100 + 1, np.array(["A"] * m), np.array(["G"] * m))
        with BedWriter(root / f"{name}.bed", len(fid[rows])) as writer:
            writer.write_block(np.asfortranarray(g[rows]))
    (root / "pheno.txt").write_text("#FID IID QT\n" + "".join(f"{a} {b} {c:.5f}\n" for a, b, c in zip(fid, iid, qt)))
    (root / "covar.txt").write_text("#FID IID AGE\n" + "".join(f"{a} {b} {c}\n" for a, b, c in zip(fid, iid, age)))
    return root


def _local(root: Path, out: Path, *extra: str) -> dict:
    code = main(["local", "--bfile", str(root / "A"), "--bfile", str(root / "B"), "--pheno", str(root / "pheno.txt"),
                 "--pheno-name", "QT", "--covar", str(root / "covar.txt"), "--covar-name", "AGE", "--glm", "linear",
                 "--out", str(out), "--no-progress", "--insecure-transport", *extra])
    assert code == 0
    return json.loads((out / "QT.linear.summary.json").read_text())


@pytest.mark.parametrize("site", ["A", "B"])
def test_dropping_shared_participants_from_one_site_equals_plink2_on_everyone_once(duplicated: Path, tmp_path: Path,
                                                                                   site: str) -> None:
    from coordinator.results.gwas_ssf import read_gwas_ssf
    from tests.plink_tools import read_plink_table, run_plink2

    summary = _local(duplicated, tmp_path / "out", "--drop-shared-from", site)
    assert summary["participant_overlaps"] == {"A+B": 20}
    assert any(f"20 participant(s) shared with other sites left out at {site}" in note for note in summary["notes"])
    assert not any(note.startswith("warning: participants shared") for note in summary["notes"])
    assert {s["name"]: s["n_samples"] for s in summary["sites"]} == {"A": 220, "B": 220, site: 200}
    assert summary["n_samples"] == 420
    ours = read_gwas_ssf(tmp_path / "out" / "QT.linear.tsv.gz")
    run_plink2(["--bfile", str(duplicated / "pooled"), "--pheno", str(duplicated / "pheno.txt"), "--pheno-name", "QT",
                "--covar", str(duplicated / "covar.txt"), "--covar-name", "AGE", "--glm", "omit-ref", "hide-covar",
                "--out", str(tmp_path / "ref")], cwd=tmp_path)
    ref = read_plink_table(tmp_path / "ref.QT.glm.linear")
    assert list(ours["variant_id"]) == list(ref["ID"])
    np.testing.assert_array_equal(ours["n"], ref["OBS_CT"])
    np.testing.assert_allclose(ours["beta"], ref["BETA"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours["standard_error"], ref["SE"], rtol=1e-4)
    assert np.max(np.abs(ours["neg_log10_p"] + np.log10(ref["P"]))) < 1e-4


def test_without_the_option_shared_participants_are_counted_twice_with_a_warning(duplicated: Path,
                                                                                  tmp_path: Path) -> None:
    from coordinator.results.gwas_ssf import read_gwas_ssf

    summary = _local(duplicated, tmp_path / "out", "--overlap-check")
    assert summary["participant_overlaps"] == {"A+B": 20}
    warning = [note for note in summary["notes"] if note.startswith("warning: participants shared")]
    assert len(warning) == 1 and "A+B: 20" in warning[0] and "--drop-shared-from" in warning[0]
    n = read_gwas_ssf(tmp_path / "out" / "QT.linear.tsv.gz")["n"]
    assert np.max(n) > 420  # only 420 people: the shared ones are analysed twice


def test_the_dropping_site_records_it_and_refuses_a_study_it_holds_no_exclusion_for(duplicated: Path,
                                                                                     tmp_path: Path) -> None:
    """Over real servers: A leaves the 20 out of the study's cohorts (not of another study's), both
    sites record the step in their ledgers, and a task that says A dropped them is refused by an A
    that holds no exclusion for that study (an agent restarted since the exchange)."""
    from engine.tasks import DROP_SHARED_PARAMETER, TaskSpec
    from site_agent import handlers

    configs = provision_sites(tmp_path, {"A": duplicated / "A", "B": duplicated / "B"}, duplicated / "pheno.txt", None)
    datas = {name: load_site_data(load_site_config(config)) for name, config in configs.items()}
    clients, servers = [], []
    for name, data in datas.items():
        server, port = make_server(data, "127.0.0.1:0")
        server.start()
        servers.append(server)
        clients.append(SiteClient(SiteEndpoint(name, f"127.0.0.1:{port}"), timeout=30))
    try:
        site_a, site_b = clients
        cohort = CohortRequest("QT")
        a_info, b_info = (site.describe("s1", cohort)[0] for site in clients)
        key_a = (a_info.overlap_public_key, a_info.overlap_key_signature)
        key_b = (b_info.overlap_public_key, b_info.overlap_key_signature)
        blinded, _, _ = site_a.compare_cohorts("s1", "blind", "B", key_b, cohort, drop_shared=True)
        double, single, _ = site_b.compare_cohorts("s1", "reblind", "A", key_a, cohort, first=blinded, drop_shared=True)
        assert double != sorted(double)  # in A's order
        assert site_a.compare_cohorts("s1", "count", "B", key_b, cohort, first=double, second=single,
                                      drop_shared=True)[2] == 20
    finally:
        for client in clients:
            client.close()
        for server in servers:
            server.stop(grace=None)
    a = datas["A"]
    assert a.cohort(cohort, study_id="s1").n_samples == 200 and a.cohort(cohort, study_id="s2").n_samples == 220
    kept = set(a.genotypes.fam.iid[a.cohort(cohort, study_id="s1").sample_index])
    assert not kept & {f"I{i}" for i in range(200, 220)}
    for name, data in datas.items():
        entries = [e for e in data.ledger.entries() if e.kind == "overlap"]
        assert len(entries) == 1 and entries[0].study == "s1", name
    task = TaskSpec(study_id="s2", round=1, analysis="linear", cohort=cohort, privacy="secagg",
                    participants=("A", "B"), block_size=8, variant_index=np.arange(4), flip=np.zeros(4, dtype=bool),
                    parameters={DROP_SHARED_PARAMETER: "A"})
    with pytest.raises(ProtocolError, match="holds no such exclusion"):
        handlers._check_task(a, task)
    handlers._check_task(datas["B"], task)  # only the dropping site checks
    handlers._check_task(a, dataclasses.replace(task, study_id="s1"))
    with pytest.raises(ProtocolError, match="this task does not say so"):  # nor analyse them silently
        handlers._check_task(a, dataclasses.replace(task, study_id="s1", parameters={}))
