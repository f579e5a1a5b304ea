"""Deterministic crash points in check-apply-append, for tests of crash recovery.

``CKPT_LEDGER_CRASH_AT`` names a point (:data:`POINTS`); a command that reaches it ends the
process at once (``os._exit``, as a SIGKILL would: no cleanup, no flush). Tests in one process
replace :data:`crash` to raise instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable

POINTS = ("before-hypervisor", "after-hypervisor", "after-append")
EXIT_CODE = 137  # what a shell reports for a SIGKILLed process


def _exit_now(point: str) -> None:
    os._exit(EXIT_CODE)


crash: Callable[[str], None] = _exit_now


def point(name: str) -> None:
    """Stop here when ``CKPT_LEDGER_CRASH_AT`` names this point."""
    if os.environ.get("CKPT_LEDGER_CRASH_AT") == name:
        crash(name)
