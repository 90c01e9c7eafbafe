"""Benchmark: the cost of OpenDP noise at a site, and of calibrating it.

Measures :func:`engine.privacy.dp.sample_noise` (OpenDP Gaussian and Laplace samplers on a sized float
vector domain, ``k = -20``) per value for several release sizes, and :func:`engine.privacy.dp.calibrate`
(OpenDP's binary search on its own privacy map). Usage::

    python benchmarks/dp_noise.py [--sizes 1000,10000,100000] [--repeats 3]

Results are printed as Markdown and written to benchmarks/runs/<timestamp>-dp/result.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.privacy import dp  # noqa: E402


def _best(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="values per release (comma-separated)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for mechanism in dp.MECHANISMS:
        for size in sizes:
            values = np.random.default_rng(0).normal(size=size) * 1e3
            seconds = _best(lambda: dp.sample_noise(mechanism, 10.0, values), args.repeats)
            rows.append({"mechanism": mechanism, "values": size, "seconds": seconds, "us_per_value": seconds / size * 1e6})
    dp.calibrate.cache_clear()
    calibrate = _best(lambda: (dp.calibrate.cache_clear(), dp.calibrate("gaussian", 1.0, 1e-6, 44.7, 8000)), args.repeats)
    print("| mechanism | values | seconds | µs per value |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['mechanism']} | {row['values']:,} | {row['seconds']:.3f} | {row['us_per_value']:.1f} |")
    print(f"\ncalibration (OpenDP binary search, Gaussian): {calibrate * 1e3:.1f} ms")
    out = ROOT / "benchmarks" / "runs" / (time.strftime("%Y%m%d-%H%M%S") + "-dp")
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps({"noise": rows, "calibrate_seconds": calibrate,
                                                 "machine": platform.platform(), "python": sys.version}, indent=2))
    print(f"written to {out / 'result.json'}")


if __name__ == "__main__":
    main()
