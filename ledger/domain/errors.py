"""Errors a user can cause, each carrying libvirt's error-code name.

A :class:`LedgerError` is what every rule violation, bad input or refused hypervisor
operation becomes. ``code`` is libvirt's ``VIR_ERR_*`` name without the prefix
(``OPERATION_FAILED``, ``INVALID_ARG`` ...) or, for problems that are the ledger's own
(a store URL, a version conflict), a ledger code such as ``STORE_ERROR``: one
:class:`ErrorCode` enumeration.
``str(err)`` is the one-line message a virsh user recognises.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class ErrorCode(StrEnum):
    """Every error code: libvirt's ``VIR_ERR_*`` names without the prefix, then the ledger's
    own. A member equals its name as text (``ErrorCode.NO_DOMAIN == "NO_DOMAIN"``)."""

    # libvirt's (virerror.h)
    INTERNAL_ERROR = "INTERNAL_ERROR"
    NO_SUPPORT = "NO_SUPPORT"
    NO_CONNECT = "NO_CONNECT"
    NO_DOMAIN = "NO_DOMAIN"
    INVALID_ARG = "INVALID_ARG"
    OPERATION_FAILED = "OPERATION_FAILED"
    XML_ERROR = "XML_ERROR"
    OPERATION_DENIED = "OPERATION_DENIED"
    OPERATION_INVALID = "OPERATION_INVALID"
    CONFIG_UNSUPPORTED = "CONFIG_UNSUPPORTED"
    OPERATION_UNSUPPORTED = "OPERATION_UNSUPPORTED"
    XML_INVALID_SCHEMA = "XML_INVALID_SCHEMA"
    NO_DOMAIN_CHECKPOINT = "NO_DOMAIN_CHECKPOINT"
    CHECKPOINT_INCONSISTENT = "CHECKPOINT_INCONSISTENT"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    AUTH_FAILED = "AUTH_FAILED"
    OPERATION_TIMEOUT = "OPERATION_TIMEOUT"
    # the ledger's own (no libvirt counterpart)
    STORE_ERROR = "STORE_ERROR"  # the event store cannot be opened, read or written
    STORE_URL = "STORE_URL"  # an unusable store or hypervisor URL
    VERSION_CONFLICT = "VERSION_CONFLICT"  # another writer appended to the stream first
    HYPERVISOR_ERROR = "HYPERVISOR_ERROR"  # the hypervisor adapter failed (unreachable ...)
    USAGE = "USAGE"  # a malformed command-line argument
    STATE_ERROR = "STATE_ERROR"  # a corrupt mock state file


CodeName = Literal[
    "INTERNAL_ERROR",
    "NO_SUPPORT",
    "NO_CONNECT",
    "NO_DOMAIN",
    "INVALID_ARG",
    "OPERATION_FAILED",
    "XML_ERROR",
    "OPERATION_DENIED",
    "OPERATION_INVALID",
    "CONFIG_UNSUPPORTED",
    "OPERATION_UNSUPPORTED",
    "XML_INVALID_SCHEMA",
    "NO_DOMAIN_CHECKPOINT",
    "CHECKPOINT_INCONSISTENT",
    "SYSTEM_ERROR",
    "AUTH_FAILED",
    "OPERATION_TIMEOUT",
    "STORE_ERROR",
    "STORE_URL",
    "VERSION_CONFLICT",
    "HYPERVISOR_ERROR",
    "USAGE",
    "STATE_ERROR",
]
"""An error code spelled as text; mypy checks it is one of :class:`ErrorCode`."""


# The message prefix libvirt puts in front of the detail (virerror.c: virErrorMsg); a code
# without one prints the detail alone.
LIBVIRT_PREFIXES: dict[ErrorCode, str] = {
    ErrorCode.INTERNAL_ERROR: "internal error",
    ErrorCode.NO_SUPPORT: "this function is not supported by the connection driver",
    ErrorCode.NO_DOMAIN: "Domain not found",
    ErrorCode.INVALID_ARG: "invalid argument",
    ErrorCode.OPERATION_FAILED: "operation failed",
    ErrorCode.XML_ERROR: "XML error",
    ErrorCode.OPERATION_DENIED: "operation forbidden",
    ErrorCode.OPERATION_INVALID: "Requested operation is not valid",
    ErrorCode.CONFIG_UNSUPPORTED: "unsupported configuration",
    ErrorCode.OPERATION_UNSUPPORTED: "Operation not supported",
    ErrorCode.XML_INVALID_SCHEMA: "XML document failed to validate against schema",
    ErrorCode.NO_DOMAIN_CHECKPOINT: "Domain checkpoint not found",
    ErrorCode.CHECKPOINT_INCONSISTENT: "checkpoint inconsistent",
    ErrorCode.NO_CONNECT: "no connection driver available",
    ErrorCode.AUTH_FAILED: "authentication failed",
    ErrorCode.OPERATION_TIMEOUT: "Timed out during operation",
}


class LedgerError(Exception):
    """A user-visible error: ``code`` (an :class:`ErrorCode`), the ``message`` describing the
    problem (libvirt's prefix, then the detail), and an optional ``hint`` saying what to do
    next in command-line terms, which the CLI prints after the message."""

    def __init__(self, code: ErrorCode | CodeName, detail: str, *, prefixed: bool = True,
                 hint: str | None = None) -> None:
        self.code = ErrorCode(code)
        self.detail = detail
        self.hint = hint
        prefix = LIBVIRT_PREFIXES.get(self.code, "") if prefixed else ""
        self.message = f"{prefix}: {detail}" if prefix else detail
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def one_line(self) -> str:
        """The message and its hint folded onto one line, for a CLI's stderr."""
        text = f"{self.message} ({self.hint})" if self.hint else self.message
        return " ".join(text.split())


def no_checkpoint(name: str) -> LedgerError:
    """libvirt's error for a checkpoint name that does not exist."""
    return LedgerError(
        "NO_DOMAIN_CHECKPOINT", f"no domain checkpoint with matching name '{name}'"
    )


def no_domain(name: str) -> LedgerError:
    """libvirt's error for an unknown domain."""
    return LedgerError("NO_DOMAIN", f"no domain with matching name '{name}'")


class VersionConflict(LedgerError):
    """An append's expected stream version did not match the store's."""

    def __init__(self, stream_id: str, expected: object, actual: int) -> None:
        super().__init__(
            "VERSION_CONFLICT",
            f"stream {stream_id} is at version {actual}, expected {expected}",
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
