"""Benchmark: what signing and publishing the ledger head costs a site per ledger entry.

Appends entries to a fresh ledger (SQLite, WAL, ``synchronous=FULL``) three ways: without heads (the
ledger alone), with the head signed (Ed25519) and recorded in ``published-head.json`` after every
append, and with the head also pushed to a witness (a real gRPC server on loopback, co-signing and
appending to its own fsync'd file). Also times the auditor's recomputation of a DP charge through
OpenDP, per entry, and verifying one signed head. Usage::

    python benchmarks/ledger_heads.py [--entries 300] [--repeats 3]

Results are printed as Markdown and written to benchmarks/runs/<timestamp>-heads/result.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from engine.audit.heads import sign_head  # noqa: E402
from engine.audit.ledger import GENESIS, Ledger  # noqa: E402
from protos.witness_client import WitnessClient  # noqa: E402
from site_agent.head_publisher import HeadPublisher  # noqa: E402
from witness.server import make_server  # noqa: E402
from witness.store import WitnessStore  # noqa: E402


def _appends(directory: Path, entries: int, mode: str) -> float:
    """Seconds per append, for ``mode`` "ledger", "signed" or "witness"."""
    ledger = Ledger(directory / f"{mode}.sqlite", "site1", "site1")
    server = client = None
    if mode != "ledger":
        if mode == "witness":
            server, port = make_server(WitnessStore(directory / f"witness-{mode}"), "127.0.0.1:0")
            server.start()
            client = WitnessClient(f"127.0.0.1:{port}")
        key = Ed25519PrivateKey.generate()
        ledger.on_append = HeadPublisher("site1", key, directory / f"{mode}-head.json", client,
                                         sign_head(key, "site1", 0, GENESIS))
    started = time.perf_counter()
    for k in range(entries):
        ledger.append(kind="refused", study="bench", message=f"entry {k}")
    elapsed = (time.perf_counter() - started) / entries
    if client is not None:
        client.close()
    if server is not None:
        server.stop(grace=None)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, float] = {}
    for mode in ("ledger", "signed", "witness"):
        best = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                best.append(_appends(Path(tmp), args.entries, mode))
        results[mode] = min(best)
    key = Ed25519PrivateKey.generate()
    head = sign_head(key, "site1", 1, "a" * 64)
    started = time.perf_counter()
    for _ in range(1000):
        head.verify()
    results["verify_head"] = (time.perf_counter() - started) / 1000
    from engine.privacy import dp

    started = time.perf_counter()
    dp.calibrate("gaussian", 0.6, 1e-6, 7.0710678, 200)  # an uncached calibration, as for a new entry
    results["recompute_charge"] = time.perf_counter() - started
    print(f"| step | per entry (best of {args.repeats}, {args.entries} entries) |")
    print("|---|---|")
    labels = {"ledger": "append (ledger only)", "signed": "append + sign head + record (fsync)",
              "witness": "append + sign + record + witness co-signature (loopback gRPC)",
              "verify_head": "verify one signed head (auditor)",
              "recompute_charge": "recompute one DP charge through OpenDP (auditor, uncached)"}
    for name, seconds in results.items():
        print(f"| {labels[name]} | {seconds * 1e3:.2f} ms |")
    out = ROOT / "benchmarks" / "runs" / f"{time.strftime('%Y%m%dT%H%M%S')}-heads"
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps({"seconds": results, "entries": args.entries,
                                                 "repeats": args.repeats, "machine": platform.platform(),
                                                 "python": sys.version.split()[0]}, indent=2))


if __name__ == "__main__":
    main()
