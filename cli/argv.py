"""Global options after the command: ``ckpt-ledger list web01 --store URL`` as virsh users
type it, rewritten to ``ckpt-ledger --store URL list web01`` before click parses it.

An option of the root command (``--store``, ``-c``/``--connect``, ``--actor``, ``-v`` ...)
that appears after the command is moved in front of it with its value, unless the command has
an option of that name itself (``log --actor`` filters by actor) or it follows ``--``.
"""

from __future__ import annotations

from typing import Any

QUICK_NAMES = ("--", "-c", "-v", "-q")  # a cheap first look: does anything need moving?


def _options(cmd: Any) -> dict[str, bool]:
    """Every option string of ``cmd`` (a click command: typer bundles its own click, so
    its classes are looked at, not checked) -> whether it takes a value."""
    out = {}
    for p in cmd.params:
        if getattr(p, "param_type_name", "") == "option":
            takes = not p.is_flag and not p.count
            for name in (*p.opts, *p.secondary_opts):
                out[name] = takes
    return out


def _name(token: str) -> str:
    return token.split("=", 1)[0] if token.startswith("--") else token


def _is_global(token: str, roots: dict[str, bool]) -> bool:
    return _name(token) in roots or (len(token) > 2 and token[0] == "-" and token[1] != "-"
                                     and set(token[1:]) == {"v"})  # -vv


def hoist_global_options(argv: list[str], root: Any) -> list[str]:
    """``argv`` with the root command's options that follow the (sub)command moved before
    it; ``argv`` itself when there are none."""
    if not any(t.startswith(QUICK_NAMES) for t in argv):
        return argv
    roots = _options(root)
    i, head = 0, []
    while i < len(argv) and argv[i].startswith("-") and _is_global(argv[i], roots):
        head.append(argv[i])
        i += 1
        if roots.get(_name(argv[i - 1])) and "=" not in argv[i - 1] and i < len(argv):
            head.append(argv[i])
            i += 1
    cmd, path = root, []
    while i < len(argv) and argv[i] in getattr(cmd, "commands", {}):
        cmd = cmd.commands[argv[i]]
        path.append(argv[i])
        i += 1
    if not path:
        return argv
    own = _options(cmd)
    moved: list[str] = []
    rest: list[str] = []
    while i < len(argv):
        token, name = argv[i], _name(argv[i])
        i += 1
        if token == "--":
            rest.extend(argv[i - 1:])
            break
        if name in own:  # the command's own option (and its value, whatever it looks like)
            rest.append(token)
            if own[name] and "=" not in token and i < len(argv):
                rest.append(argv[i])
                i += 1
        elif token.startswith("-") and _is_global(token, roots):
            if roots.get(name) and "=" not in token:
                if i == len(argv):  # no value follows: left for click to refuse
                    return argv
                moved.extend((token, argv[i]))
                i += 1
            else:
                moved.append(token)
        else:
            rest.append(token)
    return [*head, *moved, *path, *rest] if moved else argv
