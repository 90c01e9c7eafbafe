"""Benchmark: federated secure-aggregation linear GWAS (`fedgwas local`) vs PLINK 2 on the pooled data.

In one run, on the same simulated data (default 10,000 samples x 100,000 variants, 3 sites, 5
covariates, ~1% missing calls): the wall time of ``plink2 --glm`` (2 threads, OpenBLAS with
OPENBLAS_NUM_THREADS=1, its fastest configuration here) and of ``fedgwas local`` (site processes
started, data read, statistics masked, streamed, aggregated, solved, results and plots written),
the peak memory of each site agent, the bytes each site sent per variant, and the agreement of the
two results. Usage::

    python benchmarks/linear_vs_plink2.py [--samples 10000] [--variants 100000] [--sites 3] [--repeats 2]

Simulated data are cached under benchmarks/data/. Results are printed as a Markdown table and
written to benchmarks/runs/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.simulate import SimulationSpec, simulate_study  # noqa: E402

COVARIATES = ("SEX_MALE", "AGE", "BMI", "SMOKER", "ANC1")


def ensure_plink2_with_openblas() -> str:
    if not shutil.which("plink2") or not Path("/usr/lib/x86_64-linux-gnu/openblas-pthread").exists():
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "plink2", "libopenblas0-pthread"], check=True)
    return shutil.which("plink2") or "plink2"


def simulate(samples: int, variants: int, sites: int, seed: int) -> object:
    sizes = tuple(samples // sites + (1 if i < samples % sites else 0) for i in range(sites))
    out = ROOT / "benchmarks" / "data" / f"sim_{samples}x{variants}_{sites}sites_seed{seed}"
    spec = SimulationSpec(site_sizes=sizes, n_variants=variants, seed=seed, write_pooled=True,
                          missing_rates=(0.005, 0.01, 0.02)[:sites] + (0.01,) * max(0, sites - 3))
    marker = out / "complete.json"
    started = time.perf_counter()
    study = simulate_study(spec, out) if not marker.exists() else None
    if study is None:
        from engine.simulate import SimulatedStudy
        info = json.loads(marker.read_text())
        study = SimulatedStudy(out_dir=out, site_bfiles=tuple(Path(p) for p in info["site_bfiles"]),
                               pooled_bfile=Path(info["pooled_bfile"]), pheno_path=Path(info["pheno"]),
                               covar_path=Path(info["covar"]), causal_path=Path(info["causal"]))
        print(f"using cached simulation in {out}")
    else:
        marker.write_text(json.dumps({"site_bfiles": [str(p) for p in study.site_bfiles],
                                      "pooled_bfile": str(study.pooled_bfile), "pheno": str(study.pheno_path),
                                      "covar": str(study.covar_path), "causal": str(study.causal_path)}))
        print(f"simulated in {time.perf_counter() - started:.1f} s: {out}")
    return study


def run_plink2(plink2: str, study, out: Path) -> tuple[float, Path]:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    command = [plink2, "--bfile", str(study.pooled_bfile), "--pheno", str(study.pheno_path), "--pheno-name", "QT",
               "--covar", str(study.covar_path), "--covar-name", *COVARIATES, "--covar-variance-standardize",
               "--glm", "omit-ref", "hide-covar", "cols=+a1count,+a1freq,+beta,+se",
               "--threads", "2", "--out", str(out / "plink2")]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - started, out / "plink2.QT.glm.linear"


def run_fedgwas(study, out: Path, privacy: str) -> float:
    command = [sys.executable, "-m", "fedgwas", "local",
               *[a for b in study.site_bfiles for a in ("--bfile", str(b))],
               "--pheno", str(study.pheno_path), "--pheno-name", "QT", "--covar", str(study.covar_path),
               "--covar-name", ",".join(COVARIATES), "--glm", "linear", "--privacy", privacy,
               "--out", str(out), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def peak_rss_mib(out: Path) -> dict[str, float]:
    peaks = {}
    for log in sorted(out.glob("sites/*/agent.log")):
        found = re.findall(r"peak RSS (\d+) MiB", log.read_text())
        if found:
            peaks[log.parent.name] = float(found[-1])
    return peaks


def agreement(ours_path: Path, plink_path: Path) -> dict[str, float]:
    with gzip.open(ours_path, "rt") as handle:
        header = handle.readline().split("\t")
        rows = [line.rstrip("\n").split("\t") for line in handle]
    col = {name.strip(): i for i, name in enumerate(header)}
    ours_beta = np.array([float("nan") if r[col["beta"]] == "#NA" else float(r[col["beta"]]) for r in rows])
    ours_p = [r[col["p_value"]] for r in rows]
    lines = plink_path.read_text().splitlines()
    names = lines[0].lstrip("#").split()
    table = [line.split() for line in lines[1:]]
    beta = np.array([float("nan") if r[names.index("BETA")] == "NA" else float(r[names.index("BETA")]) for r in table])
    se = np.array([float("nan") if r[names.index("SE")] == "NA" else float(r[names.index("SE")]) for r in table])
    p = np.array([float("nan") if r[names.index("P")] == "NA" else float(r[names.index("P")]) for r in table])

    def neg_log10(text: str) -> float:
        if text == "#NA":
            return float("nan")
        mantissa, _, exponent = text.partition("e")
        return -(np.log10(float(mantissa)) + (int(exponent) if exponent else 0))

    ours_logp = np.array([neg_log10(t) for t in ours_p])
    ok = np.isfinite(beta) & np.isfinite(ours_beta) & (p > 0)
    return {"max_abs_dbeta_over_se": float(np.max(np.abs(ours_beta[ok] - beta[ok]) / se[ok])),
            "max_abs_dlog10p": float(np.max(np.abs(ours_logp[ok] + np.log10(p[ok])))),
            "variants_compared": int(ok.sum())}


def study_arguments(description: str, repeats: int) -> argparse.ArgumentParser:
    """The options every benchmark of a simulated study shares (size, sites, seed, repeats)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--variants", type=int, default=100_000)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--repeats", type=int, default=repeats, help="timed repetitions of each tool (best is reported)")
    return parser


