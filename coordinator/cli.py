"""``fedgwas``: the analyst's command.

Subcommands::

    fedgwas run STUDY.toml [--out DIR]          sites already running somewhere
    fedgwas local --bfile P1 --bfile P2 ...     one local site-agent process per --bfile
    fedgwas demo [--out DIR]                    simulate 3 cohorts and run a study on them

Exit codes: 0 success; 2 bad input, configuration or usage (including a request every failing site
refused as invalid, e.g. a phenotype name no site has); 3 a site failed, refused or could not be
reached, so the study could not complete; 1 unexpected internal error (traceback shown: a bug).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import threading
from pathlib import Path

from typing import TYPE_CHECKING

from coordinator.local import SiteInput, prepare_sites, running_sites
from coordinator.study import StudyConfig, load_study
from engine.errors import FedGwasError, InputError, ProtocolError, SiteFailure, StudyFailed
from engine.plink_io import check_bfile
from engine.tables import expand_names, read_sample_table
from engine.tasks import CohortRequest
from engine.version import __version__

if TYPE_CHECKING:
    from coordinator.runner import StudyOutcome

log = logging.getLogger("coordinator")

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_SITE = 0, 1, 2, 3


class _SiteInputAction(argparse.Action):
    """Collects --bfile/--pfile/--vcf in command-line order as (format, path) pairs."""

    FORMATS = {"--bfile": "plink1", "--pfile": "pgen", "--vcf": "vcf"}

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        inputs = list(getattr(namespace, self.dest, None) or [])
        inputs.append((self.FORMATS[option_string or "--bfile"], Path(str(values))))
        setattr(namespace, self.dest, inputs)


def _add_study_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--privacy", choices=["secagg", "plaintext"], default="secagg",
                        help="how statistics are protected (default secagg; plaintext is for development only)")
    parser.add_argument("--block-size", type=int, default=8192, help="variants per result block (default 8192)")
    parser.add_argument("--match-by", choices=["position", "id"], default="position",
                        help="match variants across sites by chromosome+position+alleles (default) or ID+alleles")
    parser.add_argument("--allow-dropout", action="store_true",
                        help="if a site fails mid-round, restart the round without it (needs --min-sites left)")
    parser.add_argument("--min-sites", type=int, default=2, help="fewest sites a result may come from (default 2)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="deadline of each task, seconds (default 3600)")
    parser.add_argument("--study-id", default="local-study", help="study identifier (binds the masks)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


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
    local.add_argument("--pheno", required=True, help="phenotype file; each site receives only its own rows")
    local.add_argument("--pheno-name", required=True, help="phenotype column")
    local.add_argument("--covar", help="covariate file; each site receives only its own rows")
    local.add_argument("--covar-name", default="", help="covariates, e.g. SEX_MALE,AGE,PC1-PC4")
    local.add_argument("--glm", choices=["linear"], default="linear", help="association model (default linear)")
    local.add_argument("--out", required=True, help="output directory")
    _add_study_options(local)

    demo = sub.add_parser("demo", help="simulate 3 cohorts, start 3 site agents, run a secure linear GWAS")
    demo.add_argument("--out", default="fedgwas-demo", help="output directory (default ./fedgwas-demo)")
    demo.add_argument("--samples", type=int, default=2000, help="samples per site (default 2000)")
    demo.add_argument("--variants", type=int, default=20000, help="variants (default 20000)")
    demo.add_argument("--sites", type=int, default=3, help="number of sites (default 3)")
    demo.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")
    demo.add_argument("--privacy", choices=["secagg", "plaintext"], default="secagg", help="default secagg")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _check_local_inputs(inputs: list[SiteInput], pheno: Path, phenotype: str, covar: Path | None,
                        covariates: list[str]) -> None:
    """Validate the filesets and the requested columns before any site agent starts.

    The agents would find the same problems, but only once started, and would report them as site
    failures naming their private copies; here the message names the user's own file (exit 2).
    """
    for fmt, path in inputs:
        if fmt == "plink1":
            check_bfile(path)
        elif fmt == "pgen":
            for ext in (".pgen", ".pvar", ".psam"):
                if not Path(f"{path}{ext}").exists():
                    raise InputError(f"--pfile {str(path)!r}: {str(path)}{ext!r} does not exist")
        elif not path.exists():
            raise InputError(f"--vcf {str(path)!r} does not exist")
    read_sample_table(pheno).numeric(phenotype)
    if covar is not None:
        table = read_sample_table(covar)
        for name in covariates:
            table.numeric(name)


def _local_study(args: argparse.Namespace, inputs: list[SiteInput], pheno: Path, covar: Path | None,
                 covariates: list[str], out: Path) -> StudyOutcome:
    sites = prepare_sites(inputs, pheno, covar, out, allow_plaintext=args.privacy == "plaintext")
    # The runner pulls in scipy and matplotlib: import it while the site processes start.
    importer = threading.Thread(target=importlib.import_module, args=("coordinator.runner",), daemon=True)
    importer.start()
    with running_sites(sites) as endpoints:
        importer.join()
        from coordinator.runner import run_study

        config = StudyConfig(
            study_id=getattr(args, "study_id", "demo"), glm=getattr(args, "glm", "linear"),
            cohort=CohortRequest(args.pheno_name, tuple(covariates)), privacy=args.privacy,
            sites=tuple(endpoints), out_dir=out, match_by=getattr(args, "match_by", "position"),
            block_size=getattr(args, "block_size", 8192), allow_dropout=getattr(args, "allow_dropout", False),
            min_sites=getattr(args, "min_sites", 2), timeout_seconds=getattr(args, "timeout", 3600.0),
            requester="fedgwas-local", show_progress=not args.no_progress,
        )
        return run_study(config)


def _report(outcome: StudyOutcome) -> None:
    summary = outcome.summary
    print(f"study {summary.study_id}: {summary.test} regression of {summary.phenotype} on "
          f"{summary.n_variants_tested} variants, {summary.n_samples} samples from "
          f"{len(summary.contributing_sites)} sites ({', '.join(summary.contributing_sites)})")
    print(f"privacy: {summary.privacy_label}")
    dropped = {k: v for k, v in summary.variants_dropped.items() if v}
    if dropped:
        print("variants dropped: " + ", ".join(f"{k} {v}" for k, v in dropped.items()))
    for site in summary.sites:
        if not site.contributed:
            print(f"site {site.name} did not contribute: {site.failure}")
    print(f"results: {outcome.paths.tsv}")
    print(f"report:  {outcome.paths.report}")


def _demo(args: argparse.Namespace) -> StudyOutcome:
    from engine.simulate import SimulationSpec, simulate_study

    out = Path(args.out)
    spec = SimulationSpec(site_sizes=tuple([args.samples] * args.sites), n_variants=args.variants,
                          seed=args.seed, write_pooled=False)
    print(f"simulating {args.sites} cohorts of {args.samples} samples x {args.variants} variants in {out / 'data'}")
    study = simulate_study(spec, out / "data")
    args.pheno_name = "QT"
    args.study_id = "demo"
    return _local_study(args, [("plink1", b) for b in study.site_bfiles], study.pheno_path, study.covar_path,
                        list(study.covariate_names), out)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            config = load_study(args.study, Path(args.out) if args.out else None)
            if args.no_progress:
                config = StudyConfig(**{**config.__dict__, "show_progress": False})
            from coordinator.runner import run_study

            outcome = run_study(config)
        elif args.command == "local":
            covariates = expand_names(args.covar_name) if args.covar_name else []
            if covariates and not args.covar:
                raise InputError("--covar-name given without --covar")
            if not args.site_inputs:
                raise InputError("fedgwas local needs one --bfile, --pfile or --vcf per site")
            inputs, pheno = list(args.site_inputs), Path(args.pheno)
            covar = Path(args.covar) if args.covar else None
            _check_local_inputs(inputs, pheno, args.pheno_name, covar, covariates)
            outcome = _local_study(args, inputs, pheno, covar, covariates, Path(args.out))
        else:
            outcome = _demo(args)
    except (SiteFailure, StudyFailed) as error:
        # A site refusing the request as invalid (say, a phenotype it does not have) is bad input.
        print(f"fedgwas: error: {error}", file=sys.stderr)
        return EXIT_INPUT if error.bad_request else EXIT_SITE
    except (FedGwasError, ProtocolError) as error:
        print(f"fedgwas: error: {error}", file=sys.stderr)
        return EXIT_INPUT
    _report(outcome)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
