"""The pure domain: checkpoints, events, libvirt's rules and bitmap policies, the per-domain state.

Imports only the standard library and pydantic; knows nothing of stores, hypervisors or the CLI.
"""
