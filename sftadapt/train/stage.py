"""Train stage: supervised fine-tuning of the target on (adapted) examples with the `nll`, `dft` or `is` loss.

    sftadapt train --model smollm2-135m --data runs/rewrite/train.jsonl --loss is --out runs/train-dr-is
    accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml -m sftadapt.train.stage \
        --model Qwen/Qwen2.5-Math-7B --data runs/rewrite/train.jsonl --loss dft --set lora=true

Built on the transformers `Trainer` (so `accelerate launch` with the DDP / DeepSpeed ZeRO / FSDP configs in
`configs/accelerate/` works unchanged); only the loss is ours (sftadapt/train/losses.py, docs/methods.md):
- rows: the plain solve prompt (chat template on by default) -> response; prompt tokens are masked;
  behaviour log-probs ride along per row to the `is` loss (sftadapt/train/data.py);
- normaliser: the response-token count of the whole optimiser step. `get_batch_samples` counts our response
  tokens (labels != -100) over all the step's micro-batches and gathers the count across ranks; each
  micro-batch's loss is Σ/N_step (times the number of ranks, which average their gradients), and the Trainer is
  told the loss is already scaled for accumulation. Accumulating 4 micro-batches = one batch of 4.
- no work on positions that train nothing (sftadapt/train/logits.py): the LM head runs only where a response
  token is predicted, and on a CPU the rows go through in length groups, each trimmed to its longest row, so
  no layer runs on padding. The same log-probs and gradients, faster steps (benchmarks/logits.md).
- `is_self_normalize` with several micro-batches or ranks needs the step's Σw before the first backward: one
  extra no-grad forward over the step's micro-batches (about a third more compute; off by default).
- logs per step (Trainer logs, `report_to`, and `<out>/train_log.jsonl`): loss, plain `nll` beside it, and
  for `is` the mean/max weight, clipped fraction and ESS.
- checkpoints every `save_steps` in `<out>/checkpoint-*`; `resume=auto` continues from the last one (same
  data order, optimiser, scheduler and RNG state, so the loss curve continues as if never stopped), and refuses
  checkpoints written with other training options (`<out>/train_config.json`).
- final save in `<out>`: an HF model folder that `sftadapt sample` / `make_engine` load as a plain model (LoRA
  merged into the weights; the adapter itself in `<out>/adapter`), its tokenizer, and a README.md model card
  with the data provenance (files, sha256, rows, origins), the loss and its options, the base model, the config.

Defaults follow the Mind the Gap recipe where it is cheap (lr 5e-5, cosine, 10% warmup, 1 epoch) and a CPU
where it is not: global batch 16 (= batch_size 4 × grad_accum 4; the paper uses 256), max_length 1024 (2048).
On a machine without CUDA it trains on the CPU in fp32 with no gradient checkpointing.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import Trainer, TrainerCallback, TrainingArguments

from sftadapt.config import config_dict, config_hash, load_config, option
from sftadapt.data.formats import FieldOptions, fields_option
from sftadapt.data.records import FALLBACKS, Example
from sftadapt.data.sources import max_row_bytes_option
from sftadapt.registry import Stage
from sftadapt.runtime import tracking
from sftadapt.runtime.precision import WEIGHT_DTYPES, autocast_bf16, normalize, training_dtypes, warn_once
from sftadapt.runtime.trainer_io import (
    bar_only_progress,
    checkpointing_argument,
    read_saved_options,
    resume_checkpoint,
    save_merged,
)
from sftadapt.runtime.trainer_options import SHARED_OWNED, LauncherConfig, TrainerOptions, launcher_option
from sftadapt.train.data import (
    IGNORE_INDEX,
    Collator,
    RowDataset,
    TokenizedRows,
    read_training_rows,
    tokenize_examples,
)
from sftadapt.train.logits import selective_logits, split_rows, target_logprobs
from sftadapt.train.losses import (
    IS_LEVELS,
    LOSSES,
    LossStats,
    get_loss,
    loss_names,
    loss_summary,
    sft_loss,
    token_weights,
)

SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
LOG_FILE = "train_log.jsonl"


@dataclass
class TrainConfig(TrainerOptions):
    """Options of `sftadapt train`: the data, the loss and its options, the batch; the optimiser, LoRA,
    precision and checkpoint options are the shared `TrainerOptions` (runtime/trainer_options.py)."""

    PASSTHROUGH = "trainer_args"
    OWNED = {
        **SHARED_OWNED,
        "per_device_train_batch_size": "batch_size",
        "gradient_accumulation_steps": "grad_accum",
        "num_train_epochs": "epochs",
        "weight_decay": "weight_decay",
    }

    model: str = option("smollm2-135m", help="base model: HF id, local folder, smollm2-135m or tiny-random")
    data: list[str] = option([], help="training files: Example JSONL/Parquet (rewrite/map output) or raw expert sets")
    fields: FieldOptions = fields_option()
    max_row_bytes: int | None = max_row_bytes_option()
    out: str = option("runs/train", help="output folder: checkpoints, train_log.jsonl, the final model + README.md")
    loss: str = option(
        "nll",
        help="nll (SFT) | dft (probability-weighted) | is (importance-weighted vs behaviour) | a loss "
        "registered with train/losses.py's register_loss",
    )
    dft_floor: float = option(0.0, help="dft: weight max(p, dft_floor); 0 = off")
    is_clip: float = option(5.0, help="is: clip the ratio at this value (0 = no clipping)")
    is_level: str = option("token", help="is: token (one ratio per token) | sequence (geometric mean per row)")
    is_self_normalize: bool = option(False, help="is: rescale weights to mean 1 over the optimiser step")
    loss_options: dict = option(
        {},
        help="options of a registered loss beyond the built-in ones (train/losses.py: register_loss); "
        "nll, dft and is take theirs from the options above",
    )
    fallback: str = option(
        "keep",
        help="expert-fallback rows (origin expert) of an adapted set: keep (train them "
        "with `loss`) | drop (leave them out) | dft (DFT's weight for them, `loss` for the rest)",
    )
    epochs: float = option(1.0, help="passes over the data (ignored when max_steps > 0)")
    batch_size: int = option(4, help="rows per micro-batch per device")
    grad_accum: int = option(
        4, help="micro-batches per optimiser step (global batch = batch_size × grad_accum × ranks)"
    )
    max_length: int = option(1024, help="prompt + response tokens; longer rows lose the end of the response")
    weight_decay: float = option(0.0, help="AdamW weight decay")
    chat: bool = option(True, help="apply the model's chat template to the prompt")
    report_to: str = tracking.report_to_option()
    tracking_dir: str | None = tracking.tracking_dir_option()
    online: bool = tracking.online_option()
    force: bool = option(
        False,
        help="set aside checkpoints written with other options (in checkpoints.old-<time>/) "
        "instead of refusing them, and write into a folder another command made",
    )
    trainer_args: dict = option(
        {},
        help="any other transformers TrainingArguments field, passed through as is "
        "(e.g. {optim: adafactor}); our options above set their own fields",
    )
    launcher: LauncherConfig = launcher_option()

    def validate(self) -> None:
        self.check_passthrough(TrainingArguments)
        self.launcher.validate()
        tracking.check_report_to(self.report_to)
        # the registered losses are read now, so that a loss registered after import is accepted
        choices = {"loss": loss_names(), "is_level": IS_LEVELS, "scheduler": SCHEDULERS, "fallback": FALLBACKS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} = '{getattr(self, name)}': choose one of {', '.join(allowed)}")
        self._check_loss_options()
        for name in ("batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)}: must be at least 1")
        if self.max_length < 2:
            raise ValueError(f"max_length = {self.max_length}: too short for a prompt and a response")
        if self.dft_floor < 0 or self.dft_floor > 1:
            raise ValueError(f"dft_floor = {self.dft_floor}: a probability in [0, 1]")
        if self.is_clip < 0:
            raise ValueError(f"is_clip = {self.is_clip}: must be >= 0 (0 = no clipping)")
        super().validate()

    def _check_loss_options(self) -> None:
        """`loss_options` may hold only the options the loss declares that are not fields of this config (the
        built-in losses' options are fields: dft_floor, is_clip, ...)."""
        loss = get_loss(self.loss)
        own = [name for name in loss.options if name not in self.__dataclass_fields__]
        for key in self.loss_options:
            if key in self.__dataclass_fields__ and key in loss.options:
                raise ValueError(f"loss_options.{key}: set it with the option '{key}' instead")
            if key not in own:
                raise ValueError(
                    f"loss_options.{key}: loss '{loss.name}' has no such option; its options: "
                    + (", ".join(own) or "none (loss_options must be empty)")
                )

    def loss_values(self) -> dict[str, Any]:
        """The values of the loss's declared options: this config's field of that name where it has one, else
        `loss_options`, else the loss's default."""
        loss = get_loss(self.loss)
        return {
            name: getattr(self, name) if name in self.__dataclass_fields__ else self.loss_options.get(name, default)
            for name, default in loss.options.items()
        }

    def precision(self) -> tuple[str, str]:
        """(compute dtype, weights dtype) as this machine will train: see sftadapt.runtime.precision."""
        compute = normalize(self.dtype)
        weights = normalize(self.weights_dtype, WEIGHT_DTYPES, "weights_dtype")
        row = LOSSES.get(self.loss)
        if row is not None and row.float32_only:
            # e.g. is: its weight exp(log π_θ − log π_β) divides the trainer's π_θ by π_β, which the rewrite stage
            # scores in float32; bf16 moves single tokens by up to 0.5 nats, so a self row would start at weight
            # e^±0.5 instead of 1. So it trains in float32 whatever `dtype` says (shared study configs set it).
            if weights == "bfloat16":
                raise ValueError(
                    f"loss {row.name}: π_θ must be computed in float32, the precision π_β was scored in; "
                    "pure bf16 weights cannot do that (use weights_dtype float32)"
                )
            if compute == "bfloat16":
                warn_once(
                    f"{row.name}-fp32",
                    f"loss {row.name} trains in float32 (π_θ in the precision π_β was scored in); "
                    "dtype bfloat16 is not used for it",
                )
            return "float32", weights
        return training_dtypes(compute, weights)


# ---------------------------------------------------------------- the trainer: our loss, our normaliser
class SFTLossTrainer(Trainer):
    """transformers `Trainer` whose loss is `losses.sft_loss`, normalised by the step's response-token count."""

    loss_is_scaled_for_ga = True  # compute_loss divides by the whole step's token count itself

    def __init__(self, *args, loss_config: TrainConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_config = loss_config
        self._stats: LossStats | None = None
        self._stats_steps = 0  # optimiser steps pooled in _stats since the last log
        self._step_weight_total: torch.Tensor | None = None
        # train/logits.py: the LM head only where a token is trained; on a CPU, no forward over padding
        self._selective = selective_logits(self.model)

    def _loss_kwargs(self) -> dict[str, Any]:
        c = self.loss_config
        extra = {k: v for k, v in c.loss_values().items() if k not in ("dft_floor", "is_clip", "is_level")}
        extra.pop("is_self_normalize", None)  # applied over the step by sft_loss, from the config
        return {
            "loss_type": c.loss,
            "dft_floor": c.dft_floor,
            "is_clip": c.is_clip or None,
            "is_level": c.is_level,
            **extra,
        }

    @staticmethod
    def _dft_rows(batch) -> torch.Tensor | None:
        return batch.get("dft_row")

    @staticmethod
    def _shifted(inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets and behaviour log-probs moved one left, so position t holds the token logits[t] predicts."""
        targets = torch.nn.functional.pad(inputs["labels"][:, 1:], (0, 1), value=IGNORE_INDEX)
        behavior = torch.nn.functional.pad(inputs["behavior_logprobs"][:, 1:], (0, 1), value=0.0)
        return targets, behavior

    def _token_logprobs(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        targets, behavior = self._shifted(inputs)
        split = self.args.world_size == 1 and split_rows(model)
        logp = target_logprobs(model, inputs["input_ids"], inputs["attention_mask"], targets, self._selective, split)
        return logp, targets != IGNORE_INDEX, behavior

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device):
        """The step's micro-batches and OUR normaliser: response tokens of all of them, summed over ranks."""
        batches = []
        for _ in range(num_batches):
            try:
                batches.append(next(epoch_iterator))
            except StopIteration:
                break
        if not batches:
            return batches, None
        self._stats_steps += 1
        count = sum((b["labels"][:, 1:] != IGNORE_INDEX).sum() for b in batches).to(device).view(1)
        if self.args.world_size > 1:
            count = self.accelerator.gather(count).sum().view(1)
        self._step_weight_total = None
        c = self.loss_config
        normalizes = c.is_self_normalize and "is_self_normalize" in get_loss(c.loss).options
        if normalizes and (len(batches) > 1 or self.args.world_size > 1):
            self._step_weight_total = self._weight_total(batches, device)
        return batches, count[0]

    @torch.no_grad()
    def _weight_total(self, batches, device) -> torch.Tensor:
        total = torch.zeros(1, device=device)
        with self.compute_loss_context_manager():
            for batch in batches:
                logp, mask, behavior = self._token_logprobs(self.model_wrapped, batch)
                weights, _ = token_weights(
                    logp,
                    mask,
                    behavior_logprobs=behavior,
                    has_behavior=batch["has_behavior"],
                    dft_rows=self._dft_rows(batch),
                    **self._loss_kwargs(),
                )
                total += weights.sum()
        if self.args.world_size > 1:
            total = self.accelerator.gather(total).sum().view(1)
        return total[0]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logp, mask, behavior = self._token_logprobs(model, inputs)
        loss, stats = sft_loss(
            logp,
            mask,
            num_tokens=num_items_in_batch,
            behavior_logprobs=behavior,
            has_behavior=inputs["has_behavior"],
            is_self_normalize=self.loss_config.is_self_normalize,
            weight_total=self._step_weight_total,
            dft_rows=self._dft_rows(inputs),
            **self._loss_kwargs(),
        )
        if model.training:
            self._stats = stats if self._stats is None else self._stats + stats
        if num_items_in_batch is not None and self.args.world_size > 1:
            # Each rank's loss is its share of the global sum; DDP/DeepSpeed/FSDP average gradients over ranks.
            loss = loss * self.accelerator.num_processes
        return (loss, {"logp": logp}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add our per-step statistics (pooled over the logging window and the ranks) to the training logs."""
        if "loss" in logs and self._stats is not None:
            steps, stats = self._stats_steps, self._stats
            if self.args.world_size > 1:
                packed = torch.stack([stats.nll, stats.tokens, stats.weight_sum, stats.weight_sq_sum, stats.clipped])
                packed = self.accelerator.gather(packed.view(1, -1)).sum(0)
                weight_max = self.accelerator.gather(stats.weight_max.view(1)).max()
                stats = LossStats(*packed[:4], weight_max=weight_max, clipped=packed[4])
            summary = loss_summary(stats, steps)
            logs["nll"] = summary["nll"]
            logs["response_tokens"] = float(stats.tokens)
            logs.update({k: summary[k] for k in get_loss(self.loss_config.loss).logged})
            self._stats, self._stats_steps = None, 0
        super().log(logs, start_time)


class NoFinalCheckpoint(TrainerCallback):
    """Cancel the checkpoint transformers writes after the last step whatever `save_steps` says (weights and
    optimizer state: ~1.6 GB and 3-5 s on a CPU for a 135M model). For callers that delete a finished run's
    checkpoints anyway (the pipeline, unless `keep_checkpoints`); without it a finished run can be extended
    with more steps from that checkpoint."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = False
        return control


class JsonlLogCallback(TrainerCallback):
    """Appends every log entry (with its step) to `<out>/train_log.jsonl` on the main process."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": state.global_step, **logs}) + "\n")


def read_log(out: str | Path) -> list[dict[str, Any]]:
    """The per-step training log entries of a run (the rows with a `loss`)."""
    path = Path(out) / LOG_FILE
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if "loss" in r]


def _trim_log(path: Path, last_step: int) -> None:
    """On resume, forget entries logged after the checkpoint: those steps are about to be trained again."""
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= last_step
    ]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


# ---------------------------------------------------------------- the stage
# Options that change neither the trained weights nor the data order: a resumed run may change them freely.
_BOOKKEEPING = (
    "out",
    "resume",
    "save_steps",
    "save_total_limit",
    "report_to",
    "logging_steps",
    "tracking_dir",
    "online",
    "force",
    "launcher",  # how many processes train a step changes neither the step's rows nor its gradient
)
CONFIG_FILE = "train_config.json"
REJECTS_FILE = "rejects.jsonl"


def _resume_checkpoint(cfg: TrainConfig) -> str | None:
    """The checkpoint to continue from; `auto` refuses checkpoints written with different training options."""
    saved = read_saved_options(Path(cfg.out) / CONFIG_FILE, "config")
    if saved is not None:
        saved = {"loss_options": {}, **saved}  # a run saved before loss_options existed had none
    return resume_checkpoint(
        cfg.resume, cfg.out, config_dict(cfg), saved, _BOOKKEEPING, force=cfg.force, run_files=(CONFIG_FILE, LOG_FILE)
    )


def _write_config(cfg: TrainConfig) -> None:
    data = {"config": config_dict(cfg), "hash": config_hash(cfg, exclude=_BOOKKEEPING)}
    from sftadapt.data.records import write_text_atomic

    # read back to decide whether a checkpoint may resume: a kill must not leave half of it
    write_text_atomic(Path(cfg.out) / CONFIG_FILE, json.dumps(data, indent=2) + "\n")


def _training_args(cfg: TrainConfig) -> TrainingArguments:
    from sftadapt.runtime import network

    # the Trainer creates the hub repo as it starts: offline that must be our one line, not the hub's traceback
    network.check_push(cfg.trainer_args, "trainer_args", cfg.online or network.online_now())
    cfg.check_passthrough(TrainingArguments)  # also for a config built without validate()
    # the pass-through rule (runtime/trainer_options.py) leaves it only fields of no option: ours may be replaced
    return TrainingArguments(**{**_training_kwargs(cfg), **cfg.trainer_args})


def _training_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The TrainingArguments fields our options (and this stage) set, before `trainer_args`."""
    return dict(
        output_dir=cfg.out,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        **tracking.trainer_args(cfg.report_to, out=cfg.out, tracking_dir=cfg.tracking_dir, online=cfg.online or None),
        use_cpu=not torch.cuda.is_available(),
        **checkpointing_argument(TrainingArguments, cfg.gradient_checkpointing),
        # fp32 master weights under bf16 autocast; with pure bf16 weights autocast is moot
        bf16=autocast_bf16(*cfg.precision()),
        remove_unused_columns=False,  # our collator's columns (behaviour log-probs) are not model arguments
        dataloader_num_workers=0,
        save_strategy="steps",
        logging_strategy="steps",
        disable_tqdm=os.environ.get("SFTADAPT_QUIET") == "1",  # `sftadapt -q`
    )


def _load_model(cfg: TrainConfig):
    from sftadapt.runtime.models import from_pretrained, resolve_model, torch_dtype

    # Loaded after TrainingArguments so that DeepSpeed ZeRO-3 (set up by them) can partition it while loading.
    model = from_pretrained(resolve_model(cfg.model), dtype=torch_dtype(cfg.precision()[1]))
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        targets = cfg.lora_target_modules
        target_modules = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
        torch.manual_seed(cfg.seed)
        model = get_peft_model(
            model,
            LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    return model


def _check_behavior_precision(examples: list[Example]) -> None:
    """A loss that reads behaviour log-probs (is) trains in float32; log-probs scored in another precision would
    not match it."""
    for e in examples:
        scored = ((e.provenance or {}).get("precision") or {}).get("score")
        if e.behavior_logprobs is not None and scored not in (None, "float32"):
            raise ValueError(
                f"example '{e.id}': its behaviour log-probs were scored in {scored}, but the is loss "
                "divides by them in float32; re-run the rewrite with score_dtype float32"
            )


@dataclass
class TrainingData:
    examples: list[Example]
    provenance: list[dict[str, Any]]
    tokenized: TokenizedRows
    response_tokens: int
    rejected: int = 0  # unusable rows of raw expert sets, in OUT/rejects.jsonl


def fallback_rows(examples: list[Example], fallback: str, data: list[str]) -> list[Example]:
    """The rows to train under `fallback`: all of them, or (drop) all but the expert-fallback rows."""
    if fallback != "drop":
        return examples
    kept = [e for e in examples if e.origin != "expert"]
    if not kept:
        raise ValueError(
            f"fallback = drop leaves no row: all {len(examples)} rows of {', '.join(data)} are expert "
            "rows (an expert set, or an adaptation that adapted nothing); use keep or dft"
        )
    return kept


def build_trainer(
    cfg: TrainConfig, callbacks: list[TrainerCallback] | None = None
) -> tuple[SFTLossTrainer, TrainingData, str | None]:
    """Data, model and trainer for `cfg`, and the checkpoint to resume from (None: a fresh start)."""
    from transformers import set_seed

    from sftadapt.runtime.models import load_tokenizer

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sftadapt.runtime.outdir import TRAIN_OUTPUTS  # never delete a user's checkpoint-* folder
    from sftadapt.runtime.owned import checkpoint_recorder, open_checkpoints
    from sftadapt.runtime.prologue import open_stage

    out = open_stage(cfg, "train", protect=TRAIN_OUTPUTS)  # validate, honour `online`, claim: as every stage
    open_checkpoints(out)  # a checkpoint-* of the user's is refused before resume could take it
    resume_from = _resume_checkpoint(cfg)  # first: a refused resume should not wait for data and model
    set_seed(cfg.seed)

    # ---- data: files -> Examples -> token rows (behaviour log-probs aligned) -----------------------------
    # the data first: a file that cannot be read is refused before the model is converted or loaded
    loaded = read_training_rows(cfg.data, cfg.fields, cfg.max_row_bytes)
    tokenizer = load_tokenizer(cfg.model)
    examples, provenance = loaded.examples, loaded.provenance
    examples = fallback_rows(examples, cfg.fallback, cfg.data)
    if get_loss(cfg.loss).needs_behavior:
        _check_behavior_precision(examples)
    tokenized = tokenize_examples(
        tokenizer,
        examples,
        cfg.max_length,
        chat=cfg.chat,
        dft_origins=frozenset({"expert"} if cfg.fallback == "dft" else ()),
    )
    if not tokenized.rows:
        raise ValueError(f"no trainable rows: all {len(examples)} prompts are longer than max_length={cfg.max_length}")
    response_tokens = sum(sum(t != IGNORE_INDEX for t in r["labels"]) for r in tokenized.rows)

    # ---- trainer ------------------------------------------------------------------------------------------
    args = _training_args(cfg)
    model = _load_model(cfg)
    log_path = out / LOG_FILE
    if args.process_index == 0:
        _write_config(cfg)
        _write_rejects(loaded.rejects, out)
        if resume_from:
            _trim_log(log_path, json.loads((Path(resume_from) / "trainer_state.json").read_text())["global_step"])
        elif log_path.exists():
            log_path.unlink()
    trainer = SFTLossTrainer(
        model=model,
        args=args,
        train_dataset=RowDataset(tokenized.rows),
        processing_class=tokenizer,
        data_collator=Collator(pad_token_id=tokenizer.pad_token_id),
        loss_config=cfg,
        callbacks=[JsonlLogCallback(log_path), checkpoint_recorder(out), *(callbacks or [])],
    )
    bar_only_progress(trainer)
    return (
        trainer,
        TrainingData(examples, provenance, tokenized, int(response_tokens), len(loaded.rejects)),
        resume_from,
    )


def _write_rejects(rejects: list[dict[str, Any]], out: Path) -> None:
    """OUT/rejects.jsonl of the unusable training rows (file, line, field, reason, a bounded excerpt), as every
    stage writes it, and one line saying how many; a run without rejects removes an older file of ours."""
    from sftadapt.data.sources import write_rejects

    written = write_rejects(rejects, out / REJECTS_FILE)
    if written:
        print(f"{len(rejects)} rows rejected, see {written}", file=sys.stderr, flush=True)


def train(cfg: TrainConfig, callbacks: list[TrainerCallback] | None = None) -> dict[str, Any]:
    """Fine-tune `cfg.model` on `cfg.data` with `cfg.loss`; returns a summary (steps, losses, paths, counts)."""
    from sftadapt.runtime import offline

    offline.honour(cfg.online)
    started = time.time()
    out = Path(cfg.out)
    # the tracker callback (report_to) reads where to write, and that it stays offline, while built and trained
    with tracking.trainer_env(cfg.report_to, out=cfg.out, tracking_dir=cfg.tracking_dir, online=cfg.online or None):
        trainer, data, resume_from = build_trainer(cfg, callbacks)
        result = trainer.train(resume_from_checkpoint=resume_from)
    tokenizer, tokenized, examples = trainer.processing_class, data.tokenized, data.examples

    # ---- final save: a plain HF model folder (LoRA merged) + tokenizer + model card -------------------------
    summary = {
        "out": str(out),
        "loss": cfg.loss,
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "rows": len(tokenized.rows),
        "dropped_too_long": len(tokenized.dropped),
        "truncated": tokenized.truncated,
        "response_tokens": data.response_tokens,
        "rejected_rows": data.rejected,
        "resumed_from": resume_from,
        "origins": dict(sorted(Counter(e.origin for e in examples).items())),
        "fallback": cfg.fallback,
        "global_batch": cfg.batch_size * cfg.grad_accum * trainer.args.world_size,
        "processes": trainer.args.world_size,
        "log": str(out / LOG_FILE),
        "seconds": round(time.time() - started, 1),
        "precision": _precision_record(cfg),
    }
    last = [row for row in trainer.state.log_history if "loss" in row]
    if last:
        summary.update(final_loss=last[-1]["loss"], final_nll=last[-1].get("nll"))
    if cfg.lora:
        trainer.save_model(str(out / "adapter"))
        summary["adapter"] = str(out / "adapter")
        if trainer.is_world_process_zero():
            save_merged(cfg.model, out / "adapter", out, tokenizer)
    else:
        trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        (out / "README.md").write_text(model_card(cfg, data.provenance, summary), encoding="utf-8")
    trainer.accelerator.wait_for_everyone()
    return summary


def _precision_record(cfg: TrainConfig) -> dict[str, Any]:
    from sftadapt.runtime.precision import describe

    compute, weights = cfg.precision()
    return {
        "compute": compute,
        "weights": weights,
        "autocast_bf16": autocast_bf16(compute, weights),
        **{k: v for k, v in describe(cfg.dtype, compute).items() if k not in ("requested", "resolved")},
    }


def model_card(cfg: TrainConfig, data_provenance: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """README.md of the trained model: base model, loss and options, data files (sha256, rows, origins), config."""
    import transformers

    from sftadapt import __version__
    from sftadapt.runtime.models import model_revision

    loss_options = cfg.loss_values()
    formula = get_loss(cfg.loss).formula
    lines = [
        "---",
        f"base_model: {cfg.model}",
        "library_name: transformers",
        f"tags: [sftadapt, sft, {cfg.loss}]",
        "---",
        f"# {Path(cfg.out).name}",
        "",
        f"Fine-tuned by `sftadapt train` (sftadapt {__version__}) with the **{cfg.loss}** loss"
        + (" (LoRA, merged; adapter in `adapter/`)." if cfg.lora else " (full fine-tuning)."),
        "",
        "## Base model",
        f"- {json.dumps(model_revision(cfg.model))}",
        "",
        "## Loss",
        f"- `{cfg.loss}`: {formula}; N = response tokens of the optimiser step",
        f"- options: {json.dumps(loss_options)}",
        "",
        "## Data",
        "| file | sha256 | kind | rows | rejected | origins |",
        "|---|---|---|---|---|---|",
        *[
            f"| `{d['path']}` | `{d['sha256']}` | {d['kind']} | {d['rows']} | {d['rejected']} | {json.dumps(d['origins'])} |"
            for d in data_provenance
        ],
        "",
        f"- trained rows: {summary['rows']} (truncated: {summary['truncated']}, dropped as too long: "
        f"{summary['dropped_too_long']}), response tokens: {summary['response_tokens']}",
        "",
        "## Training",
        f"- steps: {summary['steps']}, global batch: {summary['global_batch']}, final loss: {summary.get('final_loss')},"
        f" final nll: {summary.get('final_nll')}, mean loss: {summary['train_loss']:.6g}",
        f"- precision: {json.dumps(summary['precision'])}",
        f"- resumed from: {summary['resumed_from']}; versions: torch {torch.__version__}, "
        f"transformers {transformers.__version__}; config hash: {config_hash(cfg, exclude=_BOOKKEEPING)}",
        "",
        "## Config",
        "```yaml",
        yaml.safe_dump(config_dict(cfg), sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- command line
def train_command(
    model: str | None = None,
    data: list[str] | None = None,
    out: str | None = None,
    loss: str | None = None,
    config: str | None = None,
    overrides: list[str] | None = None,
) -> dict:
    """Options as `sftadapt train` takes them: --model/--data/--out/--loss, then the YAML, then `--set k=v`."""
    given = {"model": model, "data": list(data) if data else None, "out": out, "loss": loss}
    cfg = load_config(TrainConfig, config, overrides, base={k: v for k, v in given.items() if v is not None})
    from sftadapt.runtime import offline

    offline.honour(cfg.online)  # `online: true` in the YAML = --online, before anything is loaded
    summary = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print("\n".join(["| train | |", "|---|---|", *[f"| {k} | {v} |" for k, v in summary.items()]]))
    return summary


def run(cfg: TrainConfig, progress: bool = True, final_checkpoint: bool = True) -> dict[str, Any]:
    """The train stage as the registry runs it; `final_checkpoint=False` skips the checkpoint transformers writes
    after the last step (weights + optimizer state, ~1.6 GB for a 135M model), which `sftadapt run` would only
    delete: a finished stage is never resumed."""
    return train(cfg, None if final_checkpoint else [NoFinalCheckpoint()])


def _echo(cfg: TrainConfig, summary: dict[str, Any]) -> list[str]:
    table = ["| train | |", "|---|---|", *[f"| {k} | {v} |" for k, v in summary.items()]]
    return ["\n".join(table), f"model -> {cfg.out} (log: {summary['log']})"]


STAGE = Stage(
    name="train",
    config=TrainConfig,
    run=run,
    outputs=("model.safetensors", LOG_FILE, "README.md", "train_config.json", "rejects.jsonl"),
    echo=_echo,
)


def _main(argv: list[str]) -> None:
    """`python -m sftadapt.train.stage ...` (what `accelerate launch -m sftadapt.train.stage` runs): the same options."""
    import argparse

    parser = argparse.ArgumentParser(prog="sftadapt.train.stage", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model")
    parser.add_argument("--data", action="append")
    parser.add_argument("--out")
    parser.add_argument("--loss", choices=loss_names())
    parser.add_argument("--config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--online", action="store_true", help="allow hub downloads (default: offline)")
    ns = parser.parse_args(argv)
    from sftadapt.runtime import offline  # offline on this entry point too, unless --online

    offline.apply(ns.online)
    from sftadapt.runtime.user_errors import one_line

    # what the user can fix is one line, as under `sftadapt train`
    one_line(lambda: train_command(ns.model, ns.data, ns.out, ns.loss, ns.config, ns.overrides))


if __name__ == "__main__":
    _main(sys.argv[1:])
