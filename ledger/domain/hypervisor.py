"""What the ledger needs from a hypervisor (the port adapters implement)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ledger.domain.model import DomainInfo, HostJob, JobResult


class Hypervisor(Protocol):
    """What the ledger needs from a hypervisor; mirrors libvirt's checkpoint API.

    Every method raises :class:`ledger.domain.errors.LedgerError` with libvirt's code when the
    hypervisor refuses. Methods that change state either do it fully or raise; a partial
    delete raises :class:`PartialDelete`. A ``domain`` argument is a UUID or a name, found
    as virsh finds one (by UUID first); a command passes the UUID of the domain it locked.
    """

    uri: str

    def domain_info(self, domain: str) -> DomainInfo:
        """Name, UUID, state, bitmap policy and disks of ``domain`` (NO_DOMAIN if absent)."""
        ...

    def list_domains(self) -> list[str]:
        """Names of every domain the hypervisor knows."""
        ...

    def describe(self) -> str:
        """What the hypervisor is, in one line (driver and versions, or the mock's file)."""
        ...

    def create_checkpoint(self, domain: str, xml: str, quiesce: bool = False) -> str:
        """``virDomainCheckpointCreateXML(xml, 0)``; return the new checkpoint's XML."""
        ...

    def redefine_checkpoint(
        self, domain: str, xml: str, validate: bool = False, read_back: bool = True
    ) -> str | None:
        """CreateXML with REDEFINE (and REDEFINE_VALIDATE); return the resulting XML, or
        None when not ``read_back`` (libvirt's getXMLDesc is then not called)."""
        ...

    def delete_checkpoint(
        self,
        domain: str,
        name: str,
        *,
        children: bool = False,
        children_only: bool = False,
        metadata_only: bool = False,
    ) -> None:
        """``virDomainCheckpointDelete`` with the matching flags."""
        ...

    def checkpoint_xml(self, domain: str, name: str, no_domain: bool = False) -> str:
        """``virDomainCheckpointGetXMLDesc`` (SECURE, plus NO_DOMAIN if asked)."""
        ...

    def list_checkpoints(self, domain: str) -> list[str]:
        """Names of every checkpoint of ``domain``, parents before children."""
        ...

    def checkpoint_xmls(self, domain: str) -> list[str]:
        """Every checkpoint's XML (with <domain>), parents before children."""
        ...

    def observed_bitmaps(self, domain: str) -> dict[str, list[dict[str, object]]]:
        """Per disk target, the bitmaps really in the images.

        Each is ``{"name", "recording", "inconsistent", "in_use", "count"}``; ``in_use``
        is only true for an image that is not open but was not closed cleanly.
        """
        ...

    def backup_jobs(self, domain: str) -> list[HostJob]:
        """The backup jobs of ``domain`` the hypervisor still remembers, ended, oldest first
        (the mock keeps every one; libvirt none: ``watch`` follows its jobs instead)."""
        ...

    def active_backup(self, domain: str) -> HostJob | None:
        """The backup job running on ``domain`` now, if any (libvirt: its backup XML)."""
        ...

    def last_backup_result(self, domain: str) -> JobResult | None:
        """How the last backup job of ``domain`` ended, if the hypervisor still says
        (libvirt: the completed job's statistics)."""
        ...

    def subscribe(self, wake: Callable[[str, JobResult | None], None]) -> Callable[[], None]:
        """Call ``wake(domain, result)`` when something happens that a recorder should look
        at (a job ended: with its result; a domain defined, started, stopped: None), from
        another thread; returns the function that stops it. A hypervisor without events
        returns a function that does nothing."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class PartialDelete(Exception):
    """A delete the hypervisor did only in part (docs/libvirt-checkpoints.md §5.2 item 3).

    ``reparented`` maps each child that was moved to its new parent; ``error`` is the
    hypervisor's error for the step that failed.
    """

    def __init__(self, error: Exception, reparented: dict[str, str | None]) -> None:
        super().__init__(str(error))
        self.error = error
        self.reparented = reparented
