"""``fedgwas-site``: the command site IT runs.

Subcommands::

    fedgwas-site init  --name NAME --bfile PREFIX --pheno FILE [--covar FILE] [--dir DIR] [--he-context FILE]
                       [--witness HOST:PORT] [--workers N|auto | --scheduler tcp://HOST:PORT]
    fedgwas-site check --config site.toml
    fedgwas-site serve --config site.toml [--listen HOST:PORT] [--ready-file PATH]
    fedgwas-site audit verify LEDGER [--head HASH] [--published-head FILE --key FILE]  (see audit/site_cli.py)
    fedgwas-site audit report LEDGER [--json] [--png FILE] [--html FILE]

Exit codes: 0 success, 2 bad input or configuration (one clear message, no traceback),
1 unexpected internal error (with traceback, please report it), 4 (audit verify) the ledger failed
verification. ``serve`` (and ``check``) refuse, with exit 2, a ledger that does not extend the last
signed head the site published (site_agent/head_publisher.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Protocol, Sequence

from engine.privacy.roster import identity_fingerprint
from engine.errors import ConfigError, ExitCode, FedGwasError
from engine.version import __version__
from engine.io.hard_calls import add_hard_call_options, hard_call_rules
from site_agent.compute.settings import check_scheduler_address
from site_agent.config import GENOTYPE_KEYS, load_site_config
from site_agent.data import load_site_data
from protos.servers import serve_until_signal
from site_agent.policy import DENY_ALL
from site_agent.provision import ensure_identity_key, he_context_pin, init_site
from protos.pki import TlsFiles
from site_agent.security_check import check_security
from site_agent.server import make_server

log = logging.getLogger("site_agent")



class CommandPlugin(Protocol):
    """Subcommands another role adds to ``fedgwas-site`` (the command line joins roles; the roles stay apart)."""

    COMMANDS: tuple[str, ...]

    def add_commands(self, sub: argparse._SubParsersAction) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _parser(plugins: Sequence[CommandPlugin] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedgwas-site",
        description="Run a fedgwas site agent: it computes protected statistics on this site's data "
                    "for approved coordinators; individual-level data never leave the site.",
    )
    parser.add_argument("--version", action="version", version=f"fedgwas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="write a site config and generate this site's key pair")
    init.add_argument("--name", required=True, help="site name, unique in the consortium")
    genotypes = init.add_mutually_exclusive_group(required=True)
    genotypes.add_argument("--bfile", help="PLINK 1 prefix (.bed/.bim/.fam)")
    genotypes.add_argument("--pfile", help="PLINK 2 prefix (.pgen/.pvar/.psam)")
    genotypes.add_argument("--vcf", help="VCF or BCF file (imported once into a cache next to site.toml)")
    genotypes.add_argument("--bgen", help="BGEN v1.2/v1.3 file of imputed dosages (imported once into a cache)")
    init.add_argument("--sample", help="the BGEN's .sample file (default: the sample IDs the BGEN embeds)")
    init.add_argument("--vcf-dosage", choices=["DS", "GP"],
                      help="read the VCF's dosages from FORMAT DS or GP instead of its GT hard calls")
    add_hard_call_options(init, "the BGEN or dosage VCF")
    init.add_argument("--pheno", required=True, help="phenotype file (#FID IID ... or #IID ...)")
    init.add_argument("--covar", help="covariate file (same layout)")
    init.add_argument("--dir", default=".", help="directory for site.toml and keys/ (default: .)")
    init.add_argument("--listen", default="0.0.0.0:50051", help="address to serve on (default 0.0.0.0:50051)")
    init.add_argument("--allow-plaintext", action="store_true",
                      help="also accept plaintext tasks (development machines only)")
    transport = init.add_mutually_exclusive_group(required=True)
    transport.add_argument("--tls-dir", metavar="DIR",
                           help="mutual TLS: DIR/ca.pem (the consortium CA) and DIR/NAME.pem + DIR/NAME.key (this "
                                "site's certificate, CN = --name), e.g. from `fedgwas keys tls --site NAME`")
    transport.add_argument("--insecure", action="store_true",
                           help="serve plaintext gRPC (development machines only; results are labelled)")
    init.add_argument("--roster", metavar="FILE",
                      help="the consortium roster (site names and identity keys) this site pins; without one it "
                           "serves no secure-aggregation or HE task")
    init.add_argument("--open-access", action="store_true",
                      help="serve any study and requester (development only; default: deny until [[access.study]] "
                           "approvals are added)")
    init.add_argument("--consent", metavar="FILE", help="participant consent table (#FID IID DUO; docs/consent.md)")
    init.add_argument("--witness", metavar="HOST:PORT",
                      help="a witness (`fedgwas witness serve`) to which the site publishes its signed ledger head "
                           "after every task ([witness] address); the site then checks its ledger against it at start")
    init.add_argument("--genotyping-technology", metavar="NAME",
                      help="the site's genotyping technology for the GWAS-SSF metadata, e.g. 'Genome-wide genotyping array'")
    init.add_argument("--he-context", metavar="FILE",
                      help="the key holder's public CKKS context (he_public.ctx, from `fedgwas keys he`): pin "
                           "its SHA-256 and accept --privacy he tasks encrypted under it")

    compute = init.add_mutually_exclusive_group()
    compute.add_argument("--workers", default="auto", metavar="N",
                         help="compute blocks on a local Dask cluster of N worker processes started by the agent "
                              "(default auto: one per core); 0 computes in the agent process")
    compute.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                         help="compute blocks on the site's running Dask cluster (its workers must read the "
                              "genotype files at the same paths; docs/site-operations.md)")

    check = sub.add_parser("check", help="validate the config and the data files, then exit")
    check.add_argument("--config", required=True, help="path to site.toml")

    serve = sub.add_parser("serve", help="serve tasks until interrupted (SIGINT/SIGTERM)")
    serve.add_argument("--config", required=True, help="path to site.toml")
    serve.add_argument("--listen", help="override [site] listen, e.g. 127.0.0.1:0 for a free port")
    serve.add_argument("--ready-file", help="write {\"address\": ...} as JSON here once serving")
    for plugin in plugins:
        plugin.add_commands(sub)
    return parser


def _compute_choice(args: argparse.Namespace) -> dict[str, int | str | None]:
    """``init``'s --workers/--scheduler as init_site arguments (checked again when the config is loaded)."""
    if args.scheduler is not None:
        return {"workers": None, "scheduler": check_scheduler_address(args.scheduler, "--scheduler")}
    if args.workers == "auto":
        return {"workers": "auto", "scheduler": None}
    try:
        workers = int(args.workers)
    except ValueError:
        raise ConfigError(f"--workers must be a number >= 0 or auto, got {args.workers!r}") from None
    if workers < 0:
        raise ConfigError(f"--workers must be a number >= 0 or auto, got {args.workers!r}")
    return {"workers": workers, "scheduler": None}


