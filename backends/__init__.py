"""Event stores: memory://, sqlite:///, msgpack:///, postgresql://.

Each module exposes ``open_url(url) -> EventStore`` (registered as an entry point in
pyproject.toml) and passes the shared contract in tests/store_contract.py.
"""
