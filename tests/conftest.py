"""Project-wide pytest hooks (keep this small and generic).

With ``CKPT_LEDGER_REQUIRE_REAL=1`` (set by .ci/run), a test marked ``libvirt``, ``qemu``
or ``postgres`` that skips is reported as FAILED with the skip reason, so CI cannot go
green without really running them. Skip such tests from a fixture or the test body, not
at module level (a module-level skip happens before markers are known).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

REAL_MARKERS = ("libvirt", "qemu", "postgres")


def require_real() -> bool:
    """True when skips of real-dependency tests must fail (CKPT_LEDGER_REQUIRE_REAL=1)."""
    return os.environ.get("CKPT_LEDGER_REQUIRE_REAL", "") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and require_real()):
        return
    if hasattr(report, "wasxfail"):
        return  # an expected failure is not a skip
    marks = [m for m in REAL_MARKERS if item.get_closest_marker(m) is not None]
    if not marks:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"CKPT_LEDGER_REQUIRE_REAL=1 forbids skipping a test marked {'/'.join(marks)}: {reason}"
    )
