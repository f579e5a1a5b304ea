"""Write-ahead intents: what an operation is about to ask the hypervisor, kept next to the log.

Before a command changes the hypervisor it saves an :class:`Intent` for the domain (under
:func:`intent_key`, in the store's keyed blob slot, ``EventStore.save_snapshot``), holding the
domain's stream version at that moment. Appending the operation's events moves the stream past
that version, which closes the intent without another write. An intent whose version is still
the stream's when the next command takes the domain's lock means the operation may have reached
the hypervisor without its events being recorded: that command settles it from what the
hypervisor shows (:mod:`ledger.app.sync`), and records how (an ``OperationSettled`` event).

Backends write an intent without waiting for the disk (no fsync): it survives a killed
process, the case it is for. Lost to a power failure, nothing is hidden: the next command still
records what the host shows, as observed, only without the attempt's who and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from ledger.log.store import EventStore

INTENT_PREFIX = "intent:"
_VERSION = 1


def intent_key(stream_id: str) -> str:
    """The slot key of a domain's intent."""
    return INTENT_PREFIX + stream_id


@dataclass(frozen=True)
class Intent:
    """An operation about to reach the hypervisor: ``op`` (create, redefine, delete) on
    ``checkpoint``, when, by whom and why, with the flags that shape its outcome."""

    op: str
    checkpoint: str
    at: float
    actor: str | None = None
    reason: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    version: int = 0  # the domain's stream version before the operation's events

    def encode(self) -> bytes:
        """The intent as stored."""
        return bytes(msgpack.packb({"v": _VERSION, **vars(self)}, use_bin_type=True))

    @classmethod
    def decode(cls, data: bytes, version: int | None = None) -> Intent | None:
        """The intent ``data`` holds; None when empty (cleared), not an intent this code
        wrote (the host's state settles the domain anyway), or, with ``version``, saved at
        another stream version (closed)."""
        if not data:
            return None
        try:
            obj = msgpack.unpackb(data, raw=False)
            if not isinstance(obj, dict) or obj.pop("v", None) != _VERSION:
                return None
            if version is not None and obj.get("version") != version:
                return None
            intent = cls(**obj)
        except (ValueError, TypeError, msgpack.UnpackException):
            return None
        if (not isinstance(intent.op, str) or not isinstance(intent.checkpoint, str)
                or type(intent.version) is not int):
            return None
        return intent


def load_intent(store: EventStore, stream_id: str, version: int | None = None) -> Intent | None:
    """The domain's intent, if any; with the stream's current ``version``, only one still
    open (no event appended since it was saved)."""
    saved = store.load_snapshot(intent_key(stream_id))
    return None if saved is None else Intent.decode(saved[1], version)


def save_intent(store: EventStore, stream_id: str, intent: Intent | None) -> None:
    """Open ``intent`` for the domain (None: clear it)."""
    store.save_snapshot(intent_key(stream_id), 0, b"" if intent is None else intent.encode())
