"""Benchmark: importing imputed dosages, fedgwas against ``plink2 --bgen/--vcf ... --make-pgen``.

A site with a BGEN or a dosage VCF imports it once into a cached ``.pgen`` (:mod:`engine.io.dosage`);
PLINK 2 users do the same with ``--make-pgen``. This measures both on the same files: a BGEN 1.2
(zlib, 8-bit probabilities as UK Biobank ships them) and a VCF with ``DS``, by default 5,000 samples x
20,000 variants, and checks that the two imports hold identical dosages. Usage::

    python benchmarks/dosage_import.py [--samples 5000] [--variants 20000] [--bits 8] [--repeats 2]

Files are cached under benchmarks/data/; results are printed as a Markdown table and written to
benchmarks/runs/<timestamp>-import.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.io.genotype_sources import PgenFile  # noqa: E402
from engine.io.dosage import import_bgen, import_vcf_dosage  # noqa: E402
from tests.bgen_writer import write_bgen, write_sample_file  # noqa: E402


def make_files(samples: int, variants: int, bits: int, seed: int = 7) -> tuple[Path, Path, Path]:
    out = ROOT / "benchmarks" / "data" / f"import_{samples}x{variants}_{bits}bit"
    bgen, sample, vcf = out / "cohort.bgen", out / "cohort.sample", out / "cohort_ds.vcf"
    if vcf.exists():
        return bgen, sample, vcf
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = [f"s{i}" for i in range(samples)]
    probabilities = np.empty((variants, samples, 2))
    for start in range(0, variants, 1000):
        stop = min(start + 1000, variants)
        freq = rng.uniform(0.01, 0.5, size=stop - start)[:, None]
        truth = rng.binomial(2, np.broadcast_to(freq, (stop - start, samples)))
        certainty = rng.beta(3, 1, size=truth.shape)[..., None]
        prior = np.stack([(1 - freq) ** 2, 2 * freq * (1 - freq), freq ** 2], axis=-1)
        posterior = certainty * np.eye(3)[truth] + (1 - certainty) * prior
        probabilities[start:stop] = posterior[..., :2]
    write_bgen(bgen, ids, [("1", 1000 + 10 * j, f"rs{j}", "A", "G") for j in range(variants)], probabilities,
               bits=bits, embed_samples=False)
    write_sample_file(sample, ids, ids)
    subprocess.run(["plink2", "--bgen", str(bgen), "ref-first", "--sample", str(sample), "--export", "vcf",
                    "vcf-dosage=DS-force", "--out", str(vcf.with_suffix(""))], check=True, capture_output=True)
    return bgen, sample, vcf


def timed(action) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5_000)
    parser.add_argument("--variants", type=int, default=20_000)
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    bgen, sample, vcf = make_files(args.samples, args.variants, args.bits)
    scratch = ROOT / "benchmarks" / "data" / "import_runs"
    times: dict[str, list[float]] = {k: [] for k in ("fedgwas bgen", "plink2 bgen", "fedgwas vcf DS", "plink2 vcf DS")}
    for _ in range(args.repeats):
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        times["fedgwas bgen"].append(timed(lambda: import_bgen(bgen, sample, scratch / "ours")))
        times["plink2 bgen"].append(timed(lambda: subprocess.run(
            ["plink2", "--bgen", str(bgen), "ref-first", "--sample", str(sample), "--make-pgen", "--threads", "2",
             "--out", str(scratch / "plink_bgen")], check=True, capture_output=True)))
        times["fedgwas vcf DS"].append(timed(lambda: import_vcf_dosage(vcf, "DS", scratch / "ours")))
        times["plink2 vcf DS"].append(timed(lambda: subprocess.run(
            ["plink2", "--vcf", str(vcf), "dosage=DS", "--make-pgen", "--threads", "2",
             "--out", str(scratch / "plink_vcf")], check=True, capture_output=True)))
    ours = PgenFile(next((scratch / "ours").glob("cohort-bgen-*.pgen")).with_suffix(""))
    ref = PgenFile(scratch / "plink_bgen")
    every = np.arange(ours.n_variants)
    identical = bool(np.array_equal(ours.read_dosages(every), ref.read_dosages(every), equal_nan=True))
    print(f"\n{args.samples:,} samples x {args.variants:,} variants, BGEN {args.bits}-bit "
          f"({bgen.stat().st_size / 1e6:.0f} MB), VCF DS ({vcf.stat().st_size / 1e6:.0f} MB); "
          f"load average {os.getloadavg()[0]:.1f}; BGEN imports identical: {identical}\n")
    print("| import | " + " | ".join(f"repeat {i + 1}" for i in range(args.repeats)) + " | best |")
    print("|---|" + "---|" * (args.repeats + 1))
    for name, values in times.items():
        print(f"| {name} | " + " | ".join(f"{v:.1f} s" for v in values) + f" | **{min(values):.1f} s** |")
    runs = ROOT / "benchmarks" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    (runs / f"{time.strftime('%Y%m%dT%H%M%S')}-import.json").write_text(json.dumps(
        {"samples": args.samples, "variants": args.variants, "bits": args.bits, "times": times,
         "identical": identical, "load_average": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
