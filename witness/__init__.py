"""The ledger-head witness: a small server any third party can run (``fedgwas witness serve``).

It co-signs the signed ledger heads that sites submit and keeps every one, append-only, so that a
site cannot later roll its ledger back or rewrite it without contradicting what the witness holds.
"""
