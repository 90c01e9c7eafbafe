"""Admission of a request at the site agent, before any payload is buffered or any data is read.

The servicer calls these on what it knows first: the caller's certificate identity when the call
opens (:func:`may_ever_be_served`, which picks the caller's pool in :mod:`protos.limits`), then the
task header, the stream's first message (:func:`authorise_header`). A caller the site's ``[access]``
rules refuse is refused there, with a ledger entry, before one byte of its arrays is read: an
unauthorised certificate cannot make the site buffer gigabytes and then be refused.
"""

from __future__ import annotations

import logging

from engine.audit.records import REQUEST_ID_KEY
from engine.errors import PrivacyError
from protos import site_agent_pb2 as pb
from site_agent.data import SiteData
from engine.audit.ledger import canonical_json
from site_agent.policy import ANY, AccessPolicy

log = logging.getLogger("site_agent")


def may_ever_be_served(access: AccessPolicy, identity: str | None) -> bool:
    """False for a certificate identity that no ``[access]`` rule lists (it can never be authorised).

    ``None`` (a plaintext development port, where callers have no identity) counts as possibly served.
    """
    if identity is None:
        return True
    lists = [access.requesters, *(s.requesters for s in access.studies if s.requesters is not None)]
    return any(ANY in names or identity in names for names in lists)


def authorise_header(data: SiteData, header: pb.TaskHeader, requester: str | None) -> None:
    """Refuse (PrivacyError, recorded in the ledger) a task its header shows the site will not run.

    The same ``[access]`` check as the handler's (study, analysis, requester), made before the payload
    is read; the handler checks everything else once the task is complete.
    """
    try:
        data.config.access.authorise(data.name, header.study_id, header.analysis, requester)
    except PrivacyError as error:
        description = {"refused": "on the task header, before its payload was read",
                       "privacy": header.privacy, "n_variants": header.n_variants}
        data.ledger.append(kind="refused", requester=requester or "", study=header.study_id, round=header.round,
                           request_id=header.parameters.get(REQUEST_ID_KEY, ""), analysis=header.analysis,
                           parameters=canonical_json(description), message=f"{type(error).__name__}: {error}")
        log.warning("task refused on its header: %s", error)
        raise
