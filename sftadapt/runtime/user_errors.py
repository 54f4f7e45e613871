"""The errors a user can fix, said the same way by every entry point: one line, no traceback.

The project's error types (config, model, record, source, store, data, report, output folder, length budget) are
ValueErrors or carry a message meant for the user; so does a missing or unreadable file. `sftadapt`'s commands
(stage_cli.guard) print that line in red; the plain `python -m` entry points (`sftadapt.train.stage`, one rank of
a launch, runtime/launch.py) print it as `error: ...` on stderr, which a launching parent finds and repeats.
Both exit with 2. SFTADAPT_DEBUG=1 shows the traceback instead."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any


def fixable() -> tuple[type[BaseException], ...]:
    """The exception types whose message is the whole story for the user."""
    from sftadapt.data.store import StoreError
    from sftadapt.runtime.models import ModelError

    return (
        ValueError,
        ModelError,
        StoreError,
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
    )


def one_line(fn: Callable[[], Any], say: Callable[[str], Any] | None = None) -> Any:
    """`fn()`, with a fixable error said in one line by `say` (default: `error: ...` on stderr, exit 2)."""
    try:
        return fn()
    except fixable() as err:
        if os.environ.get("SFTADAPT_DEBUG") == "1":
            raise
        (say or _plain)(str(err).strip() or type(err).__name__)
        raise SystemExit(2) from None  # `say` normally exits itself


def _plain(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)
