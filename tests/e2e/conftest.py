"""Fixtures for end-to-end tests against a real libvirtd + QEMU (qemu:///system).

* ``qemu_guest`` (session): one running TCG guest with qcow2 disks vda/vdb/vdc
  (tests/e2e/qemu_guest.py); torn down at the end of the session.
* ``clean_guest``: that guest, running, with no checkpoints and no bitmaps.
* ``qemu_adapter``: a ``LibvirtHypervisor`` on qemu:///system.

They skip when qemu:///system is unreachable; with CKPT_LEDGER_REQUIRE_REAL=1 those skips
fail (tests/conftest.py), provided the test is marked ``qemu``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from qemu_guest import SYSTEM_URI, QemuGuest, unavailable_reason


@pytest.fixture(scope="session")
def qemu_system() -> str:
    """qemu:///system, or a skip saying why it cannot be used."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    return SYSTEM_URI


@pytest.fixture(scope="session")
def qemu_guest(qemu_system: str) -> Iterator[QemuGuest]:
    """A running guest shared by the session; tests that need a blank one use clean_guest."""
    guest = QemuGuest.create()
    try:
        yield guest
    finally:
        guest.destroy()


@pytest.fixture
def clean_guest(qemu_guest: QemuGuest) -> QemuGuest:
    """The session guest, running, without checkpoints or bitmaps."""
    qemu_guest.reset()
    return qemu_guest


@pytest.fixture
def qemu_adapter(qemu_system: str) -> Iterator[Any]:
    """The adapter under test on qemu:///system."""
    from adapters.libvirt import LibvirtHypervisor

    hv = LibvirtHypervisor(qemu_system)
    try:
        yield hv
    finally:
        hv.close()
