"""What the parties record about releases and ledgers, so that an auditor can match them.

:mod:`engine.audit.records`: request ids and release digests (shared by site and coordinator);
:mod:`engine.audit.heads`: signed ledger heads and their witness co-signatures.
"""

from engine.audit.records import REQUEST_ID_KEY, ReleaseDigest

__all__ = ["REQUEST_ID_KEY", "ReleaseDigest"]
