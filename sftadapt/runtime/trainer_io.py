"""What the SFT trainer (train/stage.py) and the GRPO trainer (rl/grpo.py) share around an HF `Trainer`:
a progress bar instead of printed dicts, resuming from the right checkpoint, and saving a LoRA run as a
plain merged model. It lives here so that RL plumbing does not import the SFT stage.

Resuming (`resume_checkpoint`): `auto` continues from the newest `checkpoint-*` in the output folder, but only
if the options saved there at the start of that run equal today's (bookkeeping options such as `save_steps`
excepted); a checkpoint of other options is refused, since continuing it would mix two runs silently.

With `force` (the `force` option of train, map train and direct RL, as `--force` is for the sharded stages), a
checkpoint of other options is not refused but set aside: every `checkpoint-*` and the run's own log and saved
options move into `checkpoints.old-<time>/` in the same folder (nothing is deleted), and training starts over.
Under a launcher every rank starts over and the main process alone moves them.

Only a whole checkpoint is resumed (runtime/checkpoint_files.py: `trainer_state.json`, which the Trainer writes
last, parses, and the weights, optimizer and scheduler files are there and not cut short). `auto` takes the newest
whole one; the newer ones a kill left half-written move into `checkpoints.old-<time>/` (nothing is deleted), with
a warning that names each and why. Moved, not left in place, because the Trainer would otherwise meet them again:
a save of the same step would write into the stale folder, and its rotation (`save_total_limit`) would delete it,
or, where the checkpoints' times lie within a second and it sorts them by number instead, keep a stale
higher-numbered folder as "the newest" and delete the fresh whole ones.

Merging (`save_merged`): the adapter is merged into **fp32** base weights whatever the training precision
(merged into bf16 most of a small update is rounded away; docs/precision.md) and the folder gets an
adapter record, which makes `dtype: auto` load it in fp32 (runtime/models.inference_dtype).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from transformers.trainer_callback import PrinterCallback, ProgressCallback

from sftadapt.config import ConfigError
from sftadapt.runtime.checkpoint_files import incomplete_reason, numbered_checkpoints
from sftadapt.runtime.launch import main_process


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
    model_only = _saves_only_model(options)
    if resume not in ("auto", True):
        why = incomplete_reason(resume, optimizer=not model_only) if Path(resume).is_dir() else "no such folder"
        if why:
            raise FileNotFoundError(
                f"resume = {resume}: not a whole checkpoint folder, {why}; name another checkpoint-* folder, "
                "or resume=auto to take the newest whole one"
            )
        return str(resume)
    found = numbered_checkpoints(out)
    if found and saved is not None:
        changed = [k for k in options if k not in bookkeeping and saved.get(k) != options[k]]
        if changed and force:
            # every rank of a launch starts over; only the main process moves the folders (N ranks moving the
            # same ones would race). A rank that looks after the move finds no checkpoint: the same answer,
            # since set_aside moves the checkpoints before the saved options.
            if main_process():
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
    return _newest_whole(out, found, model_only)


def _newest_whole(out: Path, found: list[Path], model_only: bool) -> str | None:
    """The newest whole checkpoint of `found` (newest first); the newer incomplete ones are set aside, named in
    a warning. Only the main process (RANK 0, or no launcher) moves them and warns: every rank makes the same
    pick whether it looks before or after the move, and N ranks moving the same folders would race."""
    skipped: list[tuple[Path, str]] = []
    picked = None
    for path in found:
        why = incomplete_reason(path, optimizer=not model_only)
        if why is None:
            picked = path
            break
        skipped.append((path, why))
    if skipped and main_process():
        aside = set_aside(out, checkpoints=[p for p, _ in skipped], what="incomplete checkpoints")
        names = "; ".join(f"{p.name}: {why}" for p, why in skipped)
        then = f"resuming from {picked.name}" if picked else "no whole checkpoint is left, training starts over"
        warnings.warn(
            f"{out}: skipped incomplete checkpoints, {names}; moved to {aside.name}/ (nothing deleted); {then}",
            stacklevel=4,
        )
    return str(picked) if picked else None


def _saves_only_model(options: dict[str, Any]) -> bool:
    """Whether the run's pass-through Trainer arguments (`trainer_args`, `trl_args`) set `save_only_model`: its
    checkpoints then hold no optimizer or scheduler, and are whole without them."""
    return any(isinstance(v, dict) and bool(v.get("save_only_model")) for v in options.values())


def set_aside(
    out: Path, run_files: tuple[str, ...] = (), checkpoints: list[Path] | None = None, what: str = "checkpoints"
) -> Path:
    """Move every `checkpoint-*` of `out` (or only `checkpoints`) and the named run files into a new
    `out/checkpoints.old-<time>/`, recorded as `what`."""
    import shutil

    from sftadapt.runtime.owned import aside_path, record_set_aside, recorded_checkpoints

    aside = aside_path(out / "checkpoints")
    aside.mkdir()

    # only the checkpoints this folder's record lists are ours to move (open_checkpoints refused any other)
    ours = recorded_checkpoints(out)
    moved = []
    chosen = sorted(out.glob("checkpoint-*")) if checkpoints is None else checkpoints
    for path in [*chosen, *(out / name for name in run_files)]:
        if path.exists() and (ours is None or not path.name.startswith("checkpoint-") or path.name in ours):
            shutil.move(str(path), aside / path.name)
            moved.append(path.name)
    record_set_aside(aside, what, moved)
    return aside


def checkpointing_argument(args_class: type, on: bool) -> dict[str, bool]:
    """Activation checkpointing for an HF argument class: `activation_checkpointing` where the installed
    transformers has that field (newer releases), else its older name `gradient_checkpointing`."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(args_class)}
    return {"activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing": on}


def read_saved_options(path: Path, key: str) -> dict[str, Any] | None:
    """`key` of the JSON file a run wrote when it started (None if there is none)."""
    from sftadapt.data.records import read_own_json

    if not path.exists():
        return None
    data = read_own_json(
        path,
        "delete it to resume without comparing the options (the run writes it again), or move the "
        "checkpoint-* folders away to start over",
    )
    return data.get(key)


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
