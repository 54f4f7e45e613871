"""Is a `checkpoint-<step>` folder whole? What `resume=auto` asks before it continues from one.

transformers' `Trainer._save_checkpoint` (5.x) writes, in this order: the model (`model.safetensors`, or its
shards and `model.safetensors.index.json`; `adapter_model.safetensors` for a LoRA/PEFT model; under FSDP with a
sharded state dict a `pytorch_model_fsdp_0/` folder; under DeepSpeed ZeRO a `global_step<N>/` folder named in
`latest`), then `optimizer.pt` (FSDP: `optimizer.bin` or an `optimizer_0/` folder) and `scheduler.pt` (both
skipped with `save_only_model`), the RNG state, and `trainer_state.json` **last**. A process killed while saving
therefore leaves a folder without `trainer_state.json`, or with a file cut short; the Trainer itself would
crash loading either. `incomplete_reason` says what is wrong with a folder, or None when it is whole.

A file cut short is told apart from a whole one without loading it: a safetensors file must be as long as its
header says (8 bytes + header + the end of its last tensor); a `torch.save` file is a zip, whose directory sits
at its end and is the first thing a truncation loses.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zipfile
from pathlib import Path

STATE = "trainer_state.json"
# the model files of a checkpoint, the first one present decides (an index names its shards)
WEIGHTS = (
    "adapter_model.safetensors",
    "adapter_model.bin",
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)
NUMBERED = re.compile(r"^checkpoint-(\d+)$")  # transformers' own pattern (trainer_utils.get_last_checkpoint)


def numbered_checkpoints(out: str | os.PathLike) -> list[Path]:
    """The `checkpoint-<step>` folders of `out`, newest (highest step) first, as the Trainer numbers them."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if (m := NUMBERED.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, key=lambda item: item[0], reverse=True)]


def incomplete_reason(folder: str | os.PathLike, optimizer: bool = True) -> str | None:
    """Why the checkpoint `folder` cannot be resumed from (a short phrase), or None if it is whole.
    `optimizer=False`: a run with `save_only_model`, whose checkpoints have no optimizer or scheduler."""
    folder = Path(folder)
    state = folder / STATE
    if not state.is_file():
        return f"no {STATE}, which the Trainer writes last: its save was cut off"
    try:
        data = json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return f"{STATE} does not parse: {type(err).__name__}"
    if not isinstance(data, dict) or not isinstance(data.get("global_step"), int):
        return f"{STATE} has no global_step"
    if (folder / "latest").is_file() or any(p.is_dir() for p in folder.glob("global_step*")):
        return _deepspeed_problem(folder, optimizer)
    return _weights_problem(folder) or (_optimizer_problem(folder) if optimizer else None)


def _weights_problem(folder: Path) -> str | None:
    for name in WEIGHTS:
        path = folder / name
        if path.exists():
            return _index_problem(path) if name.endswith(".index.json") else file_problem(path)
    sharded = sorted(p for p in folder.glob("pytorch_model_fsdp_*") if p.is_dir())
    if sharded:
        return _folder_problem(sharded[0])
    return "no model weights (model.safetensors or adapter_model.safetensors)"


def _index_problem(index: Path) -> str | None:
    try:
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"{index.name} does not parse: {type(err).__name__}"
    return next((p for p in (file_problem(index.parent / s) for s in sorted(shards)) if p), None)


def _optimizer_problem(folder: Path) -> str | None:
    files = [folder / n for n in ("optimizer.pt", "optimizer.bin") if (folder / n).exists()]
    if files:
        problem = file_problem(files[0])
    else:  # FSDP's sharded optimizer: a folder with "optimizer" in its name (what the Trainer looks for)
        dirs = sorted(p for p in folder.iterdir() if p.is_dir() and "optimizer" in p.name)
        problem = _folder_problem(dirs[0]) if dirs else "no optimizer.pt"
    return problem or file_problem(folder / "scheduler.pt")


def _deepspeed_problem(folder: Path, optimizer: bool) -> str | None:
    """DeepSpeed keeps model and optimizer in its own `global_step<N>/` folder, the one `latest` names."""
    latest = folder / "latest"
    if latest.is_file():
        engine = folder / latest.read_text(encoding="utf-8", errors="replace").strip()
    else:
        engine = max((p for p in folder.glob("global_step*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not engine.is_dir():
        return f"no {engine.name}/, the DeepSpeed folder that 'latest' names"
    for kind in ("model_states", "optim_states") if optimizer else ("model_states",):
        files = sorted(engine.glob(f"*{kind}.pt"))
        if not files:
            return f"no *{kind}.pt in {engine.name}/"
        problem = next((p for p in map(file_problem, files) if p), None)
        if problem:
            return f"{engine.name}/{problem}"
    return None


def _folder_problem(folder: Path) -> str | None:
    files = [p for p in folder.rglob("*") if p.is_file()]
    if not files:
        return f"{folder.name}/ is empty"
    empty = next((p for p in files if p.stat().st_size == 0), None)
    return f"{empty.relative_to(folder.parent)} is empty" if empty else None


def file_problem(path: Path) -> str | None:
    """Why a weights/optimizer file is not whole (missing, empty, cut short), or None."""
    if not path.is_file():
        return f"no {path.name}"
    size = path.stat().st_size
    if size == 0:
        return f"{path.name} is empty"
    if path.suffix == ".safetensors":
        expected = _safetensors_size(path, size)
        if expected != size:
            return f"{path.name} is cut short: {size} bytes, its header describes {expected or 'more'}"
        return None
    with open(path, "rb") as fh:
        zipped = fh.read(4) == b"PK\x03\x04"  # torch.save's format; an old pickle file has no directory to check
    if zipped and not zipfile.is_zipfile(path):
        return f"{path.name} is cut short: no zip directory, which torch.save writes last"
    return None


def _safetensors_size(path: Path, size: int) -> int | None:
    """The length a safetensors file must have according to its header (None: the header itself is cut)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return None
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8:
            return None
        try:
            header = json.loads(fh.read(header_len))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return None
    return 8 + header_len + end
