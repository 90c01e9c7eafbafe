"""``fedgwas``: the analyst's command.

Subcommands::

    fedgwas run STUDY.toml [--out DIR]          sites already running somewhere
    fedgwas local --bfile P1 --bfile P2 ...     one local site-agent process per --bfile
                  [--pheno F --pheno-name Y --glm linear|logistic|firth [--1] | --assoc]
                                                                      association, and/or
                  [--freq] [--hardy] [--missing] [--geno-counts]      QC reports (PLINK 2 formats)
                  [--maf F] [--geno F] [--hwe P]                      filters before association
                  [--consent FILE --purpose HMB [--commercial]]       GA4GH DUO consent at each site
                  [--insecure-transport]              plaintext instead of mutual TLS (OUT/tls/ dev CA)
                  [--indep-pairwise W S R2] [--pca [K] [approx]]      LD pruning, PCA (PCs as covariates)
    fedgwas demo [--out DIR]                    simulate 3 cohorts and run a study on them
    fedgwas keys he --out DIR                   CKKS keys of a key holder (--privacy he)
    fedgwas keys tls --out DIR --site A ... --coordinator C [--key-holder K]
                                                development CA and mutual-TLS certificates
    fedgwas keyholder serve --keys DIR          run the key holder (see key_holder/cli.py)
    fedgwas audit cross-check --coordinator-log LOG --ledger L1 ...   (see audit/consortium_cli.py)
    fedgwas audit report --coordinator-log LOG --ledger L1 ... [--json F] [--png F] [--html F]
    fedgwas witness serve --dir DIR [--listen HOST:PORT]   co-sign and keep the sites' ledger heads

Exit codes: 0 success; 2 bad input, configuration or usage (including a request every failing site
refused as invalid, e.g. a phenotype name no site has); 3 a site failed, refused or could not be
reached, so the study could not complete; 1 unexpected internal error (traceback shown: a bug).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit import consortium_cli as audit_cli
from coordinator import dp_options, structure_cli
from key_holder import cli as key_holder_cli
from fedgwas.options import add_compute_options, add_consent_options, add_qc_options, add_study_options, \
    qc_table_from_args
from fedgwas.study_args import check_study, local_study, study_tables, with_endpoints
from fedgwas.local import LOCAL_COORDINATOR, SiteInput, local_pki, prepare_key_holder, prepare_sites, \
    running_key_holder, running_sites, site_names
from coordinator.study_file import load_study
from engine.errors import ExitCode, FedGwasError, InputError, ProtocolError, SiteFailure, StudyFailed
from engine.io.plink import check_bfile
from engine.cohort.cohort import code_phenotype
from engine.io.bgen import bgen_samples, read_header, scan_variants
from engine.io.hard_calls import HardCallRules, add_hard_call_options, hard_call_rules
from engine.io.tables import expand_names, read_sample_table
from engine.models import GLM_MODELS
from engine.tasks import PRIVACY_MODES
from engine.version import __version__
from witness import cli as witness_cli

if TYPE_CHECKING:
    import numpy as np

    from coordinator.runner import StudyOutcome

log = logging.getLogger("coordinator")



class _SiteInputAction(argparse.Action):
    """Collects --bfile/--pfile/--vcf/--bgen in command-line order as :class:`SiteInput`; ``--sample``
    attaches a .sample file to the --bgen before it."""

    FORMATS = {"--bfile": "plink1", "--pfile": "pgen", "--vcf": "vcf", "--bgen": "bgen"}

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        inputs = list(getattr(namespace, self.dest, None) or [])
        if option_string == "--sample":
            if not inputs or inputs[-1].fmt != "bgen" or inputs[-1].sample is not None:
                parser.error("--sample FILE follows the --bgen FILE it belongs to")
            inputs[-1] = inputs[-1]._replace(sample=Path(str(values)))
        else:
            inputs.append(SiteInput(self.FORMATS[option_string or "--bfile"], Path(str(values))))
        setattr(namespace, self.dest, inputs)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedgwas",
        description="Federated GWAS: exact association across sites whose genotypes never leave them.",
    )
    parser.add_argument("--version", action="version", version=f"fedgwas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a study described by a TOML file against running site agents")
    run.add_argument("study", help="study TOML (see docs/study-example.toml)")
    run.add_argument("--out", help="output directory (overrides [output] dir)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")

    local = sub.add_parser("local", help="start one local site agent per --bfile and run a study on them")
    local.add_argument("--bfile", action=_SiteInputAction, dest="site_inputs", metavar="PREFIX",
                       help="PLINK 1 prefix (.bed/.bim/.fam) of one site (repeat, one per site)")
    local.add_argument("--pfile", action=_SiteInputAction, dest="site_inputs", metavar="PREFIX",
                       help="PLINK 2 prefix (.pgen/.pvar/.psam) of one site (repeatable; may mix with --bfile)")
    local.add_argument("--vcf", action=_SiteInputAction, dest="site_inputs", metavar="FILE",
                       help="VCF/BCF of one site, imported once into the site's cache (repeatable)")
    local.add_argument("--vcf-dosage", choices=["DS", "GP"],
                       help="read every --vcf's dosages from FORMAT DS or GP (PLINK 2's --vcf FILE dosage=DS) "
                            "instead of its GT hard calls")
    add_hard_call_options(local, "every --bgen and --vcf --vcf-dosage")
    local.add_argument("--bgen", action=_SiteInputAction, dest="site_inputs", metavar="FILE",
                       help="BGEN v1.2/v1.3 file of one site's imputed dosages, counting the second allele "
                            "(PLINK 2's ref-first); imported once into the site's cache (repeatable)")
    local.add_argument("--sample", action=_SiteInputAction, dest="site_inputs", metavar="FILE",
                       help="the .sample file of the --bgen before it (default: the IDs the BGEN embeds)")
    local.add_argument("--pheno", help="phenotype file; each site receives only its own rows")
    local.add_argument("--pheno-name",
                       help="phenotype column(s): A,B,C and ranges such as P1-P5 (default with --glm: every "
                            "column of --pheno, as PLINK 2); several phenotypes share one genotype pass and "
                            "each gets OUT/<PHENO>.<model>.tsv.gz")
    local.add_argument("--covar", help="covariate file; each site receives only its own rows")
    local.add_argument("--covar-name", default="", help="covariates, e.g. SEX_MALE,AGE,PC1-PC4")
    local.add_argument("--1", dest="case_control_01", action="store_true",
                       help="case/control phenotype coded 0 = control, 1 = case (PLINK's --1; default 1/2)")
    local.add_argument("--glm", choices=list(GLM_MODELS), default=None,
                       help="association model (default linear when a phenotype is given and nothing else is asked)")
    add_qc_options(local)
    structure_cli.add_options(local)
    dp_options.add_options(local)
    add_consent_options(local)
    local.add_argument("--out", required=True, help="output directory")
    local.add_argument("--witness", metavar="HOST:PORT",
                       help="every local site publishes its signed ledger head to this witness (fedgwas witness serve)")
    add_study_options(local)
    add_compute_options(local)

    demo = sub.add_parser("demo", help="simulate 3 cohorts, start 3 site agents, run a secure linear GWAS")
    demo.add_argument("--out", default="fedgwas-demo", help="output directory (default ./fedgwas-demo)")
    demo.add_argument("--samples", type=int, default=2000, help="samples per site (default 2000)")
    demo.add_argument("--variants", type=int, default=20000, help="variants (default 20000)")
    demo.add_argument("--sites", type=int, default=3, help="number of sites (default 3)")
    demo.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")
    demo.add_argument("--privacy", choices=list(PRIVACY_MODES), default="secagg", help="default secagg")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    key_holder_cli.add_commands(sub)
    audit_cli.add_commands(sub)
    witness_cli.add_commands(sub)
    return parser


def _check_local_inputs(inputs: list[SiteInput], pheno: Path | None, phenotypes: list[str], covar: Path | None,
                        covariates: list[str], case_control: bool = False, coding: str = "case-control",
                        missing_value: float = -9.0) -> None:
    """Validate the filesets and the requested columns before any site agent starts.

    The agents would find the same problems, but only once started, and would report them as site
    failures naming their private copies; here the message names the user's own file (exit 2).
    """
    for fmt, path, sample, *_ in inputs:
        if fmt == "plink1":
            check_bfile(path)
        elif fmt == "bgen":
            bgen_samples(path, sample)  # the header, and the .sample file's sample count
            for _ in scan_variants(read_header(path)):  # every block lies inside the file (not truncated)
                pass
        elif fmt == "pgen":
            for ext in (".pgen", ".pvar", ".psam"):
                if not Path(f"{path}{ext}").exists():
                    raise InputError(f"--pfile {str(path)!r}: {str(path)}{ext!r} does not exist")
        elif not path.exists():
            raise InputError(f"--vcf {str(path)!r} does not exist")
    if pheno is not None:
        table = read_sample_table(pheno)
        for phenotype in phenotypes:
            values = table.numeric(phenotype, missing_value)
            if case_control:
                code_phenotype(values, coding, f"{str(pheno)!r} column {phenotype!r}")
    if covar is not None:
        table = read_sample_table(covar)
        for name in covariates:
            table.numeric(name, missing_value)


def _local_study(args: argparse.Namespace, inputs: list[SiteInput], pheno: Path | None, covar: Path | None,
                 covariates: list[str], out: Path, qc: dict[str, Any] | None = None) -> StudyOutcome:
    """Validate the study the flags describe, start the local sites (and key holder), run it."""
    tables = study_tables(args, covariates, qc or {}, out)
    names = site_names([site_input.path for site_input in inputs])
    config = check_study(tables, names, out)
    _check_local_inputs(inputs, pheno, [name for name in config.cohort.phenotypes if name not in config.quantitative],
                        covar, [name for name in covariates if name not in config.pca_covariates],
                        case_control=config.assoc or config.cohort.phenotype_coding != "quantitative",
                        coding="case-control" if config.cohort.phenotype_coding == "quantitative"
                        else config.cohort.phenotype_coding, missing_value=config.cohort.missing_value)
    budget = dp_options.site_budget_from_args(args)
    holder = prepare_key_holder(out) if args.privacy == "he" else None
    pki = None if getattr(args, "insecure_transport", False) else local_pki(out, names)
    consent = Path(args.consent) if getattr(args, "consent", None) else None
    sites = prepare_sites(inputs, pheno, covar, out, allow_plaintext=args.privacy == "plaintext",
                          he_context_sha256=holder.fingerprint if holder else None, budget=budget,
                          tls=pki, consent=consent, witness=getattr(args, "witness", None),
                          genotyping_technology=None if getattr(args, "genotyping_technology", "NR") == "NR"
                          else args.genotyping_technology,
                          workers=getattr(args, "site_workers", 0) or None,
                          scheduler=getattr(args, "dask_scheduler", None))
    # The runner pulls in scipy and matplotlib: import it while the site processes start.
    importer = threading.Thread(target=importlib.import_module, args=("coordinator.runner",), daemon=True)
    importer.start()
    tls_dir = None if pki is None else out / "tls"
    with running_key_holder(holder, tls_dir=tls_dir) as key_holder, running_sites(sites) as endpoints:
        importer.join()
        from coordinator.runner import run_study

        tables = with_endpoints(tables, endpoints, None if pki is None else pki[LOCAL_COORDINATOR],
                                key_holder.address() if key_holder else "")
        return run_study(dataclasses.replace(local_study(tables, out), show_progress=not args.no_progress))


def _report(outcome: StudyOutcome) -> None:
    summary = outcome.summary
    if len(outcome.results) > 1:
        what = f"{summary.test} regression of {len(outcome.results)} phenotypes"
    elif outcome.result is not None:
        what = f"{summary.test} regression of {summary.phenotype}"
    elif summary.test == "assoc":
        what = f"allelic test of {summary.phenotype}"
    else:
        what = {"pca": "PCA", "prune": "LD pruning"}.get(summary.test, "QC")
    print(f"study {summary.study_id}: {what} on {summary.n_variants_tested} variants, {summary.n_samples} samples "
          f"from {len(summary.contributing_sites)} sites ({', '.join(summary.contributing_sites)})")
    print(f"privacy: {summary.privacy_label}")
    dropped = {k: v for k, v in summary.variants_dropped.items() if v}
    if dropped:
        print("variants dropped: " + ", ".join(f"{k} {v}" for k, v in dropped.items()))
    for site in summary.sites:
        if not site.contributed:
            print(f"site {site.name} did not contribute: {site.failure}")
    for name, path in outcome.files.items():
        print(f"{name + ':':<12} {path}")
    if len(outcome.all_paths) > 1:
        for name, paths in outcome.all_paths.items():
            print(f"results: {paths.tsv}")
    elif outcome.paths is not None:
        print(f"results: {outcome.paths.tsv}")
        print(f"report:  {outcome.paths.report}")


def _with_hard_call_rules(inputs: list[SiteInput], rules: HardCallRules) -> list[SiteInput]:
    """``inputs`` with ``rules`` on every dosage import (--bgen, --vcf with --vcf-dosage), as PLINK 2 applies
    them; InputError when rules are given but no input imports dosages."""
    if rules.default:
        return inputs
    dosage = [i.fmt == "bgen" or (i.fmt == "vcf" and i.vcf_dosage is not None) for i in inputs]
    if not any(dosage):
        raise InputError("--hard-call-threshold/--dosage-erase-threshold apply to dosage imports (--bgen, or --vcf "
                         "with --vcf-dosage); none was given")
    return [i._replace(hard_calls=rules) if d else i for i, d in zip(inputs, dosage)]


def _local_plan(args: argparse.Namespace, covariates: list[str]) -> dict[str, Any]:
    """Check what a ``local`` run is asked to do and return its ``[qc]`` table; sets ``args.glm`` to
    linear when a phenotype is given and nothing else is requested (the behaviour before QC existed)."""
    qc = qc_table_from_args(args)
    if args.pheno_name and not args.pheno:
        raise InputError("--pheno-name needs --pheno")
    if args.pheno and not args.pheno_name and (args.glm or not (args.assoc or qc.get("outputs") or args.pca is not None
                                                                  or args.indep_pairwise is not None)):
        args.pheno_name = ",".join(read_sample_table(Path(args.pheno)).names)  # PLINK 2: every column
    structure = args.pca is not None or args.indep_pairwise is not None
    args.quantitative = ()
    names = expand_names(args.pheno_name or "")
    if len(names) > 1 and args.glm != "linear" and not args.assoc:  # PLINK 2 decides per phenotype
        table = read_sample_table(Path(args.pheno))
        binary = [name for name in names if _is_case_control(table.numeric(name), args.case_control_01)]
        if args.glm is None:
            args.glm = "logistic" if binary else "linear"
        if args.glm != "linear":
            args.quantitative = tuple(name for name in names if name not in binary)
    if args.glm is None and not args.assoc and not qc.get("outputs") and not (structure and not args.pheno_name):
        if not args.pheno_name:
            raise InputError("nothing to do: give --pheno/--pheno-name with --glm or --assoc, and/or QC reports "
                             "(--freq, --hardy, --missing, --geno-counts), --indep-pairwise or --pca")
        args.glm = "linear"
    if (args.glm or args.assoc) and not args.pheno_name:
        raise InputError("--glm and --assoc need --pheno and --pheno-name")
    if args.pheno_name and not (args.glm or args.assoc):
        raise InputError(f"--pheno-name {args.pheno_name} is only used by an association test (--glm or --assoc)")
    if covariates and not args.glm:
        raise InputError("--covar-name is only used by --glm")
    return qc


def _is_case_control(values: "np.ndarray", zero_one: bool) -> bool:
    """PLINK 2's reading of a phenotype column: case/control when every value is 1/2 (0 missing), or 0/1
    with ``--1``; quantitative otherwise."""
    import numpy as np

    present = values[np.isfinite(values)]
    allowed = (0.0, 1.0) if zero_one else (0.0, 1.0, 2.0)
    return bool(present.size) and bool(np.all(np.isin(present, allowed))) and (zero_one or bool(np.any(present > 0)))


def _demo(args: argparse.Namespace) -> StudyOutcome:
    from engine.simulate import SimulationSpec, simulate_study

    out = Path(args.out)
    spec = SimulationSpec(site_sizes=tuple([args.samples] * args.sites), n_variants=args.variants,
                          seed=args.seed, write_pooled=False)
    print(f"simulating {args.sites} cohorts of {args.samples} samples x {args.variants} variants in {out / 'data'}")
    study = simulate_study(spec, out / "data")
    args.pheno_name = "QT"
    args.study_id = "demo"
    args.glm = "linear"
    return _local_study(args, [SiteInput("plink1", b) for b in study.site_bfiles], study.pheno_path, study.covar_path,
                        list(study.covariate_names), out)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command in key_holder_cli.COMMANDS:
        return key_holder_cli.run(args)
    if args.command in witness_cli.COMMANDS:
        return witness_cli.run(args)
    try:
        if args.command in audit_cli.COMMANDS:
            return audit_cli.run(args)
        if args.command == "run":
            config = load_study(args.study, Path(args.out) if args.out else None)
            if args.no_progress:
                config = dataclasses.replace(config, show_progress=False)
            from coordinator.runner import run_study

            outcome = run_study(config)
        elif args.command == "local":
            covariates = expand_names(args.covar_name) if args.covar_name else []
            pca = structure_cli.pca_table(args.pca)
            scores = {f"PC{i + 1}" for i in range(pca["components"])} if pca else set()
            from_covar = [name for name in covariates if name not in scores]
            if from_covar and not args.covar:
                raise InputError("--covar-name given without --covar" + (f" ({', '.join(from_covar)} do not come "
                                                                         f"from --pca)" if pca else ""))
            if len(args.site_inputs or ()) < 2:
                raise InputError(f"a federated study needs at least two sites: one --bfile, --pfile, --vcf or "
                                 f"--bgen per site, got {len(args.site_inputs or ())}")
            qc = _local_plan(args, covariates)
            inputs = [i._replace(vcf_dosage=args.vcf_dosage) if i.fmt == "vcf" and args.vcf_dosage else i
                      for i in args.site_inputs]
            if args.vcf_dosage and not any(i.fmt == "vcf" for i in inputs):
                raise InputError("--vcf-dosage applies to --vcf inputs; none was given")
            inputs = _with_hard_call_rules(inputs, hard_call_rules(args))
            if args.pheno_name:
                args.pheno_name = ",".join(expand_names(args.pheno_name))
            pheno = Path(args.pheno) if args.pheno else None
            covar = Path(args.covar) if args.covar else None
            outcome = _local_study(args, inputs, pheno, covar, covariates, Path(args.out), qc)
        else:
            outcome = _demo(args)
    except (SiteFailure, StudyFailed) as error:
        # A site refusing the request as invalid (say, a phenotype it does not have) is bad input.
        print(f"fedgwas: error: {error}", file=sys.stderr)
        return ExitCode.INPUT if error.bad_request else ExitCode.SITE
    except (FedGwasError, ProtocolError) as error:
        print(f"fedgwas: error: {error}", file=sys.stderr)
        return ExitCode.INPUT
    _report(outcome)
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