def _check(config_path: str) -> int:
    config = load_site_config(config_path)
    data = load_site_data(config)
    print(f"site {config.name!r}: config OK")
    print(f"  genotypes ({config.genotype_format}): {data.genotypes.n_samples} samples x "
          f"{data.genotypes.n_variants} variants ({config.genotypes})")
    skipped = getattr(data.genotypes, "multiallelic_skipped", 0)
    if skipped:
        print(f"  multi-allelic variants skipped: {skipped}")
    if not config.hard_calls.default:
        print(f"  hard calls within {config.hard_calls.hard_call_threshold:g} of an integer, dosages erased within "
              f"{config.hard_calls.dosage_erase_threshold:g} (PLINK 2's --hard-call-threshold/--dosage-erase-threshold)")
    print(f"  phenotypes: {', '.join(data.pheno.names)}")
    if data.covar is not None:
        print(f"  covariates: {', '.join(data.covar.names)}")
    print(f"  privacy modes accepted: {', '.join(config.privacy_modes)}")
    print(f"  identity key: {data.identity_public_key.hex()} (sha256 {identity_fingerprint(data.identity_public_key)[:16]})")
    print(f"  roster: {config.roster} ({len(data.roster.entries)} sites)" if data.roster is not None else
          "  WARNING: no consortium roster ([keys] roster): secure-aggregation and HE tasks are refused")
    print(f"  compute: {config.compute.describe()}")
    if config.he_context_sha256:
        print(f"  pinned key-holder CKKS context (sha256): {config.he_context_sha256}")
    if data.heads is not None:
        head = data.heads.latest
        print(f"  ledger: {head.seq} entries, extends every head published; head signed by key {head.key_id} "
              f"({config.ledger_signing_key}.pub)" + (f", published to the witness at {config.witness}"
                                                      if config.witness else ", no witness configured"))
    for line in check_security(config, data):
        print(f"  {line}")
    return ExitCode.OK


def _serve(config_path: str, listen: str | None, ready_file: str | None) -> int:
    config = load_site_config(config_path)
    data = load_site_data(config)
    data.backend()  # start (or connect to) the compute cluster before serving: the agent is warm when ready
    server, port = make_server(data, listen or config.listen)
    log.info("site %s serving on port %d (key %s)", config.name, port, identity_fingerprint(data.identity_public_key)[:16])
    serve_until_signal(server, listen or config.listen, port, ready_file)
    data.close()
    return ExitCode.OK


def main(argv: list[str] | None = None, plugins: Sequence[CommandPlugin] = ()) -> int:
    """Run ``fedgwas-site``; ``plugins`` add subcommands of other roles (the auditor's ``audit``)."""
    args = _parser(plugins).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("distributed").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        if args.command == "init":
            fmt, genotypes_path = next((f, getattr(args, k)) for k, f in GENOTYPE_KEYS.items() if getattr(args, k))
            pin = he_context_pin(Path(args.he_context)) if args.he_context else None
            tls = None if args.insecure else TlsFiles(Path(args.tls_dir) / "ca.pem", Path(args.tls_dir) / f"{args.name}.pem",
                                                      Path(args.tls_dir) / f"{args.name}.key")
            path = init_site(args.name, genotypes_path, args.pheno, args.covar, Path(args.dir), args.listen,
                             args.allow_plaintext, genotype_format=fmt, he_context_sha256=pin, tls=tls,
                             consent=args.consent, witness=args.witness, roster=Path(args.roster) if args.roster else None,
                             access=None if args.open_access else DENY_ALL,
                             genotyping_technology=args.genotyping_technology,
                             sample=args.sample, vcf_dosage=args.vcf_dosage, hard_calls=hard_call_rules(args),
                             **_compute_choice(args))
            public = ensure_identity_key(Path(args.dir))
            print(f"wrote {path}; check it with: fedgwas-site check --config {path}")
            print(f"identity key of {args.name!r} for the consortium roster: {public.hex()}")
            print(f"ledger signing key: {Path(args.dir) / 'keys' / 'ledger-signing.key'} (give the .pub file beside it "
                  f"to your auditor)")
            return ExitCode.OK
        if args.command == "check":
            return _check(args.config)
        for plugin in plugins:
            if args.command in plugin.COMMANDS:
                return plugin.run(args)
        return _serve(args.config, args.listen, args.ready_file)
    except (FedGwasError, ConfigError) as error:
        print(f"fedgwas-site: error: {error}", file=sys.stderr)
        return ExitCode.INPUT


if __name__ == "__main__":
    sys.exit(main())
