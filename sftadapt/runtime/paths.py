"""A path the user typed (--out, --data, --model, --benchmarks), checked before any stage touches it.

`pathlib` raises OSError from `exists()` for a name longer than the file system allows (ENAMETOOLONG), which
surfaced as a traceback from deep inside a stage, and it answers False for a symlink loop (ELOOP), which read
as "no such file". `path_problem` says either in words, so each layer that validates a path (the output-folder
claim, the data readers, model resolution) can refuse it in one line naming the path.

    why = path_problem(out)
    if why:
        raise OutDirError(f"{shown(out)}: {why}")
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

NAME_MAX = 255  # bytes per path component on ext4, xfs, btrfs, tmpfs, APFS and NTFS (UTF-16 units there)
PATH_MAX = 4096  # bytes of a whole path Linux accepts in one system call
_SHOWN = 40  # characters of an over-long component kept when the path is shown in a message


def _encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape") if _encodable(text) else text.encode("utf-8", "replace")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


def _name_max(path: Path) -> int:
    """The file system's limit on one name where `path` would live (its nearest existing folder), else NAME_MAX."""
    try:
        path = path if path.is_absolute() else Path.cwd() / path
    except OSError:  # the working folder was removed
        return NAME_MAX
    for folder in path.parents:
        if os.path.isdir(folder):  # os.path.isdir swallows every OSError, unlike Path.is_dir
            try:
                return int(os.pathconf(folder, "PC_NAME_MAX"))
            except (OSError, ValueError):
                return NAME_MAX
    return NAME_MAX


def shown(path: str | os.PathLike) -> str:
    """`path` as a message shows it: each over-long component cut to its first characters and its length, so the
    one-line error stays readable while still saying which name is at fault."""
    parts = []
    for part in str(path).split(os.sep):
        size = len(_encoded(part))
        parts.append(part if size <= NAME_MAX else f"{part[:_SHOWN]}...({size} bytes)")
    return os.sep.join(parts)


def path_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot name a file or folder on this machine, or None: a component longer than the file
    system's name limit, a whole path past PATH_MAX, or a symlink loop. A path that simply does not exist is
    no problem here (the caller decides what a missing path means)."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if "\0" in text:
        return "the path holds a NUL character, which no file name can"
    limit = _name_max(Path(text))
    for part in Path(text).parts:
        size = len(_encoded(part))
        if size > limit:
            return (
                f"a name in this path is {size} bytes long, over the file system's limit of {limit} bytes "
                "per name; use a shorter name"
            )
    if len(_encoded(text)) > PATH_MAX:
        return f"the path is {len(_encoded(text))} bytes long, over the limit of {PATH_MAX}; use a shorter path"
    try:
        os.stat(text)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return (
                "a symlink loop (the link leads, directly or through other links, back to itself); "
                "point it at the real file or folder"
            )
        if err.errno == errno.ENAMETOOLONG:
            return "the path is too long for the file system; use a shorter path"
    except ValueError:  # an unencodable name
        return "the path cannot be encoded as a file name on this system"
    return None
