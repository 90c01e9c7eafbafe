"""Benchmark: the cost of the malicious-coordinator protocol (issue 11) against the previous secagg.

Runs ``fedgwas local --privacy secagg`` on the same simulated data (default 10,000 samples x 100,000
variants, 3 sites, 5 covariates; cached under benchmarks/data/ as by linear_vs_plink2.py) alternately
with the previous protocol (a checkout given by ``--base``, e.g. ``git archive <commit> | tar -x -C
DIR``) and with this checkout, and reports the best wall time of each and their ratio. It also
measures the bytes the round's key phases add per site (signed keys, encrypted Shamir shares,
survivor set and signatures, revealed shares) from the real protobuf messages. Usage::

    python benchmarks/secure_round_overhead.py --base /tmp/fedgwas-base [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.linear_vs_plink2 import COVARIATES, simulate  # noqa: E402
from engine.privacy import roster as roster_module  # noqa: E402
from engine.privacy.roster import Roster, RosterEntry  # noqa: E402
from engine.privacy.secure_round import SiteRound  # noqa: E402
from protos import round_messages  # noqa: E402
from protos import site_agent_pb2 as pb  # noqa: E402


def run_local(checkout: Path, study: object, out: Path) -> float:
    module = "fedgwas" if (checkout / "fedgwas" / "__main__.py").exists() else "coordinator"  # before the restructure
    command = [sys.executable, "-m", module, "local",
               *[a for b in study.site_bfiles for a in ("--bfile", str(b))],  # type: ignore[attr-defined]
               "--pheno", str(study.pheno_path), "--pheno-name", "QT",  # type: ignore[attr-defined]
               "--covar", str(study.covar_path), "--covar-name", ",".join(COVARIATES),  # type: ignore[attr-defined]
               "--glm", "linear", "--privacy", "secagg", "--out", str(out), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(checkout))
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env, cwd=checkout)
    return time.perf_counter() - started


def key_phase_bytes(n_sites: int) -> dict[str, int]:
    """Bytes one site sends and receives in the key phases of one round of ``n_sites`` (real messages)."""
    names = [f"site{i}" for i in range(1, n_sites + 1)]
    keys = {n: roster_module.generate_identity_key() for n in names}
    roster = Roster(tuple(RosterEntry(n, roster_module.public_bytes(k)) for n, k in keys.items()))
    rounds = {n: SiteRound(n, keys[n], roster, names, 0, b"d" * 32, 2) for n in names}
    ads = [r.advertisement for r in rounds.values()]
    for r in rounds.values():
        r.receive_keys(ads)
    shares = {n: r.shares() for n, r in rounds.items()}
    for n, r in rounds.items():
        r.receive_shares([s for out in shares.values() for s in out if s.recipient == n])
    signatures = [r.sign_survivors(names) for r in rounds.values()]
    reveal = rounds[names[0]].reveal(signatures)
    me = names[0]
    sent = (pb.TaskEvent(keys=round_messages.advertisement_to_proto(rounds[me].advertisement)).ByteSize()
            + pb.TaskEvent(shares=round_messages.shares_to_proto(shares[me])).ByteSize()
            + pb.TaskEvent(survivor_signature=round_messages.survivor_signature_to_proto(signatures[0])).ByteSize()
            + pb.TaskEvent(reveal=round_messages.reveal_to_proto(reveal)).ByteSize())
    received = (round_messages.peer_keys_to_proto(ads).ByteSize()
                + pb.TaskMessage(share_bundle=round_messages.shares_to_proto(
                    [s for out in shares.values() for s in out if s.recipient == me])).ByteSize()
                + pb.TaskMessage(survivors=pb.SurvivorSet(sites=names)).ByteSize()
                + pb.TaskMessage(survivor_signatures=pb.SurvivorSignatures(signatures=[
                    round_messages.survivor_signature_to_proto(s) for s in signatures])).ByteSize())
    return {"sent_per_site": sent, "received_per_site": received}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="checkout of the previous protocol")
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--variants", type=int, default=100_000)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    study = simulate(args.samples, args.variants, args.sites, args.seed)
    work = ROOT / "benchmarks" / "runs" / "secure_round_overhead"
    times: dict[str, list[float]] = {"previous": [], "new": []}
    for repeat in range(args.repeats):
        for label, checkout in (("previous", args.base.resolve()), ("new", ROOT)):
            times[label].append(run_local(checkout, study, work / f"{label}-{repeat}"))
            print(f"repeat {repeat + 1}: {label} {times[label][-1]:.1f} s", flush=True)
    best = {label: min(values) for label, values in times.items()}
    result = {"samples": args.samples, "variants": args.variants, "sites": args.sites, "times_s": times,
              "best_s": best, "ratio_new_over_previous": best["new"] / best["previous"],
              "key_phase_bytes": key_phase_bytes(args.sites)}
    print(json.dumps(result, indent=2))
    (work / "result.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
