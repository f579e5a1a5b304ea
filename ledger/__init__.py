"""ckpt-ledger: an append-only, event-sourced ledger of libvirt disk checkpoints.

    from ledger import Ledger
    with Ledger.open(store="sqlite:///ledger.db", hypervisor="mock:state.json") as lg:
        lg.create("vm1", "chk1")
"""

from ledger.app.ledger import Ledger
from ledger.app.views import BitmapsView, CheckpointView, DeleteResult, EventView, PlanView
from ledger.domain.errors import ErrorCode, LedgerError, VersionConflict
from ledger.domain.model import Policy
from ledger.log.store import EventStore
from ledger.version import __version__

__all__ = [
    "BitmapsView",
    "CheckpointView",
    "DeleteResult",
    "ErrorCode",
    "EventStore",
    "EventView",
    "Ledger",
    "LedgerError",
    "PlanView",
    "Policy",
    "VersionConflict",
    "__version__",
]

