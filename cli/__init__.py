"""The ckpt-ledger command line: a thin typer layer over :class:`ledger.Ledger`."""
