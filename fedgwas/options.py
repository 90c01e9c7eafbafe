"""Options the ``fedgwas local`` and ``fedgwas demo`` commands share: the study, consent, QC and site compute.

Each ``add_*`` adds a group of options to a parser; the ``*_from_args`` functions read them back
as the study-file tables the one study builder takes (:func:`coordinator.study_file.study_from_tables`).
"""

from __future__ import annotations

import argparse

from typing import Any

from coordinator.study import GENOME_BUILDS
from engine.errors import InputError
from engine.tasks import PRIVACY_MODES


def add_study_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--privacy", choices=list(PRIVACY_MODES), default="secagg",
                        help="how statistics are protected (default secagg; he: CKKS encryption with a separate "
                             "key-holder process; plaintext is for development only)")
    parser.add_argument("--block-size", type=int, default=8192, help="variants per result block (default 8192)")
    parser.add_argument("--match-by", choices=["position", "id"], default="position",
                        help="match variants across sites by chromosome+position+alleles (default) or ID+alleles")
    parser.add_argument("--xchr-model", type=int, choices=[0, 1, 2], default=2,
                        help="chrX in --glm as PLINK 2: 2 (default) males coded 0/2 with the .fam sex as a covariate; "
                             "0 skips chrX (1, males 0/1, is not implemented)")
    parser.add_argument("--no-x-sex", action="store_true",
                        help="no automatic .fam sex covariate on chrX (PLINK 2's --glm no-x-sex)")
    parser.add_argument("--input-missing-phenotype", type=float, default=-9.0, metavar="V",
                        help="phenotype/covariate value read as missing, besides NA and nan (default -9, as PLINK 2)")
    parser.add_argument("--overlap-check", action="store_true",
                        help="count the participants (same IID) each pair of sites shares, by private set "
                             "intersection: the sites and the analyst learn how many, never which")
    parser.add_argument("--genome-build", choices=list(GENOME_BUILDS), default="NR",
                        help="genome assembly of the sites' positions, for the GWAS-SSF metadata (default NR: not reported)")
    parser.add_argument("--genotyping-technology", default="NR", metavar="NAME[,NAME...]",
                        help="GWAS-SSF genotyping_technology, e.g. 'Genome-wide genotyping array' (default NR)")
    parser.add_argument("--ancestry-category", default="NR", metavar="NAME[,NAME...]",
                        help="GWAS-SSF sample_ancestry_category, e.g. European (default NR)")
    parser.add_argument("--allow-dropout", action="store_true",
                        help="if a site fails mid-round, restart the round without it (needs --min-sites left)")
    parser.add_argument("--min-sites", type=int, default=2, help="fewest sites a result may come from (default 2)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="deadline of each task, seconds (default 3600)")
    parser.add_argument("--study-id", default="local-study", help="study identifier (binds the masks)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--insecure-transport", action="store_true",
                        help="plaintext gRPC between the local processes (development only; results are labelled). "
                             "Default: mutual TLS with a development CA kept in OUT/tls/")


def add_compute_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("site compute (every local site; docs/site-operations.md)")
    compute = group.add_mutually_exclusive_group()
    compute.add_argument("--site-workers", type=int, default=0, metavar="N",
                         help="each site computes on its own local Dask cluster of N worker processes "
                              "(default 0: in the agent process, with its threads)")
    compute.add_argument("--dask-scheduler", metavar="tcp://HOST:PORT",
                         help="every site computes on the running Dask cluster at this address")


def add_consent_options(parser: argparse.ArgumentParser) -> None:
    consent = parser.add_argument_group(
        "consent (GA4GH DUO)", "Each site includes only the participants whose consent covers the study's "
                               "declared data use (docs/consent.md).")
    consent.add_argument("--consent", metavar="FILE",
                         help="#FID IID DUO table (GRU, HMB, DS:MONDO:..., NONE; modifiers as HMB;NPU); each site "
                              "receives only its own rows, and a participant without a row is excluded")
    consent.add_argument("--purpose", metavar="CODE",
                         help="the study's data use: GRU, HMB (health/medical/biomedical), POA or DS:<term>")
    consent.add_argument("--commercial", action="store_true", help="the study is a commercial (for-profit) use")


def data_use_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """``[study] purpose`` and ``commercial`` from ``--purpose``/``--commercial`` ({} without them)."""
    purpose = getattr(args, "purpose", None)
    if getattr(args, "consent", None) and not purpose:
        raise InputError("--consent needs --purpose (the study's data use, e.g. HMB)")
    if getattr(args, "commercial", False) and not purpose:
        raise InputError("--commercial needs --purpose")
    return {"purpose": purpose.upper(), "commercial": getattr(args, "commercial", False)} if purpose else {}


def threshold(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def add_qc_options(parser: argparse.ArgumentParser) -> None:
    qc = parser.add_argument_group(
        "QC and the allelic test",
        "Pooled over every sample of every site, exact against PLINK on the pooled data. Reports are "
        "written as OUT/fedgwas.<ext> in PLINK 2's formats; per-sample missingness stays at the sites.")
    qc.add_argument("--freq", nargs="?", const="alt", choices=["alt", "counts", "cols=+machr2"],
                    help="ALT allele frequencies (.afreq), or counts (.acount) with 'counts', or with MaCH R2 "
                         "(imputation quality) with 'cols=+machr2'; from dosages where the sites have them")
    qc.add_argument("--mach-r2-filter", nargs="*", type=threshold, metavar="R2",
                    help="drop variants whose MaCH R2 lies outside [MIN, MAX] (defaults 0.1 and 2.0; one value is "
                         "the minimum) before association, as PLINK 2")
    qc.add_argument("--hardy", nargs="?", const="p", choices=["p", "midp"],
                    help="Hardy-Weinberg exact test report (.hardy); 'midp' for the mid-p variant")
    qc.add_argument("--missing", action="store_true", help="variant missingness report (.vmiss)")
    qc.add_argument("--geno-counts", action="store_true", help="genotype counts report (.gcount)")
    qc.add_argument("--maf", nargs="?", const=0.01, type=threshold, metavar="FREQ",
                    help="drop variants with minor allele frequency below FREQ (default 0.01) before association")
    qc.add_argument("--geno", nargs="?", const=0.1, type=threshold, metavar="RATE",
                    help="drop variants with a missing call rate above RATE (default 0.1) before association")
    qc.add_argument("--hwe", nargs="+", metavar=("P", "midp"),
                    help="drop variants with Hardy-Weinberg exact test p below P ('midp': mid-p) before association")
    qc.add_argument("--assoc", action="store_true",
                    help="PLINK 1.9's allelic chi-square test of a case/control phenotype (OUT/NAME.assoc)")


def qc_table_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``[qc]`` table of the QC reports and filters requested on the command line (see
    :func:`add_qc_options`); only the keys given."""
    outputs = []
    if args.freq:
        outputs.append({"counts": "freq-counts", "cols=+machr2": "freq-machr2"}.get(args.freq, "freq"))
    mach_r2 = None
    if args.mach_r2_filter is not None:
        if len(args.mach_r2_filter) > 2:
            raise InputError(f"--mach-r2-filter takes at most a minimum and a maximum, got {args.mach_r2_filter}")
        mach_r2 = ((args.mach_r2_filter + [0.1])[0], (args.mach_r2_filter[1:] + [2.0])[0])
    if args.hardy:
        outputs.append("hardy")
    if args.missing:
        outputs.append("missing")
    if args.geno_counts:
        outputs.append("geno-counts")
    hwe, hwe_midp = None, False
    if args.hwe:
        if len(args.hwe) > 2 or (len(args.hwe) == 2 and args.hwe[1] != "midp"):
            raise InputError(f"--hwe takes a p-value threshold and optionally 'midp', got {' '.join(args.hwe)!r}")
        try:
            hwe = float(args.hwe[0])
        except ValueError:
            raise InputError(f"--hwe threshold {args.hwe[0]!r} is not a number") from None
        hwe_midp = len(args.hwe) == 2
    table = {"outputs": outputs, "maf": args.maf, "geno": args.geno, "hwe": hwe, "hwe_midp": hwe_midp,
             "hardy_midp": args.hardy == "midp", "mach_r2_filter": None if mach_r2 is None else list(mach_r2)}
    return {key: value for key, value in table.items() if value not in (None, False, [])}
