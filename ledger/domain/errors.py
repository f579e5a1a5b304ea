"""Errors a user can cause, each carrying libvirt's error-code name.

A :class:`LedgerError` is what every rule violation, bad input or refused hypervisor
operation becomes. ``code`` is libvirt's ``VIR_ERR_*`` name without the prefix
(``OPERATION_FAILED``, ``INVALID_ARG`` ...) or, for problems that are the ledger's own
(a store URL, a version conflict), a ledger code such as ``STORE_ERROR``.
``str(err)`` is the one-line message a virsh user recognises.
"""

from __future__ import annotations

# libvirt's own codes, with the message prefix libvirt puts in front of the detail
# (virerror.c: virErrorMsg). A code with an empty prefix prints the detail alone.
LIBVIRT_PREFIXES: dict[str, str] = {
    "INTERNAL_ERROR": "internal error",
    "NO_SUPPORT": "this function is not supported by the connection driver",
    "NO_DOMAIN": "Domain not found",
    "INVALID_ARG": "invalid argument",
    "OPERATION_FAILED": "operation failed",
    "XML_ERROR": "XML error",
    "OPERATION_DENIED": "operation forbidden",
    "OPERATION_INVALID": "Requested operation is not valid",
    "CONFIG_UNSUPPORTED": "unsupported configuration",
    "OPERATION_UNSUPPORTED": "Operation not supported",
    "XML_INVALID_SCHEMA": "XML document failed to validate against schema",
    "NO_DOMAIN_CHECKPOINT": "Domain checkpoint not found",
    "CHECKPOINT_INCONSISTENT": "checkpoint inconsistent",
    "NO_CONNECT": "no connection driver available",
    "SYSTEM_ERROR": "",
    "AUTH_FAILED": "authentication failed",
    "OPERATION_TIMEOUT": "Timed out during operation",
}

# Codes that are the ledger's own (no libvirt counterpart).
LEDGER_CODES = {
    "STORE_ERROR",  # the event store cannot be opened, read or written
    "STORE_URL",  # an unusable store or hypervisor URL
    "VERSION_CONFLICT",  # another writer appended to the stream first
    "HYPERVISOR_ERROR",  # the hypervisor adapter failed (unreachable, missing binding)
    "USAGE",  # a malformed command-line argument
    "STATE_ERROR",  # a corrupt mock state file
}


class LedgerError(Exception):
    """A user-visible error with libvirt's error-code name as ``code``."""

    def __init__(self, code: str, detail: str, *, prefixed: bool = True) -> None:
        self.code = code
        self.detail = detail
        prefix = LIBVIRT_PREFIXES.get(code, "") if prefixed else ""
        self.message = f"{prefix}: {detail}" if prefix else detail
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def one_line(self) -> str:
        """The message folded onto one line, for a CLI's stderr."""
        return " ".join(self.message.split())


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
