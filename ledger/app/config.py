"""Settings from config files, and where each setting came from.

Precedence, first found wins: the command-line option, the environment variable, the user's
config file, the system's config file, the built-in default (see
:func:`ledger.app.defaults.default_store`). The files are TOML with these keys, each optional::

    store = "sqlite:////var/lib/ckpt-ledger/ledger.db"
    hypervisor = "qemu:///system"
    actor = "backup-robot"
    lock_timeout = 120

The system file is ``/etc/ckpt-ledger.toml`` (``$CKPT_LEDGER_SYSTEM_CONFIG`` names another);
the user's is ``$XDG_CONFIG_HOME/ckpt-ledger/config.toml`` (else ``~/.config/...``). A file
that is missing is skipped; one that cannot be read or parsed, or holds an unknown key or a
value of the wrong type, is an error naming it.

Kept by hand rather than ``pydantic-settings``: four keys, two files and a precedence that
also reports where each value came from (``ckpt-ledger info``) take ``tomllib`` and a few
lines; the library would add a dependency and still need the origins tracked by hand.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ledger.domain.errors import LedgerError

SYSTEM_CONFIG = "/etc/ckpt-ledger.toml"
SYSTEM_CONFIG_ENV = "CKPT_LEDGER_SYSTEM_CONFIG"
KEYS = ("store", "hypervisor", "actor", "lock_timeout")
MAX_CONFIG_BYTES = 64 * 1024


@dataclass(frozen=True)
class Setting:
    """A setting's value (None: not set) and where it came from (an option, ``$VAR``, a
    file's path, or ``default ...``)."""

    value: str | None
    origin: str


def config_paths() -> list[Path]:
    """The config files, system first (the user's overrides it)."""
    system = Path(os.environ.get(SYSTEM_CONFIG_ENV) or SYSTEM_CONFIG)
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    if os.path.isabs(xdg):
        user = Path(xdg) / "ckpt-ledger" / "config.toml"
    else:
        try:
            user = Path.home() / ".config" / "ckpt-ledger" / "config.toml"
        except RuntimeError:  # no $HOME and no passwd entry
            return [system]
    return [system, user]


def read_config(path: Path) -> dict[str, str] | None:
    """The settings ``path`` holds (None when it does not exist), values as text."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise LedgerError("INVALID_ARG", f"cannot read config file {path}: "
                          f"{e.strerror or e}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise LedgerError("INVALID_ARG", f"config file {path} is larger than "
                          f"{MAX_CONFIG_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise LedgerError("INVALID_ARG", f"config file {path} is not valid TOML: "
                          f"{' '.join(str(e).split())}") from None
    out: dict[str, str] = {}
    for key, value in data.items():
        if key not in KEYS:
            raise LedgerError("INVALID_ARG", f"config file {path}: unknown key {key[:60]!r} "
                              f"(known: {', '.join(KEYS)})")
        if key == "lock_timeout" and isinstance(value, int | float) \
                and not isinstance(value, bool):
            value = "inf" if math.isinf(value) else repr(value)
        if not isinstance(value, str) or not value or not value.isprintable():
            raise LedgerError("INVALID_ARG", f"config file {path}: {key} must be a non-empty "
                              "line of text" + (" or a number" if key == "lock_timeout" else ""))
        out[key] = value
    return out


def file_settings() -> dict[str, Setting]:
    """Each key set by a config file: its value and the file (the user's wins)."""
    out: dict[str, Setting] = {}
    for path in config_paths():
        found = read_config(path)
        for key, value in (found or {}).items():
            out[key] = Setting(value, str(path))
    return out


def setting(key: str, env: str | None = None) -> Setting:
    """``key`` from ``$env`` (when given), else the config files; value None when unset."""
    if env and os.environ.get(env):
        return Setting(os.environ[env], f"${env}")
    return file_settings().get(key, Setting(None, "not set"))
