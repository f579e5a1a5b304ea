"""Hypervisor adapters: the mock hypervisor (mock:///path/state.json) and real libvirt."""
