"""Benchmark: a site agent under the denial-of-service attacks of issue 11 (item 8), as a real process.

A site agent (``python -m site_agent serve``, mutual TLS) serves a small simulated cohort. From the
outside, over real gRPC:

1. **flood**: a certificate of the consortium CA that no ``[access]`` rule lists streams a task
   header and then 64 chunks of 4 MiB; reported: the answer, how many chunks left the attacker, and
   the site process's resident memory before and its peak after (``VmRSS``/``VmHWM``);
2. **stalls**: four streams from that certificate and four from the analyst's own open a task and
   send nothing; meanwhile the analyst asks for a ``Describe``; reported: its latency (or failure).

Run it against any tree of the code with ``--tree`` (e.g. the tree before the fix, to compare)::

    python benchmarks/site_dos.py [--tree DIR] [--timeout 20]

The figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/{pid}/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", default=str(ROOT), help="the code the site agent runs (default: this tree)")
    parser.add_argument("--timeout", type=float, default=20.0, help="deadline of the analyst's Describe (s)")
    args = parser.parse_args()
    sys.path.insert(0, args.tree)
    import grpc

    from engine.simulate import SimulationSpec, simulate_study
    from protos import site_agent_pb2 as pb
    from protos import site_agent_pb2_grpc as pb_grpc
    from protos.pki import dev_pki
    from protos.tls import secure_channel
    from site_agent.policy import AccessPolicy, StudyApproval
    from site_agent.provision import init_site

    work = Path(tempfile.mkdtemp(prefix="site-dos-"))
    study = simulate_study(SimulationSpec(site_sizes=(300, 200), n_variants=500, seed=4, write_pooled=False), work)
    pki = dev_pki(work / "tls", ["site1", "analyst", "intruder"])
    access = AccessPolicy(any_study=False, studies=(StudyApproval("approved", None, ("analyst",)),),
                          requesters=("analyst",))
    config = init_site("site1", str(study.site_bfiles[0]), str(study.pheno_path), str(study.covar_path),
                       work / "site1", "127.0.0.1:0", tls=pki["site1"], access=access)
    ready = work / "ready.json"
    env = {**os.environ, "PYTHONPATH": args.tree}
    site = subprocess.Popen([sys.executable, "-m", "site_agent", "serve", "--config", str(config),
                             "--ready-file", str(ready)], env=env, cwd=args.tree, stderr=subprocess.DEVNULL)
    try:
        while not ready.exists():
            if site.poll() is not None:
                raise SystemExit("the site agent did not start")
            time.sleep(0.1)
        address = json.loads(ready.read_text())["address"]

        def stub(who: str) -> pb_grpc.SiteAgentStub:
            return pb_grpc.SiteAgentStub(secure_channel(address, pki[who], "site1"))

        cohort = pb.CohortSpec(phenotype="QT", covariates=["SEX_MALE", "AGE"])
        stub("analyst").Describe(pb.DescribeRequest(study_id="approved", cohort=cohort), timeout=60).next()
        rss_before = _status_kib(site.pid, "VmRSS")
        sent = []

        def flood() -> Iterator[pb.TaskMessage]:
            yield pb.TaskMessage(header=pb.TaskHeader(study_id="approved", round=1, analysis="linear",
                                                      privacy="secagg", n_variants=500, block_size=64, cohort=cohort))
            for index in range(64):
                sent.append(index)
                yield pb.TaskMessage(array=pb.ArrayChunk(name="x", dtype="<f8", shape=[(64 << 22) // 8],
                                                         total_bytes=64 << 22, offset=index << 22, data=bytes(4 << 20)))

        started = time.monotonic()
        try:
            list(stub("intruder").RunTask(flood(), timeout=120))
            flood_answer = "OK"
        except grpc.RpcError as error:
            flood_answer = error.code().name
        flood_seconds = time.monotonic() - started
        time.sleep(0.5)
        rss_peak = _status_kib(site.pid, "VmHWM")

        release = threading.Event()

        def stall(who: str) -> None:
            def nothing() -> Iterator[pb.TaskMessage]:
                release.wait(120)
                return
                yield  # a generator that sends nothing until released

            try:
                list(stub(who).RunTask(nothing(), timeout=120))
            except grpc.RpcError:
                pass

        stalls = [threading.Thread(target=stall, args=(who,), daemon=True) for who in ["intruder"] * 4 + ["analyst"] * 4]
        for thread in stalls:
            thread.start()
        time.sleep(1.0)
        started = time.monotonic()
        try:
            list(stub("analyst").Describe(pb.DescribeRequest(study_id="approved", cohort=cohort), timeout=args.timeout))
            describe = f"{time.monotonic() - started:.2f} s"
        except grpc.RpcError as error:
            describe = f"{error.code().name} after {time.monotonic() - started:.1f} s"
        release.set()
    finally:
        site.terminate()
        site.wait(10)
    print("| tree | flood answer | chunks sent of 64 | site RSS before → peak (MiB) | Describe during 8 stalls |")
    print("|---|---|---|---|---|")
    print(f"| {args.tree} | {flood_answer} after {flood_seconds:.1f} s | {len(sent)} | "
          f"{rss_before / 1024:.0f} → {rss_peak / 1024:.0f} | {describe} |")


if __name__ == "__main__":
    main()
