"""The SQLite ledger: every bar, decision, fill, position and shadow score, one transaction per bar close.

`writer` (the `Ledger` a running bot writes through), `reader` (its queries: restore, replay, summaries),
`schema` (the tables and their SQL, the decision columns from the record's fields) and `lock` (one bot per
ledger file, and the ledger's errors).
"""
