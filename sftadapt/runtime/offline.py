"""The network policy of every entry point: offline unless the user said `--online`.

`apply(online)` is called first thing by the `sftadapt` command's callback and by `python -m sftadapt.train`
(the `accelerate launch` path). Offline, it *sets* HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1 and
TRANSFORMERS_OFFLINE=1, whatever the environment held before (an inherited `HF_HUB_OFFLINE=0` must not open
the network), and, if huggingface_hub or datasets were already imported (they read the variables once, at
import), sets their module-level flags too. Online, it sets them to 0, so `--online` means what it says.

    from sftadapt.runtime import offline
    offline.apply(online=False)
"""

from __future__ import annotations

import os
import sys

VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def apply(online: bool) -> None:
    """Make the hub libraries offline (online=False) or allow them the network (online=True)."""
    value = "0" if online else "1"
    for name in VARIABLES:
        os.environ[name] = value
    offline = not online
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = offline
    ds_config = sys.modules.get("datasets.config")
    if ds_config is not None:
        ds_config.HF_HUB_OFFLINE = offline
        ds_config.HF_DATASETS_OFFLINE = offline


def is_offline() -> bool:
    """What `apply` last decided (True when nothing has been applied and the variables say offline)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def honour(online: bool) -> None:
    """A config's `online: true` (the YAML twin of `--online`): opens the network exactly as `--online` does.
    `online: false` leaves the entry point's decision alone (`--online` on the command line still counts)."""
    if online:
        apply(True)
