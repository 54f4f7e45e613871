"""The config of `sftadapt run`: the study's own options, and one options section per stage registry row.

`RunConfig`'s sections `train:`, `rewrite:`, `mapper_train:`, `synth:`, `direct_rl:` (and any registered
stage's) are mappings of that stage's options, built into its config class for each step (pipeline.py), so a
misspelt option is refused before any stage runs; `eval:` is `sftadapt eval`'s config with the study's defaults.
`run_config_class()` is the class for the stages registered now.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftadapt import arms as arm_table
from sftadapt import registry
from sftadapt.config import ConfigError, load_config, option
from sftadapt.data.formats import FieldOptions, fields_option
from sftadapt.eval.stage import EvalConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class TaskConfig:
    kind: str = option("synthetic", help="synthetic (the embedded task) | dataset")
    data: str | None = option(None, help="dataset kind: SFT set with expert solutions (file, name or hf:id)")
    fields: FieldOptions = fields_option()
    train_problems: int = option(64, help="problems in the SFT set")
    expert_style: str = option("expert", help="synthetic: expert (terse teacher style, the gap) | native (no gap)")
    steps: list[int] = option([1, 3], help="synthetic: min and max reasoning steps of training problems")
    select_pool: int | None = option(
        None,
        help="synthetic: choose the training problems from this many candidates by the target's own pass rate "
        "(the `select` stage, adapt/select.py); unset: the first train_problems",
    )
    select_k: int = option(4, help="select: samples per candidate (the rewrite's temperature and token budget)")
    select_band: list[float] = option(
        [0.25, 0.5], help="select: keep candidates whose pass rate (correct / select_k) lies in [low, high]"
    )

    def validate(self) -> None:
        if self.kind not in ("synthetic", "dataset"):
            raise ValueError(f"task.kind '{self.kind}': choose synthetic or dataset")
        if self.kind == "dataset" and not self.data:
            raise ValueError("task.data is required when task.kind is dataset")
        if self.expert_style not in ("expert", "native"):
            raise ValueError(f"task.expert_style '{self.expert_style}': choose expert or native")
        if self.select_pool is not None:
            if self.kind != "synthetic":
                raise ValueError(
                    "task.select_pool: selecting by pass rate draws candidates from the synthetic task only"
                )
            if self.select_pool < self.train_problems:
                raise ValueError(
                    f"task.select_pool {self.select_pool} is below train_problems {self.train_problems}: "
                    "the pool must hold at least the problems it is to choose"
                )
        band = list(self.select_band)
        if len(band) != 2 or not 0 <= band[0] <= band[1] <= 1:
            raise ValueError(
                f"task.select_band {self.select_band}: two pass rates [low, high] with 0 <= low <= high <= 1"
            )


@dataclass
class WarmupConfig:
    enabled: bool = option(True, help="SFT the raw model on native-style problems first (synthetic task only)")
    problems: int = option(512, help="warm-up problems (native style, 1-3 steps)")
    train: dict = option({}, help="TrainConfig options of the warm-up SFT (loss is nll)")


@dataclass
class StudyEvalConfig(EvalConfig):
    """The study's `eval:` section: `sftadapt eval`'s options (eval/stage.py) with the study's defaults; `run` sets
    the model and the output folder of each arm's evaluation."""

    benchmarks: list[str] = option(["synthetic_id", "synthetic_ood"], help="benchmark names")
    limit: int | None = option(50, help="problems per benchmark")
    protocol_overrides: dict = option(
        {}, help="Protocol fields to change, e.g. {n: 4, temperature: 1.0} (the same as eval.n, eval.temperature)"
    )
    raw_model: bool = option(True, help="also evaluate the raw model when a warm-up made the target")

    def protocol_changes(self) -> dict[str, Any]:
        return {**self.protocol_overrides, **super().protocol_changes()}


