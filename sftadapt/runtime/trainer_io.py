"""What the SFT trainer (train/stage.py) and the GRPO trainer (rl/grpo.py) share around an HF `Trainer`:
a progress bar instead of printed dicts, resuming from the right checkpoint, and saving a LoRA run as a
plain merged model. It lives here so that RL plumbing does not import the SFT stage.

Resuming (`resume_checkpoint`): `auto` continues from the newest `checkpoint-*` in the output folder, but only
if the options saved there at the start of that run equal today's (bookkeeping options such as `save_steps`
excepted); a checkpoint of other options is refused, since continuing it would mix two runs silently.

With `force` (the `force` option of train, map train and direct RL, as `--force` is for the sharded stages), a
checkpoint of other options is not refused but set aside: every `checkpoint-*` and the run's own log and saved
options move into `checkpoints.old-<time>/` in the same folder (nothing is deleted), and training starts over.

Merging (`save_merged`): the adapter is merged into **fp32** base weights whatever the training precision
(merged into bf16 most of a small update is rounded away; docs/precision.md) and the folder gets an
adapter record, which makes `dtype: auto` load it in fp32 (runtime/models.inference_dtype).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from transformers.trainer_callback import PrinterCallback, ProgressCallback

from sftadapt.config import ConfigError


class BarOnlyProgress(ProgressCallback):
    """The trainer's progress bar, with the latest loss numbers as its postfix instead of a printed dict per
    step (every number is in the JSONL log)."""

    KEYS = ("loss", "nll", "weight_mean", "ess_frac", "reward", "gate_pass_rate")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            shown = {k: f"{logs[k]:.4g}" for k in self.KEYS if isinstance(logs.get(k), (int, float))}
            if shown:
                self.training_bar.set_postfix(shown, refresh=False)


def bar_only_progress(trainer) -> None:
    """Swap the trainer's per-step dict printing for `BarOnlyProgress` (nothing at all when tqdm is off)."""
    trainer.remove_callback(PrinterCallback)
    if any(isinstance(cb, ProgressCallback) for cb in trainer.callback_handler.callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(BarOnlyProgress)


def resume_checkpoint(
    resume: Any,
    out: str | Path,
    options: dict[str, Any],
    saved: dict[str, Any] | None,
    bookkeeping: tuple[str, ...] = (),
    force: bool = False,
    run_files: tuple[str, ...] = (),
) -> str | None:
    """The checkpoint to continue from. `resume`: auto/True (newest in `out`, if its run's `saved` options
    equal `options` but for `bookkeeping`) | no/False (start over) | a checkpoint folder (continue it anyway).
    Checkpoints of other options are refused, or with `force` set aside with `run_files` (start over)."""
    out = Path(out)
    if resume in (False, "no"):
        if out.is_dir() and any(out.glob("checkpoint-*")):
            warnings.warn(
                f"{out} already holds checkpoints; resume=no starts over and overwrites them step by "
                "step (a later resume=auto could pick up an old, higher-numbered one)",
                stacklevel=3,
            )
        return None
    if resume not in ("auto", True):
        if not (Path(resume) / "trainer_state.json").exists():
            raise FileNotFoundError(f"resume = {resume}: not a checkpoint folder (no trainer_state.json)")
        return str(resume)
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if last and saved is not None:
        changed = [k for k in options if k not in bookkeeping and saved.get(k) != options[k]]
        if changed and force:
            aside = set_aside(out, run_files)
            warnings.warn(
                f"{out}: checkpoints of a run with other options ({', '.join(changed)} changed) were set "
                f"aside in {aside.name} (force); training starts over",
                stacklevel=3,
            )
            return None
        if changed:
            raise ConfigError(
                f"{out} holds checkpoints of a run with other options ({', '.join(changed)} changed): use "
                f"another out folder, resume=no to start over, resume=<checkpoint folder> to continue anyway, or "
                f"force=true to set them aside"
            )
    return last


def set_aside(out: Path, run_files: tuple[str, ...] = ()) -> Path:
    """Move every `checkpoint-*` of `out` and the named run files into a new `out/checkpoints.old-<time>/`."""
    import shutil
    import time

    stamp, n = time.strftime("%Y%m%d-%H%M%S"), 0
    aside = out / f"checkpoints.old-{stamp}"
    while aside.exists():
        n += 1
        aside = out / f"checkpoints.old-{stamp}-{n}"
    aside.mkdir()
    for path in [*sorted(out.glob("checkpoint-*")), *(out / name for name in run_files)]:
        if path.exists():
            shutil.move(str(path), aside / path.name)
    return aside


def read_saved_options(path: Path, key: str) -> dict[str, Any] | None:
    """`key` of the JSON file a run wrote when it started (None if there is none)."""
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get(key)


def save_merged(base_spec: str, adapter: Path, out: Path, tokenizer) -> None:
    """Base weights + adapter, merged in fp32, as a plain model folder with an adapter record (reloaded from
    disk, so it works under any sharding)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from sftadapt.runtime.models import resolve_model, torch_dtype, write_adapter_record

    base = AutoModelForCausalLM.from_pretrained(resolve_model(base_spec), dtype=torch_dtype("float32"))
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    write_adapter_record(out, base_spec)
