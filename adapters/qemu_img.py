"""What a qcow2 image file says about its persistent dirty bitmaps, via ``qemu-img``.

Used for a shut-off domain, whose bitmaps live only in the images. ``qemu-img info``
reports each bitmap's ``name``, ``granularity`` and ``flags``: ``auto`` means the bitmap is
enabled (recording) and ``in-use`` means the image was not closed cleanly since QEMU opened
it, so the bitmap cannot be trusted (QEMU loads it as ``inconsistent``). Run against the
image of a *running* guest (``--force-share``), every bitmap shows ``in-use``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from ledger.domain.errors import LedgerError

QEMU_IMG = "qemu-img"
TIMEOUT_S = 60


def _qemu_img() -> str:
    path = shutil.which(QEMU_IMG)
    if path is None:
        raise LedgerError(
            "HYPERVISOR_ERROR",
            "qemu-img is not installed (apt-get install qemu-utils); "
            "it is needed to read the bitmaps of a shut-off domain's images",
        )
    return path


def run_qemu_img(*args: str) -> str:
    """Run ``qemu-img ARGS...`` and return its stdout.

    Raises ``LedgerError("HYPERVISOR_ERROR")`` with qemu-img's message folded onto one
    line when it is missing or fails.
    """
    cmd = [_qemu_img(), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise LedgerError(
            "HYPERVISOR_ERROR", f"qemu-img {' '.join(args)} timed out after {TIMEOUT_S} s"
        ) from None
    if proc.returncode != 0:
        msg = " ".join((proc.stderr or proc.stdout).split()) or f"exit status {proc.returncode}"
        raise LedgerError("HYPERVISOR_ERROR", f"qemu-img {args[0]} failed: {msg}")
    return proc.stdout


def image_info(path: str) -> dict[str, Any]:
    """``qemu-img info --output=json --force-share PATH`` as a dict (top image only)."""
    out = run_qemu_img("info", "--output=json", "--force-share", path)
    try:
        info = json.loads(out)
    except ValueError as e:
        raise LedgerError("HYPERVISOR_ERROR", f"qemu-img info {path}: bad JSON: {e}") from None
    if not isinstance(info, dict):
        raise LedgerError("HYPERVISOR_ERROR", f"qemu-img info {path}: unexpected output")
    return info


def image_bitmaps(path: str) -> list[dict[str, Any]]:
    """The persistent bitmaps stored in the qcow2 image at ``path``, sorted by name.

    Each is ``{"name", "recording", "inconsistent", "in_use", "count", "persistent",
    "granularity", "flags"}``, in the shape of QMP ``query-block``'s ``dirty-bitmaps``:
    ``recording`` is the ``auto`` flag; ``in_use`` is the ``in-use`` flag (not closed
    cleanly) and so is ``inconsistent`` (QEMU loads such a bitmap as inconsistent);
    ``persistent`` is always true; ``count`` (dirty bytes) is ``None`` because qemu-img does
    not report it. Read while QEMU has the image open, every bitmap shows ``in-use``. A
    non-qcow2 image has no bitmaps: ``[]``.
    """
    info = image_info(path)
    specific = info.get("format-specific") or {}
    if specific.get("type") != "qcow2":
        return []
    result: list[dict[str, Any]] = []
    for bm in (specific.get("data") or {}).get("bitmaps") or []:
        flags = [str(f) for f in bm.get("flags") or []]
        result.append(
            {
                "name": str(bm.get("name")),
                "recording": "auto" in flags,
                "persistent": True,
                "inconsistent": "in-use" in flags,
                "in_use": "in-use" in flags,
                "count": None,
                "granularity": bm.get("granularity"),
                "flags": flags,
            }
        )
    result.sort(key=lambda b: b["name"])
    return result


def remove_bitmap(path: str, name: str) -> None:
    """``qemu-img bitmap --remove PATH NAME`` (the image must not be in use)."""
    run_qemu_img("bitmap", "--remove", path, name)
