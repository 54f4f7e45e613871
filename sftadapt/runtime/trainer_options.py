"""The options every trainer of sftadapt shares, declared once: the SFT stage's `TrainConfig`
(train/stage.py) and GRPO's `GRPOOptions` (rl/grpo.py) both inherit `TrainerOptions`.

A subclass redeclares a shared field only to change its default (`shared("save_steps", 50)` keeps the help
text written here), so a config file or `--set` key means the same in `train:` and in `grpo:`. Being the
base, these fields come first in `dataclasses.fields` order (and so in `--help` and `config show`).

The pass-through rule, the same for `trainer_args` (transformers `TrainingArguments`) and `trl_args` (TRL
`GRPOConfig`): a pass-through dict may set only library fields sftadapt has no option for. A field one of our
options sets (`OWNED`: library field -> our option) is refused in one line naming the option to use instead,
because a pass-through value would either clash with ours or silently override it; a field we fix without an
option because training depends on it (`FIXED`) is refused with the reason. Every other field we set without
an option (`use_cpu`, `dataloader_num_workers`, `disable_tqdm`) is a default the pass-through may change.

    class MyOptions(TrainerOptions):
        PASSTHROUGH = "trl_args"
        OWNED = {**SHARED_OWNED, "num_generations": "num_generations"}
        save_steps: int = shared("save_steps", 50)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sftadapt.config import check_passthrough, option

# Library fields (TrainingArguments and GRPOConfig alike) that the shared options, or the stage around the
# trainer, set: a pass-through dict naming one is told which of our options to set instead.
SHARED_OWNED: dict[str, str] = {
    "output_dir": "out",
    "learning_rate": "lr",
    "max_steps": "max_steps",
    "lr_scheduler_type": "scheduler",
    "warmup_steps": "warmup_ratio",
    "warmup_ratio": "warmup_ratio",
    "max_grad_norm": "max_grad_norm",
    "seed": "seed",
    "data_seed": "seed",
    "logging_steps": "logging_steps",
    "logging_strategy": "logging_steps",
    "save_steps": "save_steps",
    "save_strategy": "save_steps",
    "save_total_limit": "save_total_limit",
    "resume_from_checkpoint": "resume",
    "activation_checkpointing": "gradient_checkpointing",
    "gradient_checkpointing": "gradient_checkpointing",
    "bf16": "dtype",
    "report_to": "report_to",
    "run_name": "report_to",
    "project": "report_to",
    "trackio_static_space_id": "online",
}

# Fields we set without an option because training breaks otherwise: refused with the reason.
FIXED: dict[str, str] = {
    "remove_unused_columns": "sftadapt keeps it False: the collator's and the reward's extra columns "
    "(behaviour log-probs, answers) are not model arguments and would be dropped",
}

# Fields we set without an option as a default only: a pass-through value replaces ours.
OVERRIDABLE = ("use_cpu", "dataloader_num_workers", "disable_tqdm")


@dataclass
class TrainerOptions:
    """The optimiser, LoRA, precision and checkpoint options of an HF-Trainer-based trainer."""

    PASSTHROUGH: ClassVar[str] = ""  # the name of the subclass's pass-through dict field
    OWNED: ClassVar[dict[str, str]] = SHARED_OWNED

    lr: float = option(5e-5, help="peak learning rate (Mind the Gap: 5e-5 full fine-tuning; LoRA often 1e-4)")
    max_steps: int = option(-1, help="optimiser steps; -1 = from epochs")
    warmup_ratio: float = option(0.1, help="fraction of the steps with linear warmup")
    scheduler: str = option(
        "cosine",
        help="learning-rate schedule (transformers name; train: cosine | linear | constant | constant_with_warmup)",
    )
    max_grad_norm: float = option(1.0, help="gradient clipping norm (0 = off)")
    seed: int = option(0, help="seed of the data order, rollout sampling, LoRA init and dropout")
    lora: bool = option(False, help="train a LoRA adapter (peft) instead of all weights; merged at the end")
    lora_r: int = option(16, help="LoRA rank")
    lora_alpha: int = option(32, help="LoRA alpha")
    lora_dropout: float = option(0.05, help="LoRA dropout")
    lora_target_modules: str = option("all-linear", help="peft target_modules: all-linear or comma-separated names")
    dtype: str = option(
        "auto",
        help="compute dtype of forward/backward: auto (bf16 autocast only where the hardware runs bf16 "
        "natively; float32 for a loss that needs it, such as is) | float32 | bfloat16 (autocast over fp32 weights)",
    )
    weights_dtype: str = option(
        "float32",
        help="stored weights: float32 (the master copy; keep it) | bfloat16 (pure "
        "bf16 training: most small updates are rounded away; a warning says so)",
    )
    gradient_checkpointing: bool = option(False, help="recompute activations: less memory, ~35% slower")
    logging_steps: int = option(1, help="log every this many optimiser steps")
    save_steps: int = option(200, help="checkpoint every this many optimiser steps")
    save_total_limit: int = option(2, help="checkpoints kept (oldest deleted)")
    # bool | str: YAML reads `resume: no` / `true` as booleans, and both spellings mean the same
    resume: bool | str = option(
        "auto",
        help="auto/true: from the last checkpoint in out, if any; no/false: start over; or a checkpoint folder",
    )

    def validate(self) -> None:
        """Checks of the shared options (subclasses call it after their own)."""
        for name in ("logging_steps", "save_steps", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)}: must be at least 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio = {self.warmup_ratio}: must be in [0, 1)")
        self.precision()

    def precision(self) -> tuple[str, str]:
        """(compute dtype, weights dtype) as this machine will train: see sftadapt.runtime.precision."""
        from sftadapt.runtime.precision import WEIGHT_DTYPES, normalize, training_dtypes

        return training_dtypes(normalize(self.dtype), normalize(self.weights_dtype, WEIGHT_DTYPES, "weights_dtype"))

    def check_passthrough(self, args_class: type) -> None:
        """The pass-through rule (module docstring) for this config's pass-through dict against `args_class`."""
        check_passthrough(getattr(self, self.PASSTHROUGH), args_class, self.PASSTHROUGH, self.OWNED, FIXED)


