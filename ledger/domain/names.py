"""The name grammars of libvirt's checkpoint schema (domaincheckpoint.rng, basictypes.rng)."""

from __future__ import annotations

import re

from ledger.domain.errors import LedgerError

# checkpointName: XSD pattern [a-zA-Z0-9_\-][a-zA-Z0-9_\-.]* (anchored, ASCII only).
CHECKPOINT_NAME = re.compile(r"[a-zA-Z0-9_\-][a-zA-Z0-9_\-.]*\Z", re.ASCII)
# diskTarget: (ioemu:)?(fd|hd|sd|vd|xvd|ubd)[a-zA-Z0-9_]+ ; absFilePath: (/|[a-zA-Z]:\\).+
DISK_TARGET = re.compile(r"(ioemu:)?(fd|hd|sd|vd|xvd|ubd)[a-zA-Z0-9_]+\Z", re.ASCII)
ABS_FILE_PATH = re.compile(r"(/|[a-zA-Z]:\\)[^\n]+\Z", re.ASCII)
# A domain UUID as virUUIDParse reads one: 32 hex digits, dashes between groups optional.
UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\Z",
                  re.ASCII | re.IGNORECASE)
# libvirt caps nothing, but a ledger refuses absurd lengths (a file name must fit NAME_MAX).
MAX_NAME = 255


def _show(value: str) -> str:
    shown = value if len(value) <= 40 else value[:37] + "..."
    return repr(shown)


def is_uuid(text: str) -> bool:
    """True when ``text`` reads as a domain UUID (virsh then looks it up by UUID first)."""
    return UUID.match(text) is not None


def is_checkpoint_name(name: str) -> bool:
    """True when ``name`` matches libvirt's ``checkpointName`` pattern."""
    return len(name) <= MAX_NAME and CHECKPOINT_NAME.match(name) is not None


def is_disk_name(name: str) -> bool:
    """True when ``name`` is a disk target (``vda``) or an absolute path."""
    if len(name) > 4096:
        return False
    return DISK_TARGET.match(name) is not None or ABS_FILE_PATH.match(name) is not None


def check_checkpoint_name(name: str, what: str = "name") -> str:
    """Return ``name`` or raise XML_INVALID_SCHEMA as libvirt's schema validation does."""
    if not is_checkpoint_name(name):
        raise LedgerError(
            "XML_INVALID_SCHEMA",
            f"invalid checkpoint {what} {_show(name)}: it must match "
            "[a-zA-Z0-9_-][a-zA-Z0-9_.-]* (no leading '.', no '/', spaces or newlines)",
        )
    return name


def check_disk_name(name: str) -> str:
    """Return ``name`` or raise XML_INVALID_SCHEMA for a malformed disk name."""
    if not is_disk_name(name):
        raise LedgerError(
            "XML_INVALID_SCHEMA",
            f"invalid disk name {_show(name)}: expected a target such as 'vda' or an "
            "absolute path",
        )
    return name
