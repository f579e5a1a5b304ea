"""Benchmarks for ckpt-ledger: ``python -m bench.run`` (``make bench``).

Every figure is a ratio measured side by side in one run against a floor (plain sqlite3 +
msgpack) or the ``eventsourcing`` library; see :mod:`bench.run` for the table it prints.
"""
