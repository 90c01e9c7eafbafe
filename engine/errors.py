"""Exception hierarchy shared by every fedgwas component.

One root, :class:`FedGwasError`, so callers can tell a known domain failure from a bug. Subclasses
also derive from the matching builtin where that fits (``InputError`` is a ``ValueError``), as tskit
does, so generic code that catches builtins keeps working. Messages quote the offending file, field
and value: they are shown to users as they are.
"""

from __future__ import annotations

from collections.abc import Sequence


class FedGwasError(Exception):
    """Root of all expected fedgwas failures (bad input, refused requests, failed sites)."""


class InputError(FedGwasError, ValueError):
    """A user-supplied file, field or value is missing, malformed or inconsistent."""


class ConfigError(InputError):
    """A TOML configuration (site or study) is invalid; the message names the key."""


class HarmonisationError(FedGwasError, ValueError):
    """Variant manifests cannot be matched across sites (e.g. nothing in common)."""


class RingOverflowError(FedGwasError, OverflowError):
    """A statistic does not fit the fixed-point ring; it is refused rather than wrapped."""


class ProtocolError(FedGwasError, ValueError):
    """A request or response violates the wire protocol (missing header, bad chunk, bad shape)."""


class PrivacyError(FedGwasError):
    """A requested privacy mode or key material is unavailable or inconsistent."""


class BudgetExceededError(PrivacyError):
    """A site refused a release that would exceed its differential-privacy budget (nothing was
    computed); the message says what the request needs and what budget remains."""


#: Kinds of site refusal that mean the request was invalid (e.g. a phenotype name no site has).
BAD_REQUEST_KINDS = frozenset({"InputError", "ProtocolError"})


class SiteFailure(FedGwasError):
    """A site could not be reached, failed, or refused a task (raised on the coordinator side).

    ``kind`` is the site's error class name when the site itself refused the request (``refused``),
    else a gRPC status name or ``ProtocolError`` for a reply the coordinator could not accept.
    """

    def __init__(self, site: str, message: str, *, kind: str = "", transient: bool = False,
                 refused: bool = False) -> None:
        super().__init__(f"site {site!r}: {message}")
        self.site = site
        self.kind = kind
        self.transient = transient
        self.refused = refused

    @property
    def bad_request(self) -> bool:
        """True when the site refused the request itself as invalid (the user's input, not the site, is at fault)."""
        return self.refused and self.kind in BAD_REQUEST_KINDS


class StudyFailed(FedGwasError):
    """A study could not complete (too few sites left, or a site error the study does not tolerate).

    ``failures`` holds the site failures that caused it, when known.
    """

    def __init__(self, message: str, *, failures: Sequence[SiteFailure] = ()) -> None:
        super().__init__(message)
        self.failures = tuple(failures)

    @property
    def bad_request(self) -> bool:
        """True when every site failure behind this is a site refusing the request as invalid."""
        return bool(self.failures) and all(failure.bad_request for failure in self.failures)


class ExitCode:
    """The exit codes of every fedgwas command (``fedgwas``, ``fedgwas-site``), documented in the README."""

    OK = 0
    #: An unexpected internal error: a bug (a traceback is printed).
    INTERNAL = 1
    #: Bad input, configuration or usage (one message naming the file, field or value).
    INPUT = 2
    #: A site failed, hung, refused or could not be reached, and the study could not finish.
    SITE = 3
    #: A ledger failed verification or disagrees with the coordinator's log or a witness.
    AUDIT = 4
