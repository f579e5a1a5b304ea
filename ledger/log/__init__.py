"""The event log: stored records and their encoding, the hash chain, the fold, snapshots' codec,
and the event store port that ``backends/`` implement. Imports only :mod:`ledger.domain`.
"""