@dataclass
class _RunOptions:
    name: str = option("study", help="label of the run")
    out: str = option("runs/study", help="run folder (one sub-folder per stage)")
    model: str = option("smollm2-135m", help="the model to adapt data for (before any warm-up)")
    seeds: list[int] = option([0], help="one full study per seed (data, sampling, training); reported side by side")
    arms: list[str] = option(
        list(arm_table.DEFAULT_ARMS),
        help="arms to run: names of the arm table (arms.py; docs/reference.md lists them), and direct_rl@N for "
        "direct RL at N GRPO steps (any number of budgets: a compute-vs-accuracy curve)",
    )
    task: TaskConfig = field(default_factory=TaskConfig, metadata={"help": "the SFT set"})
    warmup: WarmupConfig = field(default_factory=WarmupConfig, metadata={"help": "warm-up SFT"})
    eval: StudyEvalConfig = field(default_factory=StudyEvalConfig, metadata={"help": "evaluation"})
    patch: dict = option(
        {},
        help="the Patch arm's mapper RL: MapperTrainConfig options over mapper_train's (its "
        "reward kind is always patch; e.g. reward: {dist_weight: 0.35, div_weight: 0.5})",
    )
    report: dict = option({}, help="report options: metric (avg | maj | pass@K)")
    keep_checkpoints: bool = option(
        False,
        help="keep trainer checkpoints of finished stages (they only serve resuming; ~1 GB each for a 135M model)",
    )
    keep_superseded: int = option(
        1,
        help="outputs of a stage whose options changed are set aside as "
        "<stage>.old-<time>; keep the newest N of them per stage (0 = none); "
        "`sftadapt clean RUN` frees the rest",
    )
    report_to: str = option(
        "none",
        help="experiment tracker of every stage: none | tensorboard | wandb | trackio | "
        "mlflow (one run per stage; offline unless online)",
    )
    tracking_dir: str | None = option(None, help="tracker output folder of every stage (default: <out>/tracking)")
    online: bool = option(
        False,
        help="allow the network (hub downloads and pushes, online trackers, remote engine servers): "
        "the YAML twin of --online",
    )
    cpu_bf16: bool = option(
        True,
        help="false: dtype auto is float32 on every CPU, bf16 instructions or not (SFTADAPT_CPU_BF16=0), so that a "
        "seed computes the same on any CPU and may be continued on another (docs/precision.md)",
    )

    def validate(self) -> None:
        unknown = [a for a in self.arms if not arm_table.known(a)]
        if unknown:
            raise ValueError(
                f"unknown arm(s) {unknown}: choose from {', '.join(arm_table.ARMS)}, or direct_rl@N (N GRPO steps)"
            )
        if "base" not in self.arms:
            raise ValueError("arms must include 'base': every other arm is compared with it")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        if self.keep_superseded < 0:
            raise ValueError(f"keep_superseded = {self.keep_superseded}: must be >= 0")
        from sftadapt.runtime.tracking import check_report_to

        check_report_to(self.report_to)  # a missing package: one line before any stage runs


def seed_paths(root: Path) -> dict[str, str]:
    """Every stage folder of one seed, the data files, and each source's training set (`<source>_data`)."""
    paths = {name: str(root / name) for name in sorted(registry.step_rows()) + ["direct_rl", "warmup"]}
    paths.update({f"train_{a}": str(root / f"train_{a}") for a in arm_table.TRAINED_ARMS})
    paths.update({f"{source}_data": str(root / arm_table.train_data(source)) for source in arm_table.SOURCE_STAGES})
    paths.update(
        expert=str(root / "data" / "expert.jsonl"),
        warmup_data=str(root / "data" / "warmup.jsonl"),
        mapper_model=str(root / "mapper_train"),
    )
    return paths


_CLASSES: dict[tuple[str, ...], type] = {}


def run_config_class() -> type:
    """RunConfig with one mapping section per registry row that has a section (built once per set of rows)."""
    own = {f.name for f in dataclasses.fields(_RunOptions)}
    sections = tuple(s for s in registry.section_rows() if s not in own)
    if sections not in _CLASSES:
        extra = [
            (s, dict, option({}, help=f"options of `sftadapt {registry.section_rows()[s].name}` for its steps in run"))
            for s in sections
        ]
        cls = dataclasses.make_dataclass("RunConfig", extra, bases=(_RunOptions,))
        cls.__module__, cls.__doc__ = __name__, "The options of `sftadapt run` (module docstring)."
        _CLASSES[sections] = cls
    return _CLASSES[sections]


RunConfig = run_config_class()


def load_run_config(path: str | Path | None, overrides: list[str] | None = None):
    return load_config(run_config_class(), path, overrides)


def quickstart_config(overrides: list[str] | None = None):
    path = CONFIG_DIR / "quickstart.yaml"
    if not path.exists():
        raise ConfigError(f"{path}: the quickstart config is missing (run from a source checkout)")
    return load_run_config(path, overrides)
