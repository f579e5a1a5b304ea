"""Hypervisor adapters: the mock hypervisor (mock:///state.json) and real libvirt."""
