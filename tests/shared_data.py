"""Where the shared test data lives: ``shared/`` beside the checkout (CI lays a copy there)."""

from __future__ import annotations

from pathlib import Path

_CANDIDATES = [Path(__file__).resolve().parents[1].parent / "shared", Path("/work/shared")]
SHARED = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
LIBVIRT_TESTDATA = SHARED / "libvirt-testdata"