LAUNCHER_KINDS = ("inline", "accelerate")
# `accelerate launch` arguments that our launcher options set: in `args` they would clash with them
LAUNCHER_OWNED = {"--num_processes": "num_processes", "--config_file": "config_file"}


@dataclass
class LauncherConfig:
    """How `sftadapt run` starts a training stage: in its own process (inline) or on several processes through
    `accelerate launch` (runtime/launch.py). It decides neither the weights nor the data order, so it stays
    out of the stage's cache hash and out of the checks that let a checkpoint resume."""

    kind: str = option(
        "inline", help="inline (in the run's process) | accelerate (`accelerate launch`: DDP, FSDP, ...)"
    )
    num_processes: int = option(2, help="accelerate: processes (ranks) to start, e.g. one per GPU")
    config_file: str | None = option(
        None, help="accelerate: an accelerate config file (configs/accelerate/*.yaml); none = plain DDP"
    )
    args: list[str] = option(
        [], help="accelerate: more `accelerate launch` arguments, e.g. [--main_process_port, '29600']"
    )

    def validate(self) -> None:
        if self.kind not in LAUNCHER_KINDS:
            raise ValueError(f"launcher.kind = '{self.kind}': choose one of {', '.join(LAUNCHER_KINDS)}")
        if self.num_processes < 1:
            raise ValueError(f"launcher.num_processes = {self.num_processes}: must be at least 1")
        if self.config_file is not None and not Path(self.config_file).is_file():
            raise ValueError(f"launcher.config_file = '{self.config_file}': no such file")
        if not all(isinstance(a, str) for a in self.args):
            raise ValueError("launcher.args: a list of strings (one per command-line word)")
        for arg in self.args:
            owned = LAUNCHER_OWNED.get(arg.split("=")[0])
            if owned:
                raise ValueError(f"launcher.args: {arg.split('=')[0]} is set by launcher.{owned}; set that instead")


def launcher_option() -> Any:
    """The `launcher` block of a training stage's config (train, map train, rl)."""
    return dataclasses.field(
        default_factory=LauncherConfig,
        metadata={"help": "how `sftadapt run` starts this stage: inline or through accelerate launch"},
    )


def shared(name: str, default: Any, help: str | None = None) -> Any:
    """A subclass's redeclaration of the shared option `name` with another default (and, where the meaning
    narrows, another help text); without `help` the text declared in `TrainerOptions` is kept."""
    base = TrainerOptions.__dataclass_fields__[name]
    return option(default, help=base.metadata.get("help", "") if help is None else help)


def shared_names() -> tuple[str, ...]:
    """The names of the shared options, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(TrainerOptions))
