"""Benchmark: federated secure-aggregation logistic GWAS (`fedgwas local --glm logistic`) vs PLINK 2.

In one run, on the simulated data of ``linear_vs_plink2.py`` (default 10,000 samples x 100,000
variants, 3 sites, 5 covariates, the ``BT`` phenotype): the wall time of ``plink2 --glm
firth-fallback`` (2 threads) and of ``fedgwas local --glm logistic`` (site processes started, data
read, every round masked, streamed, aggregated and solved, results written), the rounds used, the
variants and bytes each site sent per round, the peak memory of each site agent, and the agreement of
the two results. Usage::

    python benchmarks/logistic_vs_plink2.py [--samples 10000] [--variants 100000] [--sites 3] [--repeats 1]

Results are printed as Markdown and written to benchmarks/runs/<timestamp>-logistic/result.json.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.linear_vs_plink2 import (  # noqa: E402
    COVARIATES,
    agreement,
    ensure_plink2_with_openblas,
    peak_rss_mib,
    runs_dir,
    study_arguments,
    simulate,
)

_ROUND_LOG = re.compile(r"round (\d+) \((\w+)\): (\d+) variants, bytes per site (\{.*\})")


def run_plink2(plink2: str, study, out: Path) -> tuple[float, Path]:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    command = [plink2, "--bfile", str(study.pooled_bfile), "--pheno", str(study.pheno_path), "--pheno-name", "BT",
               "--covar", str(study.covar_path), "--covar-name", *COVARIATES, "--covar-variance-standardize",
               "--glm", "omit-ref", "hide-covar", "firth-fallback", "cols=+a1count,+a1freq,+beta,+se,+firth",
               "--threads", "2", "--out", str(out / "plink2")]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - started, out / "plink2.BT.glm.logistic.hybrid"


def run_fedgwas(study, out: Path, privacy: str) -> tuple[float, list[dict]]:
    """Wall time of ``fedgwas local --glm logistic`` and its per-round log (from ``-v``)."""
    command = [sys.executable, "-m", "fedgwas", "-v", "local",
               *[a for b in study.site_bfiles for a in ("--bfile", str(b))],
               "--pheno", str(study.pheno_path), "--pheno-name", "BT", "--covar", str(study.covar_path),
               "--covar-name", ",".join(COVARIATES), "--glm", "logistic", "--privacy", privacy,
               "--out", str(out), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.perf_counter()
    completed = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    rounds = [{"round": int(m.group(1)), "analysis": m.group(2), "variants": int(m.group(3)),
               "bytes_per_site": json.loads(m.group(4).replace("'", '"'))}
              for m in _ROUND_LOG.finditer(completed.stderr)]
    return seconds, rounds


_SITE_ROUND_LOG = re.compile(r"round (\d+): \d+ variants in \d+ blocks, ([\d.]+) s")


def site_round_seconds(out: Path) -> dict[str, dict[str, float]]:
    """Each site agent's compute time per round (from its log), by round number."""
    return {site.name: {m.group(1): float(m.group(2)) for m in _SITE_ROUND_LOG.finditer((site / "agent.log").read_text())}
            for site in sorted((out / "sites").iterdir()) if (site / "agent.log").exists()}


def flags_agree(ours_path: Path, plink_path: Path) -> dict[str, int]:
    """Rows where the FIRTH? flag or the ERRCODE differ between the two results."""
    from coordinator.results.gwas_ssf import read_gwas_ssf

    ours = read_gwas_ssf(ours_path)
    lines = plink_path.read_text().splitlines()
    names = lines[0].lstrip("#").split()
    table = np.array([line.split() for line in lines[1:]])
    firth = table[:, names.index("FIRTH?")]
    errcode = table[:, names.index("ERRCODE")]
    return {"firth_rows": int((firth == "Y").sum()), "firth_flag_differs": int((ours["firth"] != firth).sum()),
            "errcode_differs": int((ours["errcode"] != errcode).sum())}


def main() -> None:
    parser = study_arguments(__doc__.splitlines()[0], repeats=1)
    parser.add_argument("--privacy", default="secagg", choices=["secagg", "plaintext"])
    args = parser.parse_args()

    plink2 = ensure_plink2_with_openblas()
    study = simulate(args.samples, args.variants, args.sites, args.seed)
    runs = runs_dir("-logistic")
    plink_times, fed_times = [], []
    for repeat in range(args.repeats):
        seconds, plink_out = run_plink2(plink2, study, runs)
        plink_times.append(seconds)
        out = runs / f"fedgwas_{repeat}"
        seconds, rounds = run_fedgwas(study, out, args.privacy)
        fed_times.append(seconds)
        print(f"repeat {repeat + 1}: plink2 {plink_times[-1]:.2f} s, fedgwas {fed_times[-1]:.2f} s")
    summary = json.loads((out / "BT.logistic.summary.json").read_text())
    n_variants = summary["n_variants_tested"]
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "data": {"samples": args.samples, "variants": args.variants, "sites": args.sites,
                 "covariates": len(COVARIATES)},
        "privacy": args.privacy,
        "plink2_seconds": plink_times,
        "fedgwas_seconds": fed_times,
        "speedup_best": min(plink_times) / min(fed_times),
        "rounds": summary["rounds"],
        "phase_seconds": summary.get("phase_seconds", {}),
        "rounds_detail": rounds,
        "bytes_sent_per_site": {s["name"]: s["bytes_sent"] for s in summary["sites"]},
        # per variant: full Newton evaluations (exp per sample), after the start round's shared-predictor one
        "full_newton_evaluations_per_variant":
            sum(r["variants"] for r in rounds if r["analysis"] in ("logistic", "logistic_exact")) / n_variants,
        "firth_evaluations_per_variant": sum(r["variants"] for r in rounds if r["analysis"] == "firth") / n_variants,
        "site_round_seconds": site_round_seconds(out),
        "peak_rss_mib_per_site": peak_rss_mib(out),
        "agreement_with_plink2": {**agreement(out / "BT.logistic.tsv.gz", plink_out),
                                  **flags_agree(out / "BT.logistic.tsv.gz", plink_out)},
    }
    (runs / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print("\n| tool | wall time (best of %d) |\n|---|---|" % args.repeats)
    print(f"| plink2 --glm firth-fallback, pooled, --threads 2 | {min(plink_times):.2f} s |")
    print(f"| fedgwas local --glm logistic ({args.privacy}, {args.sites} site processes) | {min(fed_times):.2f} s |")
    print(f"\nspeed-up: {result['speedup_best']:.2f}x, {summary['rounds']} rounds")
    print("\n| round | analysis | variants | bytes per site |\n|---|---|---|---|")
    for r in rounds:
        sizes = sorted(set(r["bytes_per_site"].values()))
        print(f"| {r['round']} | {r['analysis']} | {r['variants']:,} | {', '.join(f'{b:,}' for b in sizes)} |")


if __name__ == "__main__":
    main()
