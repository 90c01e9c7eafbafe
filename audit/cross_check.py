"""``fedgwas audit cross-check``: every site ledger against the coordinator's log and the witness.

For each ledger the auditor is given (``SITE=PATH``, or a path whose entries name the site):

* the file exists and is a ledger, of that site (not another site's);
* its hash chain is intact (engine/audit/ledger.py: edited, removed, reordered entries);
* every DP charge recomputes through OpenDP (audit/charges.py) and asks what the coordinator asked
  (mechanism, ε, δ of the same request);
* it extends every signed head the coordinator's log and the witness hold for the site, and those
  heads are signed by the site's key (audit/heads_check.py);
* every request and release in the coordinator's log is in it, with the same release digest
  (engine/audit/coordinator_log.py: :func:`cross_check`).

Every failure is one line naming the site, the entry or head, and what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from audit.charges import recompute_charges
from audit.heads_check import HeldHead, check_extension, check_signatures, heads_from_log
from engine.audit.coordinator_log import cross_check, read_log
from engine.audit.heads import key_id
from engine.privacy.dp_release import KEYS, PHASE_KEY
from engine.errors import ConfigError
from protos.witness_client import WitnessClient
from engine.audit.ledger import LedgerEntry, open_entries, verify


@dataclass
class AuditOutcome:
    """What the auditor prints: ``lines`` (one per ledger), ``notes`` and ``problems`` (any problem fails)."""

    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    matched: int = 0
    ledgers: dict[str, list[LedgerEntry]] = field(default_factory=dict)
    unreadable: set[str] = field(default_factory=set)  # sites whose ledger is missing or not a ledger


def parse_ledger_spec(spec: str) -> tuple[str | None, Path]:
    """``SITE=PATH`` or ``PATH``."""
    site, sep, path = spec.partition("=")
    return (site, Path(path)) if sep and site and not Path(spec).exists() else (None, Path(spec))


def witness_heads(address: str, pinned_key: bytes | None) -> tuple[dict[str, list[HeldHead]], list[str]]:
    """Every head the witness holds, per site (co-signatures verified by the client)."""
    client = WitnessClient(address)
    try:
        key, held = client.heads("")
    finally:
        client.close()
    problems = []
    if pinned_key is not None and key != pinned_key:
        problems.append(f"the witness at {address} answers with key {key_id(key)}, not the pinned witness key "
                        f"{key_id(pinned_key)}")
    out: dict[str, list[HeldHead]] = {}
    for head, cosignature in held:
        out.setdefault(head.site, []).append(
            HeldHead(f"the witness at {address} (co-signed {cosignature.time})", head))
    return out, problems


def compare_requests(events: Iterable[dict[str, Any]], site: str, entries: Sequence[LedgerEntry]) -> list[str]:
    """Each ledger entry of a logged request charges the mechanism, ε and δ the coordinator asked for."""
    asked: dict[str, dict[str, str]] = {}
    for event in events:
        if event.get("event") == "requested" and str(event.get("site")) == site and event.get("request_id"):
            asked[str(event["request_id"])] = {str(k): str(v) for k, v in (event.get("parameters") or {}).items()}
    problems = []
    for entry in entries:
        parameters = asked.get(entry.request_id)
        if parameters is None or entry.kind not in ("accepted", "checked", "released") or \
                (entry.kind == "checked") != (parameters.get(PHASE_KEY) == "check"):
            continue
        if KEYS["epsilon"] not in parameters:
            if entry.mechanism != "exact":
                problems.append(f"site {site!r}: entry {entry.seq} ({entry.kind}, study {entry.study!r} round "
                                f"{entry.round}) records a {entry.mechanism!r} release but the coordinator asked for "
                                f"none")
            continue
        mechanism = parameters.get(KEYS["mechanism"], "gaussian")
        epsilon = float(parameters[KEYS["epsilon"]])
        delta = float(parameters.get(KEYS["delta"], "1e-6")) if mechanism == "gaussian" else 0.0
        if (entry.mechanism, entry.epsilon, entry.delta) != (mechanism, epsilon, delta):
            problems.append(f"site {site!r}: entry {entry.seq} ({entry.kind}, study {entry.study!r} round {entry.round})"
                            f" records {entry.mechanism} epsilon {entry.epsilon:g} delta {entry.delta:g}, but the "
                            f"coordinator asked for {mechanism} epsilon {epsilon:g} delta {delta:g}")
    return problems


def _check_ledger(spec: str, events: list[dict[str, Any]], held: dict[str, list[HeldHead]],
                  site_keys: dict[str, bytes], outcome: AuditOutcome) -> None:
    given, path = parse_ledger_spec(spec)
    if not path.is_file():
        site = given or str(path)
        outcome.unreadable.add(site)
        furthest = max((h for h in held.get(site, [])), key=lambda h: h.head.seq, default=None)
        outcome.problems.append(
            f"site {site!r}: ledger {str(path)!r} does not exist (deleted)"
            + (f", but {furthest.holder} holds its signed head at seq {furthest.head.seq} (signed at "
               f"{furthest.head.time}): the ledger was deleted" if furthest is not None else ""))
        return
    try:
        entries = open_entries(path)
    except ConfigError as error:
        outcome.problems.append(f"site {given or str(path)!r}: {error}")
        outcome.unreadable.add(given or str(path))
        return
    named = sorted({e.site for e in entries})
    site = given or (entries[-1].site if entries else str(path))
    if named and named != [site]:
        outcome.problems.append(f"site {site!r}: ledger {str(path)!r} is another site's ledger: its entries are "
                                f"those of site(s) {', '.join(repr(n) for n in named)}")
    if site in outcome.ledgers:
        outcome.problems.append(f"site {site!r}: two ledgers were given for this site (the second is {str(path)!r})")
    chain = verify(entries)
    outcome.lines.append(f"ledger {path}: site {site!r}, {chain.n_entries} entries, "
                         + ("hash chain intact" if chain.ok else "HASH CHAIN BROKEN"))
    if not chain.ok:
        outcome.problems.append(f"site {site!r}: ledger {str(path)!r} fails verification at entry {chain.first_bad}: "
                                f"{chain.problem}")
    charges = recompute_charges(entries)
    outcome.problems += [f"site {site!r}: {problem}" for problem in charges.problems]
    outcome.problems += compare_requests(events, site, entries)
    site_heads = held.get(site, [])
    outcome.problems += check_signatures(site, site_heads, site_keys.get(site))
    outcome.problems += check_extension(site, [e.hash for e in entries], site_heads)
    if site_heads:
        outcome.lines.append(f"  {len(site_heads)} signed head(s) held for {site!r}, up to seq "
                             f"{max(h.head.seq for h in site_heads)}")
    outcome.ledgers.setdefault(site, entries)


def run_cross_check(log_path: str, ledger_specs: Sequence[str], witness: str | None = None,
                    witness_key: bytes | None = None, site_keys: dict[str, bytes] | None = None,
                    strict: bool = False) -> AuditOutcome:
    """Run every check above; raises domain errors only for an unreadable coordinator log or witness."""
    events = read_log(log_path)
    held, problems = heads_from_log(events, log_path)
    outcome = AuditOutcome(problems=problems)
    if witness is not None:
        witnessed, witness_problems = witness_heads(witness, witness_key)
        outcome.problems += witness_problems
        for site, heads in witnessed.items():
            held.setdefault(site, []).extend(heads)
    for spec in ledger_specs:
        _check_ledger(spec, events, held, site_keys or {}, outcome)
    if witness is not None:
        outcome.notes += [f"site {site!r}: the witness at {witness} holds no head for it (the site has no "
                          f"[witness] address, or never reached it)"
                          for site in outcome.ledgers if not any(h.holder.startswith("the witness")
                                                                 for h in held.get(site, []))]
    result = cross_check(events, outcome.ledgers, strict=strict)
    outcome.problems += result.problems
    outcome.notes += [note for note in result.notes if not any(note.startswith(f"site {site!r}:")
                                                               for site in outcome.unreadable)]
    outcome.matched = result.matched
    for site in sorted(set(held) - set(outcome.ledgers) - outcome.unreadable):
        outcome.notes.append(f"site {site!r}: no ledger given; its {len(held[site])} signed head(s) were not checked")
    return outcome


def read_site_keys(specs: Sequence[str]) -> dict[str, bytes]:
    """``--site-key SITE=FILE`` (FILE: the site's ``ledger-signing.key.pub``)."""
    from engine.audit.heads import read_public_key

    keys = {}
    for spec in specs:
        site, sep, path = spec.partition("=")
        if not sep or not site:
            raise ConfigError(f"--site-key {spec!r} must be SITE=FILE")
        keys[site] = read_public_key(Path(path))
    return keys
