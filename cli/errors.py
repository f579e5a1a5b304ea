"""The exception classes of the click that typer runs on, for the entry point to turn into one
line each, and for commands to raise a usage error (exit status 2).

typer >= 0.20 runs on a click of its own (``typer._click``) that it does not export; click's
classes would not be caught there. pyproject.toml pins typer below 0.30 for this, and this
module is the one place that names typer's private module (with click's own classes beside
them, for errors raised through click directly).
"""

from __future__ import annotations

import importlib


def _exceptions(name: str) -> tuple[type[BaseException], ...]:
    """``name`` from typer's bundled click and from click itself."""
    found: list[type[BaseException]] = []
    for module in ("typer._click.exceptions", "typer.exceptions", "click.exceptions"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        cls = getattr(mod, name, None)
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    if not found:
        raise ImportError(f"neither typer nor click has {name}: is typer >= 0.20, < 0.30?")
    return tuple(found)


NO_ARGS = _exceptions("NoArgsIsHelpError")
USAGE = _exceptions("UsageError")
EXIT = _exceptions("Exit")
ABORT = _exceptions("Abort")
BAD_PARAMETER = _exceptions("BadParameter")


def usage_error(message: str) -> BaseException:
    """A malformed command line: ``error: MESSAGE [USAGE]`` and exit status 2."""
    return USAGE[0](message)


def bad_parameter(message: str) -> BaseException:
    """An option's value refused: a usage error naming the option."""
    return BAD_PARAMETER[0](message)
