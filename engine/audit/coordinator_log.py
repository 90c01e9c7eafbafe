"""The coordinator's own log of what it requested and received, and its cross-check with site ledgers.

Every task the coordinator sends is logged (JSON lines, appended and fsync'd, in the study's output
directory as ``coordinator-log.jsonl``): ``requested`` when sent, then ``received`` with the SHA-256
of the blocks it got (:class:`engine.audit.records.ReleaseDigest`, the same digest the site writes in its
ledger), or ``failed`` with the reason. A DP study also logs each ``preview``.

:func:`cross_check` compares such a log with the sites' ledgers. A hash chain shows edits,
deletions and reorderings inside a ledger, but not the removal of its last entries; a coordinator
log that remembers later requests does. It also shows digests that differ (what the site says it
released is not what the coordinator received) and releases the log does not know about.
"""

from __future__ import annotations

import json
import os
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from engine.audit.records import REQUEST_ID_KEY, ReleaseDigest
from engine.privacy.dp_release import CHECK_PHASE, PHASE_KEY
from engine.errors import InputError, SiteFailure
from engine.tasks import ResultBlock, TaskDone, TaskProgress, TaskSpec

LOG_NAME = "coordinator-log.jsonl"


def _phase(parameters: dict[str, str]) -> str:
    return "check" if parameters.get(PHASE_KEY) == CHECK_PHASE else "release"


class CoordinatorLog:
    """Append-only JSON-lines log; safe to call from the round executor's threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, event: dict[str, Any]) -> None:
        line = json.dumps({"time": datetime.now(timezone.utc).isoformat(timespec="microseconds"), **event},
                          sort_keys=True, allow_nan=False, default=str)
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _task(self, site: str, task: TaskSpec) -> dict[str, Any]:
        return {"site": site, "study": task.study_id, "round": task.round, "analysis": task.analysis,
                "request_id": task.parameters.get(REQUEST_ID_KEY, ""), "phase": _phase(dict(task.parameters)),
                "requester": task.requester, "privacy": task.privacy, "n_variants": task.n_variants,
                "parameters": dict(task.parameters)}

    def requested(self, site: str, task: TaskSpec) -> None:
        self.write({"event": "requested", **self._task(site, task)})

    def received(self, site: str, task: TaskSpec, digest: str, n_blocks: int) -> None:
        self.write({"event": "received", **self._task(site, task), "digest": digest, "n_blocks": n_blocks})

    def failed(self, site: str, task: TaskSpec, reason: str) -> None:
        self.write({"event": "failed", **self._task(site, task), "message": reason})


def read_log(path: Path | str) -> list[dict[str, Any]]:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"coordinator log {str(path)!r} does not exist") from None
    events = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            raise InputError(f"{str(path)!r} line {number} is not JSON") from None
    return events


@dataclass
class CrossCheck:
    """Findings of :func:`cross_check`: ``problems`` make the check fail; ``notes`` do not."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    matched: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _ledger_phase(entry: Any) -> str:
    if entry.kind == "checked":
        return "check"
    try:
        parameters = json.loads(entry.parameters).get("parameters", {})
    except (json.JSONDecodeError, AttributeError):
        parameters = {}
    return _phase(parameters)


def cross_check(events: Iterable[dict[str, Any]], ledgers: dict[str, list[Any]], strict: bool = False) -> CrossCheck:
    """Compare a coordinator log with site ledgers (``{site name: entries}``, chains verified by the caller).

    For every site with a ledger: each request the coordinator logged must appear in the ledger
    (same request id and phase); each release it received must match a ``released`` entry with the
    same digest. Ledger releases to the log's requesters that the log does not show are noted
    (problems with ``strict``).
    """
    result = CrossCheck()
    by_site: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        if event.get("event") in ("requested", "received") and event.get("request_id"):
            by_site[str(event.get("site"))].append(event)
    requesters = {str(e.get("requester", "")) for site_events in by_site.values() for e in site_events}
    for site, entries in ledgers.items():
        index: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for entry in entries:
            if entry.request_id:
                index[(entry.request_id, _ledger_phase(entry))].append(entry)
        last = entries[-1] if entries else None
        missing_after_end = 0
        for event in by_site.get(site, []):
            key = (event["request_id"], event.get("phase", "release"))
            found = index.get(key, [])
            what = f"study {event.get('study')!r} round {event.get('round')} ({event.get('analysis')}, {key[1]})"
            if not found:
                if last is None or str(event.get("time", "")) > last.time:
                    missing_after_end += 1
                result.problems.append(f"site {site!r}: the coordinator {event['event']} {what} at "
                                       f"{event.get('time')}, but the site's ledger has no entry for it")
                continue
            if event["event"] == "received" and key[1] == "check":
                if not any(e.kind == "checked" for e in found):
                    result.problems.append(f"site {site!r}: the coordinator's budget check {what} passed but the "
                                           f"ledger records {sorted({e.kind for e in found})}")
            elif event["event"] == "received":
                released = [e for e in found if e.kind == "released"]
                if not released:
                    kinds = sorted({e.kind for e in found})
                    result.problems.append(f"site {site!r}: the coordinator received {what} but the ledger records "
                                           f"it only as {kinds}")
                elif all(e.digest != event.get("digest") for e in released):
                    result.problems.append(f"site {site!r}: {what}: the ledger's release digest "
                                           f"{released[0].digest[:16]}... differs from the digest the coordinator "
                                           f"received {str(event.get('digest'))[:16]}...")
                else:
                    result.matched += 1
        if missing_after_end and last is not None:
            result.problems.append(f"site {site!r}: the ledger ends at entry {last.seq} ({last.time}) but the "
                                   f"coordinator logged {missing_after_end} later request(s) or release(s): the "
                                   f"ledger was truncated")
        known = {e["request_id"] for e in by_site.get(site, [])}
        for entry in entries:
            if entry.kind == "released" and entry.requester in requesters and entry.request_id not in known:
                message = (f"site {site!r}: ledger entry {entry.seq} records a release to {entry.requester!r} "
                           f"(study {entry.study!r} round {entry.round}) that this coordinator log does not show")
                (result.problems if strict else result.notes).append(message)
    for site in sorted(set(by_site) - set(ledgers)):
        result.notes.append(f"site {site!r}: no ledger given; its {len(by_site[site])} logged events were not checked")
    return result


def audited_events(log: CoordinatorLog | None, site: str, task: TaskSpec,
                   events: Iterable[TaskProgress | ResultBlock | TaskDone]) -> Iterator[TaskProgress | ResultBlock | TaskDone]:
    """Pass a site's task events through, logging the request, the digest of the blocks received
    (on the site's summary) or the failure."""
    if log is not None:
        log.requested(site, task)
    digest = ReleaseDigest()
    try:
        for event in events:
            if isinstance(event, ResultBlock):
                digest.update(event)
            elif isinstance(event, TaskDone) and log is not None:
                log.received(site, task, digest.hexdigest(), digest.n_blocks)
            yield event
    except SiteFailure as failure:
        if log is not None:
            log.failed(site, task, str(failure))
        raise
