"""The mock hypervisor passes the same adapter suite as libvirt's test driver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypervisor_contract import HypervisorContract

from adapters.mock import MockHypervisor


@pytest.fixture
def hypervisor(tmp_path: Path) -> Iterator[tuple[Any, str]]:
    hv = MockHypervisor(str(tmp_path / "host.json"))
    hv.define("test", ["vda"])
    yield hv, "test"
    hv.close()


class TestMockHypervisorContract(HypervisorContract):
    """Every case of tests/hypervisor_contract.py, against mock:///state.json."""
