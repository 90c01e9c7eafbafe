"""Does a site's ledger extend every signed head that others hold for it?

The coordinator's log keeps the head a site returned with each task (``received`` events,
``ledger_head``); a witness keeps every head the site pushed. Each head must verify, be signed by
the site's key (given by the auditor, ``--site-key``, or else the one key all its heads share), name
the site, and be a prefix of the ledger: the ledger has at least ``seq`` entries and entry ``seq``
has the head's hash. A head further than the ledger shows a rollback (or a deleted ledger); a head
whose hash differs shows that entries up to it were rewritten, and the last head that still matches
narrows down where.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from engine.audit.heads import SignedHead, extension_problem, key_id
from engine.errors import HeadError


@dataclass(frozen=True)
class HeldHead:
    """A head and who holds it (e.g. "the coordinator log (line 12)", "the witness at HOST:PORT")."""

    holder: str
    head: SignedHead


def heads_from_log(events: Iterable[dict[str, Any]], source: str) -> tuple[dict[str, list[HeldHead]], list[str]]:
    """Heads in a coordinator log's ``received`` events, per site; malformed heads are problems."""
    held: dict[str, list[HeldHead]] = {}
    problems: list[str] = []
    for number, event in enumerate(events, start=1):
        value = event.get("ledger_head")
        if event.get("event") != "received" or value is None:
            continue
        where = f"the coordinator log {source} (event {number})"
        try:
            head = SignedHead.from_dict(value, where)
        except HeadError as error:
            problems.append(f"site {event.get('site')!r}: {error}")
            continue
        held.setdefault(str(event.get("site")), []).append(HeldHead(where, head))
    return held, problems


def check_signatures(site: str, held: Sequence[HeldHead], trusted_key: bytes | None) -> list[str]:
    """Every head verifies, names ``site`` and is signed by the site's key."""
    problems: list[str] = []
    keys = {h.head.public_key for h in held}
    for item in held:
        head = item.head
        try:
            head.verify()
        except HeadError as error:
            problems.append(f"site {site!r}: {item.holder}: {error}")
            continue
        if head.site != site:
            problems.append(f"site {site!r}: {item.holder} holds a head signed for site {head.site!r}")
        if trusted_key is not None and head.public_key != trusted_key:
            problems.append(f"site {site!r}: the head at seq {head.seq} in {item.holder} is signed by an unknown key "
                            f"{head.key_id} (the site's key is {key_id(trusted_key)})")
    if trusted_key is None and len(keys) > 1:
        problems.append(f"site {site!r}: its heads are signed by {len(keys)} different keys "
                        f"({', '.join(sorted(key_id(k) for k in keys))}): a head signed by an unknown key")
    return problems


def check_extension(site: str, hashes: Sequence[str], held: Sequence[HeldHead]) -> list[str]:
    """The ledger (its entry hashes in order) extends every held head; one message per kind of failure."""
    ordered = sorted(held, key=lambda h: h.head.seq)
    if not ordered:
        return []
    problems: list[str] = []
    furthest = ordered[-1]
    rolled = extension_problem(hashes, furthest.head, furthest.holder) if furthest.head.seq > len(hashes) else ""
    if rolled:
        problems.append(f"site {site!r}: ledger {rolled}")
    matching = [h.head.seq for h in ordered if h.head.seq <= len(hashes) and not extension_problem(hashes, h.head, "")]
    differing = [h for h in ordered if h.head.seq <= len(hashes) and extension_problem(hashes, h.head, h.holder)]
    if differing:
        first = differing[0]
        below = max((seq for seq in matching if seq < first.head.seq), default=0)
        where = f"entry {below + 1}" if below + 1 == first.head.seq else f"entries {below + 1} to {first.head.seq}"
        problems.append(f"site {site!r}: ledger {extension_problem(hashes, first.head, first.holder)} (the first "
                        f"change is in {where}; {len(differing)} held head(s) no longer match)")
    return problems
