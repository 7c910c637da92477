"""Reading and editing the training command line, for ``--restart`` (relaunch with a new ``--kl-weight``
and ``--resume``) and for the options the watchdog reads from it (``--kl-weight``, ``--checkpoint-dir``).

Pure functions on argv lists: ``flag VALUE`` and ``flag=VALUE`` are the same option; nothing else about
the training script's parser is assumed.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["set_option", "option_value"]


def set_option(cmd: Sequence[str], flag: str, value: str | None) -> list[str]:
    """``cmd`` with every ``flag VALUE`` / ``flag=VALUE`` set to ``value``, or the option appended.

    ``value=None`` means a bare flag (``--ae``), added when absent.

    >>> set_option(["python", "t.py", "--kl-weight", "0.01", "--epochs", "5"], "--kl-weight", "0.001")
    ['python', 't.py', '--kl-weight', '0.001', '--epochs', '5']
    >>> set_option(["python", "t.py", "--resume=a.pt"], "--resume", "b.pt")
    ['python', 't.py', '--resume=b.pt']
    >>> set_option(["python", "t.py"], "--resume", "b.pt")
    ['python', 't.py', '--resume', 'b.pt']
    """
    out: list[str] = []
    found = False
    i = 0
    while i < len(cmd):
        a = cmd[i]
        if a == flag:
            found = True
            if value is None:
                out.append(a)
                i += 1
            else:
                out += [flag, value]
                i += 2
            continue
        if value is not None and a.startswith(flag + "="):
            found = True
            out.append(f"{flag}={value}")
            i += 1
            continue
        out.append(a)
        i += 1
    if not found:
        out += [flag] if value is None else [flag, value]
    return out


def option_value(cmd: Sequence[str], flag: str) -> str | None:
    """The value of the last ``flag VALUE`` / ``flag=VALUE`` in ``cmd`` (None when absent).

    >>> option_value(["python", "-m", "train", "--checkpoint-dir", "/big/ckpt"], "--checkpoint-dir")
    '/big/ckpt'
    >>> option_value(["t.py", "--checkpoint-dir=a", "--checkpoint-dir=b"], "--checkpoint-dir")
    'b'
    """
    value = None
    for i, a in enumerate(cmd):
        if a == flag and i + 1 < len(cmd):
            value = cmd[i + 1]
        elif a.startswith(flag + "="):
            value = a[len(flag) + 1:]
    return value
