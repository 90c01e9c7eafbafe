"""The auditor's role: check a site's ledger against what others hold, and recompute its budget.

:mod:`audit.charges` recomputes every DP charge through OpenDP; :mod:`audit.heads_check` checks that a
ledger extends every signed head the coordinator and the witness hold; :mod:`audit.consortium`
reports budgets across sites.
"""
