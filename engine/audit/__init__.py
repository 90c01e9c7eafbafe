"""What the parties record about releases and ledgers, so that an auditor can match them.

:mod:`engine.audit.records`: request ids and release digests (shared by site and coordinator);
:mod:`engine.audit.ledger`: the site's hash-chained ledger; :mod:`engine.audit.coordinator_log`: the
coordinator's log; :mod:`engine.audit.heads`: signed ledger heads and their witness co-signatures.
"""
