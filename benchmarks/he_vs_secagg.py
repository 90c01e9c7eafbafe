"""Benchmark: homomorphic encryption (``--privacy he``) vs secure aggregation on the linear study.

On the cached data of ``benchmarks/linear_vs_plink2.py`` (default 10,000 samples x 100,000 variants,
3 sites, 5 covariates): the wall time of ``fedgwas local`` under each mode (site, key-holder and
coordinator processes started, statistics protected, streamed, aggregated, released, solved and
written), the bytes each site sent, the peak memory of every process, the agreement of the two
results, and a per-block breakdown of where HE spends its time. Usage::

    python benchmarks/he_vs_secagg.py [--samples 10000] [--variants 100000] [--sites 3] [--repeats 2]
    python benchmarks/he_vs_secagg.py --base DIR [--repeats 2]   # he only: a previous checkout vs this tree

Results are printed as Markdown and written to benchmarks/runs/<timestamp>-he/result.json.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import linear_vs_plink2 as base  # noqa: E402  (also puts the repository on sys.path)

from engine.privacy import he, he_encoding, ring, secagg  # noqa: E402
from engine.privacy.protection import make_protector  # noqa: E402
from protos import key_holder_pb2  # noqa: E402
from secure_round_overhead import key_phase_bytes  # noqa: E402

ROOT = base.ROOT
#: Runs the coordinator in-process and reports its own peak RSS (sites and key holder are children).
MEASURED_COORDINATOR = """
import json, resource, sys, time
from fedgwas.cli import main
started = time.perf_counter()
code = main(sys.argv[2:])
json.dump({"code": code, "seconds": time.perf_counter() - started,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, open(sys.argv[1], "w"))
sys.exit(code)
"""


def run_mode(study, out: Path, privacy: str, tree: Path = ROOT) -> dict:
    """One ``fedgwas local`` run of the code in ``tree``; wall time measured around the whole command,
    as in linear_vs_plink2."""
    command = [sys.executable, "-c", MEASURED_COORDINATOR, str(out) + ".coordinator.json", "local",
               *[a for b in study.site_bfiles for a in ("--bfile", str(b))],
               "--pheno", str(study.pheno_path), "--pheno-name", "QT", "--covar", str(study.covar_path),
               "--covar-name", ",".join(base.COVARIATES), "--glm", "linear", "--privacy", privacy,
               "--out", str(out), "--no-progress"]
    if privacy == "he":  # keys are generated once per output directory; do it outside the timing
        subprocess.run([sys.executable, "-m", "fedgwas", "keys", "he", "--out", str(out / "keyholder")],
                       check=True, capture_output=True, env=dict(os.environ, PYTHONPATH=str(tree)), cwd=tree)
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=dict(os.environ, PYTHONPATH=str(tree)), cwd=tree)
    wall = time.perf_counter() - started
    coordinator = json.loads(Path(str(out) + ".coordinator.json").read_text())
    summary = json.loads((out / "QT.linear.summary.json").read_text())
    site_seconds = {}
    for log in sorted(out.glob("sites/*/agent.log")):
        found = re.findall(r"in \d+ blocks, ([\d.]+) s, peak RSS", log.read_text())
        if found:
            site_seconds[log.parent.name] = float(found[-1])
    result = {"wall_seconds": wall, "phase_seconds": summary["phase_seconds"], "site_task_seconds": site_seconds,
              "bytes_sent": {s["name"]: s["bytes_sent"] for s in summary["sites"]},
              "n_variants": summary["n_variants_tested"],
              "peak_rss_mib": {"sites": base.peak_rss_mib(out), "coordinator": coordinator["peak_rss_mib"]}}
    if privacy == "he":
        found = re.findall(r"peak RSS (\d+) MiB", (out / "keyholder" / "keyholder.log").read_text())
        result["peak_rss_mib"]["key_holder"] = float(found[-1]) if found else None
    return result


def _read(path: Path) -> dict[str, np.ndarray]:
    with gzip.open(path, "rt") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in handle]
    column = {name: i for i, name in enumerate(header)}

    def values(name: str) -> np.ndarray:
        return np.array([np.nan if r[column[name]] == "#NA" else float(r[column[name]]) for r in rows])

    return {name: values(name) for name in ("beta", "standard_error", "p_value")}


def agreement(he_out: Path, secagg_out: Path) -> dict[str, float]:
    ours, reference = _read(he_out / "QT.linear.tsv.gz"), _read(secagg_out / "QT.linear.tsv.gz")
    ok = np.isfinite(reference["beta"]) & np.isfinite(ours["beta"]) & (reference["p_value"] > 0)
    return {"max_abs_dbeta_over_se": float(np.max(np.abs(ours["beta"][ok] - reference["beta"][ok])
                                                  / reference["standard_error"][ok])),
            "max_abs_dlog10p": float(np.max(np.abs(np.log10(ours["p_value"][ok]) - np.log10(reference["p_value"][ok])))),
            "variants_compared": int(ok.sum())}


def block_breakdown(n_sites: int, block_variants: int = 8192, width: int = 36, repeats: int = 3) -> dict[str, float]:
    """Seconds per block of ``block_variants`` x ``width`` statistics for each step, best of ``repeats``."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=(block_variants, width)) * 10.0 ** rng.integers(-3, 8, size=(block_variants, width))
    names = [f"site{i}" for i in range(n_sites)]
    keys = [secagg.generate_private_key() for _ in names]
    peers = {n: secagg.public_key_bytes(k) for n, k in zip(names, keys)}
    context, seeds = b"c" * 32, [os.urandom(secagg.SEED_BYTES) for _ in names]
    maskers = [secagg.RoundMasker(n, seed, {p: secagg.pair_key(k, n, p, peers[p], context) for p in names if p != n},
                                  context) for n, k, seed in zip(names, keys, seeds)]
    masker = maskers[0]
    pair = he.generate_keys()
    public, secret = he.PublicContext(pair.public), he.SecretContext(pair.secret)
    n_values, n_ct = values.size, he_encoding.n_ciphertexts(values.size)
    protectors = [make_protector("he", masker=m, he_context=public) for m in maskers]
    payloads = [p.protect(0, values) for p in protectors]
    timings: dict[str, list[float]] = {}

    def timed(name: str, function) -> object:
        started = time.perf_counter()
        out = function()
        timings.setdefault(name, []).append(time.perf_counter() - started)
        return out

    for _ in range(repeats):
        timed("secagg: ring encode + ChaCha20 masks (site)",
              lambda: ring.to_bytes(masker.mask(ring.encode(values, n_sites), 0)))
        slots = timed("he: fixed-point limbs + self and pairwise tags (site)",
                      lambda: he_encoding.attach_tags(he_encoding.encode(values, n_sites),
                                                      masker.tags(0, 2 * n_ct, he_encoding.TAG_BITS).reshape(n_ct, 2)))
        timed("he: CKKS encode + encrypt + serialise (site)", lambda: public.encrypt(slots))

        def aggregate() -> bytes:
            total = public.load(payloads[0], n_ct)
            for payload in payloads[1:]:
                total.add(public.load(payload, n_ct))
            return total.to_bytes()

        summed = timed(f"he: load + validate + add {n_sites} blocks, serialise (coordinator)", aggregate)
        unmasker = secagg.Unmasker({n: secagg.self_key(seed, n, context) for n, seed in zip(names, seeds)}, {})
        offsets = timed("he: tag offsets of the survivors' sum (coordinator)",
                        lambda: unmasker.tag_offsets(0, 2 * n_ct, he_encoding.TAG_BITS).reshape(n_ct, 2))
        decrypted = timed("he: load + decrypt + decode slots (key holder)", lambda: secret.decrypt(summed, n_ct))
        timed("he: round, check tags against the offsets, recombine (key holder)",
              lambda: he_encoding.decode(decrypted, n_values, n_sites, offsets))
    result = {name: min(seconds) for name, seconds in timings.items()}
    result["ciphertexts per block"] = n_ct
    result["bytes per block (one site)"] = len(payloads[0])
    header = key_holder_pb2.AggregateHeader(study_id="b", round=1, block=0, n_values=n_values, total_bytes=len(summed),
                                            registration_id="0" * 32)
    plain_size = header.ByteSize()
    header.tag_offsets.extend(int(v) for v in offsets.ravel())
    result["tag offset bytes per block (coordinator to key holder)"] = header.ByteSize() - plain_size
    return result


def compare_with(base_tree: Path, study, runs: Path, repeats: int) -> None:
    """``--privacy he`` alternately with the code in ``base_tree`` and this tree (same data, same command)."""
    results: dict[str, list[dict]] = {"previous": [], "new": []}
    for repeat in range(repeats):
        for name, tree in (("previous", base_tree), ("new", ROOT)):
            results[name].append(run_mode(study, runs / f"{name}_{repeat}", "he", tree))
            run = results[name][-1]
            print(f"repeat {repeat + 1}: {name} {run['wall_seconds']:.2f} s (rounds and solve "
                  f"{run['phase_seconds']['rounds and solve']:.2f} s, coordinator peak RSS "
                  f"{run['peak_rss_mib']['coordinator']:.0f} MiB)", flush=True)
    best = {name: min(r["wall_seconds"] for r in runs_) for name, runs_ in results.items()}
    (runs / "result.json").write_text(json.dumps({"runs": results, "best": best,
                                                  "key_phase_bytes_per_round": key_phase_bytes(len(study.site_bfiles))},
                                                 indent=2))
    print(f"\nnew / previous (best against best): {best['new'] / best['previous']:.2f}x")


def main() -> None:
    parser = base.study_arguments(__doc__.splitlines()[0], repeats=2)
    parser.add_argument("--base", type=Path, help="a previous checkout: compare its --privacy he with this tree's")
    args = parser.parse_args()

    study = base.simulate(args.samples, args.variants, args.sites, args.seed)
    if args.base is not None:
        compare_with(args.base.resolve(), study, base.runs_dir("-he-base"), args.repeats)
        return
    runs = ROOT / "benchmarks" / "runs" / (time.strftime("%Y%m%d-%H%M%S") + "-he")
    runs.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {"secagg": [], "he": []}
    for repeat in range(args.repeats):
        for privacy in ("secagg", "he"):
            results[privacy].append(run_mode(study, runs / f"{privacy}_{repeat}", privacy))
            print(f"repeat {repeat + 1}: {privacy} {results[privacy][-1]['wall_seconds']:.2f} s", flush=True)
    best = {p: min(r, key=lambda x: x["wall_seconds"]) for p, r in results.items()}
    n_variants = best["he"]["n_variants"]
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "data": {"samples": args.samples, "variants": args.variants, "sites": args.sites,
                 "covariates": len(base.COVARIATES)},
        "runs": results,
        "ratio_best_wall": best["he"]["wall_seconds"] / best["secagg"]["wall_seconds"],
        "bytes_per_variant_per_site": {p: {s: b / n_variants for s, b in best[p]["bytes_sent"].items()} for p in best},
        "agreement_he_vs_secagg": agreement(runs / "he_0", runs / "secagg_0"),
        "he_block_breakdown_seconds": block_breakdown(args.sites),
        "key_phase_bytes_per_round": key_phase_bytes(args.sites),  # the same messages under secagg and he
    }
    (runs / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"\n| mode | wall time (best of {args.repeats}) | bytes per variant per site |\n|---|---|---|")
    for privacy in ("secagg", "he"):
        per_variant = np.mean(list(result["bytes_per_variant_per_site"][privacy].values()))
        print(f"| {privacy} | {best[privacy]['wall_seconds']:.2f} s | {per_variant:.0f} |")
    print(f"\nHE / secagg wall time: {result['ratio_best_wall']:.2f}x")


if __name__ == "__main__":
    main()
