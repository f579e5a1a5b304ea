"""The application: the read model and the writer, recovery, audit, integrity, copying, and
the :class:`~ledger.app.ledger.Ledger` facade over them. Imports :mod:`ledger.log` and
:mod:`ledger.domain`; opens backends and adapters only by URL (:mod:`ledger.app.plugins`).
"""
