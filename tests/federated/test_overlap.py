"""Private cross-site overlap (engine/overlap.py): the count is right, and nobody learns which.

Engine-level checks of the DH private set intersection cardinality, an end-to-end ``fedgwas local
--overlap-check`` with real site processes, and the attacker's side: what the relaying coordinator sees
is unlinkable to the IDs, and a count over a subset of a site's set is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

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
