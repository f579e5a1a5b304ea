"""ckpt-ledger: an append-only, event-sourced ledger of libvirt disk checkpoints.

    from ledger import Ledger
    with Ledger.open(store="sqlite:///ledger.db", hypervisor="mock:///state.json") as lg:
        lg.create("vm1", "chk1")
"""

from .errors import LedgerError, VersionConflict
from .ledger import Ledger
from .views import BitmapsView, CheckpointView, DeleteResult, EventView, PlanView

__all__ = [
    "BitmapsView",
    "CheckpointView",
    "DeleteResult",
    "EventView",
    "Ledger",
    "LedgerError",
    "PlanView",
    "VersionConflict",
]

