"""Benchmark: federated PCA (`fedgwas local --pca 10 approx`) vs `plink2 --pca approx 10` on the pooled data.

In one run, on the same simulated data as benchmarks/linear_vs_plink2.py (default 10,000 samples x
100,000 variants, 3 sites, ~1% missing calls): the wall time of ``plink2 --pca approx 10`` (2 threads,
OpenBLAS with OPENBLAS_NUM_THREADS=1) and of ``fedgwas local`` (site processes started, frequencies,
Krylov rounds and the score round under secure aggregation, outputs written), the rounds, the bytes
each site sent, each site agent's peak memory, and the agreement of the two results (eigenvalues,
and the |correlation| of each PC, the sites' own score files being gathered here for the comparison
only). Usage::

    python benchmarks/pca_vs_plink2.py [--samples 10000] [--variants 100000] [--sites 3] [--repeats 1]
        [--mode approx|exact]

Results are printed as a Markdown table and written to benchmarks/runs/<timestamp>-pca/result.json.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from linear_vs_plink2 import ensure_plink2_with_openblas, peak_rss_mib, runs_dir, simulate, study_arguments  # noqa: E402

from engine.io.tables import read_sample_table  # noqa: E402


def run_plink2(plink2: str, study, out: Path, components: int) -> float:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    command = [plink2, "--bfile", str(study.pooled_bfile), "--pca", "approx", str(components),
               "--threads", "2", "--out", str(out / "plink2")]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def run_fedgwas(study, out: Path, components: int, mode: str) -> float:
    command = [sys.executable, "-m", "fedgwas", "local",
               *[a for b in study.site_bfiles for a in ("--bfile", str(b))],
               "--pca", str(components), *(["approx"] if mode == "approx" else []), "--out", str(out), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def gathered_scores(out: Path, order: list[tuple[str, str]]) -> np.ndarray:
    rows: dict[tuple[str, str], np.ndarray] = {}
    for path in sorted(out.glob("sites/*/pca.eigenvec")):
        table = read_sample_table(path)
        values = np.column_stack([table.numeric(name) for name in table.names])
        rows.update({(f, i): v for f, i, v in zip(table.fid, table.iid, values)})
    return np.array([rows[key] for key in order])


def agreement(out: Path, plink_prefix: Path) -> dict[str, list[float]]:
    plink = read_sample_table(Path(f"{plink_prefix}.eigenvec"))
    order = list(zip(plink.fid.tolist(), plink.iid.tolist()))
    ref = np.column_stack([plink.numeric(name) for name in plink.names])
    ours = gathered_scores(out, order)
    correlations = [abs(float(np.corrcoef(ours[:, i], ref[:, i])[0, 1])) for i in range(ref.shape[1])]
    ratio = np.loadtxt(out / "pca.eigenval") / np.loadtxt(f"{plink_prefix}.eigenval")
    return {"abs_corr_per_pc": [round(c, 6) for c in correlations],
            "eigenvalue_ratio_per_pc": [round(float(r), 6) for r in ratio]}


def main() -> None:
    parser = study_arguments(__doc__.splitlines()[0], repeats=1)
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--mode", default="approx", choices=["approx", "exact"],
                        help="fedgwas: PLINK's approx budget, or iterate to convergence")
    args = parser.parse_args()

    plink2 = ensure_plink2_with_openblas()
    study = simulate(args.samples, args.variants, args.sites, args.seed)
    runs = runs_dir("-pca")
    plink_times, fed_times = [], []
    for repeat in range(args.repeats):
        plink_times.append(run_plink2(plink2, study, runs, args.components))
        out = runs / f"fedgwas_{repeat}"
        fed_times.append(run_fedgwas(study, out, args.components, args.mode))
        print(f"repeat {repeat + 1}: plink2 {plink_times[-1]:.1f} s, fedgwas {fed_times[-1]:.1f} s", flush=True)
    summary = json.loads((out / "fedgwas.pca.summary.json").read_text())
    n_variants = summary["n_variants_tested"]
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_at_end": os.getloadavg()},
        "data": {"samples": args.samples, "variants": args.variants, "sites": args.sites},
        "fedgwas_mode": args.mode,
        "plink2_seconds": plink_times,
        "fedgwas_seconds": fed_times,
        "speedup_best": min(plink_times) / min(fed_times),
        "fedgwas_rounds": summary["rounds"],
        "fedgwas_phase_seconds": summary.get("phase_seconds", {}),
        "bytes_per_site": {s["name"]: s["bytes_sent"] for s in summary["sites"]},
        "bytes_per_variant_per_site": {s["name"]: s["bytes_sent"] / n_variants for s in summary["sites"]},
        "peak_rss_mib_per_site": peak_rss_mib(out),
        "notes": summary["notes"],
        "agreement_with_plink2": agreement(out, runs / "plink2"),
    }
    (runs / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print("\n| tool | wall time (best of %d) |\n|---|---|" % args.repeats)
    print(f"| plink2 --pca approx {args.components}, pooled, --threads 2 | {min(plink_times):.1f} s |")
    print(f"| fedgwas local --pca {args.components}{' approx' if args.mode == 'approx' else ''} "
          f"(secagg, {args.sites} site processes, {summary['rounds']} rounds) | {min(fed_times):.1f} s |")
    print(f"\nspeed-up: {result['speedup_best']:.2f}x")


if __name__ == "__main__":
    main()