def runs_dir(suffix: str = "") -> Path:
    """A new ``benchmarks/runs/<time><suffix>`` folder for one benchmark run's outputs."""
    runs = ROOT / "benchmarks" / "runs" / (time.strftime("%Y%m%d-%H%M%S") + suffix)
    runs.mkdir(parents=True, exist_ok=True)
    return runs



def main() -> None:
    parser = study_arguments(__doc__.splitlines()[0], repeats=2)
    parser.add_argument("--privacy", default="secagg", choices=["secagg", "plaintext"])
    args = parser.parse_args()

    plink2 = ensure_plink2_with_openblas()
    study = simulate(args.samples, args.variants, args.sites, args.seed)
    runs = runs_dir()
    plink_times, fed_times = [], []
    for repeat in range(args.repeats):
        seconds, plink_out = run_plink2(plink2, study, runs)
        plink_times.append(seconds)
        out = runs / f"fedgwas_{repeat}"
        fed_times.append(run_fedgwas(study, out, args.privacy))
        print(f"repeat {repeat + 1}: plink2 {plink_times[-1]:.2f} s, fedgwas {fed_times[-1]:.2f} s")
    summary = json.loads((out / "QT.linear.summary.json").read_text())
    n_variants = summary["n_variants_tested"]
    bytes_per_variant = {s["name"]: s["bytes_sent"] / n_variants for s in summary["sites"]}
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "data": {"samples": args.samples, "variants": args.variants, "sites": args.sites, "covariates": len(COVARIATES)},
        "privacy": args.privacy,
        "plink2_seconds": plink_times,
        "fedgwas_seconds": fed_times,
        "speedup_best": min(plink_times) / min(fed_times),
        "peak_rss_mib_per_site": peak_rss_mib(out),
        "bytes_per_variant_per_site": bytes_per_variant,
        "agreement_with_plink2": agreement(out / "QT.linear.tsv.gz", plink_out),
    }
    (runs / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print("\n| tool | wall time (best of %d) |\n|---|---|" % args.repeats)
    print(f"| plink2 --glm, pooled, --threads 2 | {min(plink_times):.2f} s |")
    print(f"| fedgwas local ({args.privacy}, {args.sites} site processes) | {min(fed_times):.2f} s |")
    print(f"\nspeed-up: {result['speedup_best']:.2f}x")


if __name__ == "__main__":
    main()
