"""`sftadapt run CONFIG.yaml`: the whole study as one cached stage graph, and `sftadapt quickstart`.

    data ─► (warm-up) ─► eval base
      ├─► rewrite (Mind the Gap) ────────────► train DR+SFT, DR+DFT, DR+IS ─► eval
      ├─► sdft (one prompted rewrite) ───────► train SDFT+SFT ──────────────► eval
      ├─► mapper RL ─► synthesize ───────────► train DART+SFT (+ fallback ablations) ─► eval
      ├─► synthesize (untrained mapper) ─────► train PR best-of-k+SFT (+ ablation) ──► eval
      ├─► mapper RL (Patch reward) ─► synth. ► train Patch+SFT ─────────────► eval
      ├─► expert set ────────────────────────► train SFT, DFT ──────────────► eval
      └─► direct GRPO on the target ────────────────────────────────────────► eval
                                                                        ─► report (+ compute per arm)

Which adapt stages run follows from the arms (arms.py: each arm's source and that source's stages).

Every stage lives in `RUN/<stage>/` with a `stage.json` holding the hash of its options *and of its inputs'
hashes*. Re-running the same config skips finished stages; changing an option redoes that stage and what
depends on it (the old folder is set aside as `<stage>.old-<time>`); a killed run resumes inside the stage
that was running, since every stage is resumable on its own (shards, trainer checkpoints).

The embedded default (`configs/quickstart.yaml`): SmolLM2-135M-Instruct is near chance on word problems, so
the study first warms it up with a short SFT on generated problems written in a native style close to its own
phrasing; that warmed-up model is the *target* (the "base" arm); the raw model is evaluated too. The expert
data are the same kind of problems with terse teacher-style solutions (a controllable gap; `task.expert_style:
native` removes it).

    sftadapt run configs/quickstart.yaml --set eval.limit=100
    sftadapt quickstart
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftadapt import arms as arm_table
from sftadapt.config import ConfigError, build_config, config_hash, load_config, option
from sftadapt.data.formats import FieldOptions, fields_option
from sftadapt.data.records import write_json
from sftadapt.engines.base import EngineConfig
from sftadapt.runtime import owned

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class TaskConfig:
    kind: str = option("synthetic", help="synthetic (the embedded task) | dataset")
    data: str | None = option(None, help="dataset kind: SFT set with expert solutions (file, name or hf:id)")
    fields: FieldOptions = fields_option()
    train_problems: int = option(64, help="problems in the SFT set")
    expert_style: str = option("expert", help="synthetic: expert (terse teacher style, the gap) | native (no gap)")
    steps: list[int] = option([1, 3], help="synthetic: min and max reasoning steps of training problems")

    def validate(self) -> None:
        if self.kind not in ("synthetic", "dataset"):
            raise ValueError(f"task.kind '{self.kind}': choose synthetic or dataset")
        if self.kind == "dataset" and not self.data:
            raise ValueError("task.data is required when task.kind is dataset")
        if self.expert_style not in ("expert", "native"):
            raise ValueError(f"task.expert_style '{self.expert_style}': choose expert or native")


@dataclass
class WarmupConfig:
    enabled: bool = option(True, help="SFT the raw model on native-style problems first (synthetic task only)")
    problems: int = option(512, help="warm-up problems (native style, 1-3 steps)")
    train: dict = option({}, help="TrainConfig options of the warm-up SFT (loss is nll)")


@dataclass
class EvalConfig:
    benchmarks: list[str] = option(["synthetic_id", "synthetic_ood"], help="benchmark names")
    limit: int | None = option(50, help="problems per benchmark")
    protocol: str = option("quick", help="protocol name or YAML file")
    protocol_overrides: dict = option({}, help="Protocol fields to change, e.g. {n: 4, temperature: 1.0}")
    raw_model: bool = option(True, help="also evaluate the raw model when a warm-up made the target")
    dtype: str = option("auto", help="sampling dtype: auto (bf16 only where native) | float32 | bfloat16")
    batch_size: int = option(32, help="sequences per generate call")
    engine: EngineConfig = field(default_factory=EngineConfig, metadata={"help": "the backend that evaluates"})
    max_prompt_tokens: int | None = option(
        None, help="prompt budget in tokens (default: the model's context less max_new_tokens)"
    )


@dataclass
class RunConfig:
    name: str = option("study", help="label of the run")
    out: str = option("runs/study", help="run folder (one sub-folder per stage)")
    model: str = option("smollm2-135m", help="the model to adapt data for (before any warm-up)")
    seeds: list[int] = option([0], help="one full study per seed (data, sampling, training); reported side by side")
    arms: list[str] = option(list(arm_table.DEFAULT_ARMS), help="arms to run: " + ", ".join(arm_table.ARMS))
    task: TaskConfig = field(default_factory=TaskConfig, metadata={"help": "the SFT set"})
    warmup: WarmupConfig = field(default_factory=WarmupConfig, metadata={"help": "warm-up SFT"})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "evaluation"})
    train: dict = option({}, help="TrainConfig options shared by every trained arm")
    rewrite: dict = option({}, help="RewriteConfig options (Mind the Gap)")
    mapper_train: dict = option({}, help="MapperTrainConfig options (DART RL; grpo:, reward: sections)")
    synth: dict = option({}, help="SynthConfig options (DART, prompted-rewrite and Patch synthesis)")
    patch: dict = option(
        {},
        help="the Patch arm's mapper RL: MapperTrainConfig options over mapper_train's (its "
        "reward kind is always patch; e.g. reward: {dist_weight: 0.35, div_weight: 0.5})",
    )
    direct_rl: dict = option({}, help="DirectRLConfig options (grpo: section)")
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

    def validate(self) -> None:
        unknown = [a for a in self.arms if a not in arm_table.ARMS]
        if unknown:
            raise ValueError(f"unknown arm(s) {unknown}: choose from {', '.join(arm_table.ARMS)}")
        if "base" not in self.arms:
            raise ValueError("arms must include 'base': every other arm is compared with it")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        if self.keep_superseded < 0:
            raise ValueError(f"keep_superseded = {self.keep_superseded}: must be >= 0")
        from sftadapt.runtime.tracking import check_report_to

        check_report_to(self.report_to)  # a missing package: one line before any stage runs


# ---------------------------------------------------------------- stage configs, validated up front
def stage_configs(cfg: RunConfig, seed: int, target: str, paths: dict[str, str]) -> dict[str, Any]:
    """Every stage's own config object, built (and so validated) before any work starts."""
    from sftadapt.adapt.mapper import MapperTrainConfig, SynthConfig
    from sftadapt.adapt.rewrite import RewriteConfig
    from sftadapt.eval.protocol import load_protocol
    from sftadapt.rl.direct_rl import DirectRLConfig
    from sftadapt.train.stage import TrainConfig

    shared = tracking_options(cfg)

    def make(cls, where: str, values: dict, fixed: dict) -> Any:
        # the run's tracker and network switch, unless the stage's own section sets them
        return build_config(cls, _merge({**shared, **values}, fixed), where)

    train_base = {"seed": seed, **cfg.train}
    patch_train = _merge(cfg.mapper_train, cfg.patch)
    patch_reward = {k: v for k, v in patch_train.get("reward", {}).items() if k in ("dist_weight", "div_weight")}
    out: dict[str, Any] = {
        "protocol": load_protocol(
            cfg.eval.protocol, [f"{k}={json.dumps(v)}" for k, v in cfg.eval.protocol_overrides.items()]
        ),
        "rewrite": make(
            RewriteConfig,
            "rewrite",
            cfg.rewrite,
            {"model": target, "data": paths["expert"], "out": paths["rewrite"], "seed": seed},
        ),
        # SDFT: the rewrite stage's one-rewrite method, with the rewrite section's sampling options
        "sdft": make(
            RewriteConfig,
            "rewrite",
            cfg.rewrite,
            {
                "model": target,
                "data": paths["expert"],
                "out": paths["sdft"],
                "seed": seed,
                "method": "prompted_rewrite",
            },
        ),
        "mapper_train_patch": make(
            MapperTrainConfig,
            "patch",
            patch_train,
            {
                "target": target,
                "data": paths["expert"],
                "out": paths["mapper_train_patch"],
                "grpo": {"seed": seed, **patch_train.get("grpo", {})},
                "reward": {**patch_train.get("reward", {}), "kind": "patch"},
            },
        ),
        "mapper_patch": make(
            SynthConfig,
            "synth",
            cfg.synth,
            {
                "mapper": paths["mapper_train_patch"],
                "target": target,
                "data": paths["expert"],
                "out": paths["mapper_patch"],
                "seed": seed,
                "reward": {**cfg.synth.get("reward", {}), **patch_reward, "kind": "patch"},
            },
        ),
        "mapper_train": make(
            MapperTrainConfig,
            "mapper_train",
            cfg.mapper_train,
            {
                "target": target,
                "data": paths["expert"],
                "out": paths["mapper_train"],
                "grpo": {"seed": seed, **cfg.mapper_train.get("grpo", {})},
            },
        ),
        "mapper": make(
            SynthConfig,
            "synth",
            cfg.synth,
            {
                "mapper": paths["mapper_model"],
                "target": target,
                "data": paths["expert"],
                "out": paths["mapper"],
                "seed": seed,
            },
        ),
        "prompted": make(
            SynthConfig,
            "synth",
            cfg.synth,
            {"mapper": "untrained", "target": target, "data": paths["expert"], "out": paths["prompted"], "seed": seed},
        ),
        "direct_rl": make(
            DirectRLConfig,
            "direct_rl",
            cfg.direct_rl,
            {
                "model": target,
                "data": paths["expert"],
                "out": paths["direct_rl"],
                "grpo": {"seed": seed, **cfg.direct_rl.get("grpo", {})},
            },
        ),
    }
    for arm, (source, loss) in arm_table.TRAINED_ARMS.items():
        out[f"train_{arm}"] = make(
            TrainConfig,
            "train",
            train_base,
            {
                "model": target,
                "data": [paths[f"{source}_data"]],
                "loss": loss,
                "fallback": arm_table.FALLBACK[arm],
                "out": paths[f"train_{arm}"],
            },
        )
    if cfg.task.kind == "synthetic" and cfg.warmup.enabled:
        out["warmup"] = make(
            TrainConfig,
            "warmup.train",
            {"seed": seed, **cfg.warmup.train},
            {"model": cfg.model, "data": [paths["warmup_data"]], "loss": "nll", "out": paths["warmup"]},
        )
    return out


def tracking_options(cfg: RunConfig) -> dict[str, Any]:
    """What the run hands every stage: the tracker, one tracking folder (RUN/tracking), the network switch."""
    return {
        "report_to": cfg.report_to,
        "tracking_dir": cfg.tracking_dir or str(Path(cfg.out) / "tracking"),
        "online": cfg.online,
    }


# options of a stage that do not decide its output: left out of the stage hash, so that turning a tracker on
# (or the network) does not redo a finished study
UNHASHED = ("report_to", "tracking_dir", "online", "force")


def _merge(values: dict, fixed: dict) -> dict:
    merged = dict(values)
    for key, value in fixed.items():
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    return merged


# ---------------------------------------------------------------- cached stages
class Stages:
    """Runs named stages in `root`, skipping those whose hash (options + inputs) is unchanged and done.

    Prints `[k/N] stage` with what happened (cached / run / changed: which options, old -> new), the stage's
    time and the run's elapsed time, with a rough ETA from the stages that ran so far."""

    def __init__(
        self,
        root: Path,
        progress: bool = True,
        keep_checkpoints: bool = False,
        keep_superseded: int = 1,
        clock: _Clock | None = None,
        dry_run: bool = False,
    ):
        self.root, self.progress, self.keep_checkpoints = root, progress, keep_checkpoints
        # dry run: say what each stage would do (cached / run / re-run and why), touch nothing
        self.dry_run = dry_run
        self.plan: list[dict[str, Any]] = []
        self.keep_superseded = keep_superseded
        self.clock = clock or _Clock(0)
        self.hashes: dict[str, str] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.ran: list[str] = []
        self.folders: dict[str, str] = {}

    def run(self, name: str, options: Any, inputs: list[str], fn: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        folder = self.root / name
        self.folders[name] = str(folder)
        spec = {"options": _decided(options), "inputs": {i: self.hashes[i] for i in inputs}}
        digest = config_hash(spec)
        meta_path = folder / "stage.json"
        meta = stage_record(meta_path) if meta_path.exists() else None
        tag = self.clock.next(name)
        if meta and meta.get("hash") == digest and meta.get("status") == "done":
            self.hashes[name], self.results[name] = digest, meta["result"]
            self.plan.append({"stage": name, "folder": str(folder), "status": "cached"})
            _say(f"{tag} cached")
            return meta["result"]
        if self.dry_run:
            if meta is None:
                status = "would run"
            elif meta.get("hash") == digest:
                status = f"would resume (was {meta.get('status')})"
            else:
                status = "would re-run: " + ("; ".join(spec_changes(meta.get("spec", {}), spec)) or "inputs changed")
            self.hashes[name], self.results[name] = digest, {}
            self.plan.append({"stage": name, "folder": str(folder), "status": status})
            _say(f"{tag} {status}")
            return {}
        if meta and meta.get("hash") != digest:
            aside = owned.aside_path(folder)
            ours = owned.own_entries(folder)  # read before the move: the owner mark says what is the user's
            shutil.move(str(folder), aside)
            owned.record_set_aside(aside, f"stage {name}", ours)
            changes = spec_changes(meta.get("spec", {}), spec)
            _say(f"{tag} changed: {'; '.join(changes) or 'inputs'}; old output set aside in {aside.name}")
            for old in superseded(folder.parent, name)[self.keep_superseded :]:
                left = owned.free(old)
                kept = f"; kept {old.name} for what sftadapt did not write in it: {', '.join(left[:5])}" if left else ""
                _say(f"{tag} removed {old.name} (keep_superseded={self.keep_superseded}){kept}")
        folder.mkdir(parents=True, exist_ok=True)
        earlier = _earlier_segments(folder, meta) if meta and meta.get("hash") == digest else 0.0
        running = {"hash": digest, "status": "running", "spec": spec, "started_at": time.time()}
        write_json(meta_path, {**running, "earlier_segments_seconds": round(earlier, 1)})
        _say(f"{tag} running (run elapsed {self.clock.elapsed()})")
        start = time.perf_counter()
        result = fn(folder)
        if not self.keep_checkpoints:  # a finished stage is never resumed: its checkpoints are dead weight
            owned.drop_checkpoints(folder)
        seconds = time.perf_counter() - start
        result = {**_jsonable(result), "stage_seconds": round(seconds + earlier, 1)}
        if earlier:
            result["earlier_segments_seconds"] = round(earlier, 1)
        write_json(meta_path, {"hash": digest, "status": "done", "spec": spec, "result": result})
        self.hashes[name], self.results[name] = digest, result
        self.ran.append(name)
        self.clock.finished(seconds)
        _say(f"{tag} done in {_hms(seconds)}; run elapsed {self.clock.elapsed()}{self.clock.eta()}")
        return result


def stage_record(path: Path, remedy: str = "") -> dict[str, Any]:
    """A stage's `stage.json`. It is written atomically (temp file + rename), so only damage from outside leaves
    it unreadable; then one line names it and the way out: without it the stage runs again, resuming from what
    it left in its folder (shards, checkpoints) where the options still match."""
    from sftadapt.data.records import read_own_json

    return read_own_json(
        path, remedy or f"delete it and re-run: `sftadapt run` then runs stage {path.parent.name} again"
    )


def _earlier_segments(folder: Path, meta: dict[str, Any]) -> float:
    """Seconds the interrupted runs of a resumed stage spent, so its stage_seconds counts the whole stage: the
    segments already counted by earlier resumes, plus the last one, from its start to the newest file it wrote
    (a killed process cannot record its own end; work after its last write is lost anyway, and redone)."""
    done = float(meta.get("earlier_segments_seconds", 0.0))
    started = meta.get("started_at")
    if started is None:  # written before stages recorded their start
        return done
    files = [p.stat().st_mtime for p in folder.rglob("*") if p.is_file() and p.name != "stage.json"]
    return done + max(0.0, max(files, default=started) - started)


class _Clock:
    """Stage numbering and a rough ETA (mean time of the stages run so far x stages left) across seeds."""

    def __init__(self, planned: int):
        self.planned, self.k, self.start = planned, 0, time.perf_counter()
        self.durations: list[float] = []

    def next(self, name: str) -> str:
        self.k += 1
        return f"[{self.k}/{self.planned}] {name}:" if self.planned else f"[{name}]"

    def finished(self, seconds: float) -> None:
        self.durations.append(seconds)

    def elapsed(self) -> str:
        return _hms(time.perf_counter() - self.start)

    def eta(self) -> str:
        left = self.planned - self.k
        if left <= 0 or len(self.durations) < 2:  # one stage (often the instant data stage) says nothing
            return ""
        return f"; rough ETA {_hms(left * sum(self.durations) / len(self.durations))} for {left} more stages"


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def spec_changes(old: dict, new: dict, limit: int = 6) -> list[str]:
    """`key: old -> new` for each leaf of a stage spec that differs (dotted keys), at most `limit` of them."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    changed = [k for k in sorted(set(flat_old) | set(flat_new)) if flat_old.get(k) != flat_new.get(k)]

    def show(v: Any) -> str:
        text = json.dumps(v, default=str) if v is not None else "(unset)"
        return text if len(text) <= 40 else text[:37] + "..."

    out = [f"{k.removeprefix('options.')}: {show(flat_old.get(k))} -> {show(flat_new.get(k))}" for k in changed[:limit]]
    if len(changed) > limit:
        out.append(f"and {len(changed) - limit} more")
    return out


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def superseded(parent: Path, name: str) -> list[Path]:
    """The outputs of stage `name` that `Stages` set aside in `parent` (recorded as such), newest first."""
    found = (p for p in parent.glob(f"{name}.old-*") if owned.set_aside_record(p) is not None)
    return sorted(found, key=lambda p: p.name, reverse=True)


def planned_stages(cfg: RunConfig) -> int:
    """How many stages one seed of `cfg` runs (for the [k/N] counter)."""
    arms = list(cfg.arms)
    needs = {arm_table.TRAINED_ARMS[a][0] for a in arms if a in arm_table.TRAINED_ARMS}
    warm = cfg.task.kind == "synthetic" and cfg.warmup.enabled
    n = 1 + warm + sum(len(arm_table.SOURCE_STAGES[s]) for s in needs)
    n += sum(a in arm_table.TRAINED_ARMS for a in arms) + ("direct_rl" in arms)
    n += len([a for a in arms if a in arm_table.TRAINED_ARMS or a in ("base", "direct_rl")]) + (
        warm and cfg.eval.raw_model
    )
    return n


def _decided(options: Any) -> Any:
    """A stage's options as hashed: without the bookkeeping options (UNHASHED), an unset max_prompt_tokens or
    max_row_bytes (options added later: unset, they leave the hash of a finished stage as it was) and the engine
    blocks' backend options (config.without_engine_options)."""
    from sftadapt.config import without_engine_options

    data = without_engine_options(_jsonable(options))
    if isinstance(data, dict):
        data = {
            k: v
            for k, v in data.items()
            if k not in UNHASHED and not (k in ("max_prompt_tokens", "max_row_bytes") and v is None)
        }
    return data


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _say(message: str) -> None:
    if os.environ.get("SFTADAPT_QUIET") != "1":
        print(message, flush=True)


# ---------------------------------------------------------------- one seed
def run_seed(
    cfg: RunConfig, seed: int, root: Path, progress: bool = True, clock: _Clock | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """The whole graph for one seed in `root`; returns {arm: {eval results, compute, gap}}."""
    from sftadapt.data import synthetic
    from sftadapt.data.records import write_records
    from sftadapt.data.sources import load_dataset_spec

    stages = Stages(
        root, progress, cfg.keep_checkpoints, keep_superseded=cfg.keep_superseded, clock=clock, dry_run=dry_run
    )
    arms = list(cfg.arms)
    paths = seed_paths(root)

    # ---- data ----------------------------------------------------------------------------------------------
    def make_data(folder: Path) -> dict[str, Any]:
        if cfg.task.kind == "synthetic":
            lo, hi = cfg.task.steps
            expert = synthetic.generate(
                cfg.task.train_problems, seed=seed, steps=(lo, hi), style=cfg.task.expert_style, split="train"
            )
            write_records(folder / "warmup.jsonl", synthetic.warmup_set(cfg.warmup.problems, seed=seed))
        else:
            loaded = load_dataset_spec(
                cfg.task.data, limit=cfg.task.train_problems, require_solution=True, fields=cfg.task.fields
            )
            expert = loaded.problems
        write_records(folder / "expert.jsonl", expert)
        return {"expert_rows": len(expert), "expert": str(folder / "expert.jsonl")}

    stages.run(
        "data",
        {
            "task": cfg.task,
            "warmup_problems": cfg.warmup.problems,
            "seed": seed,
            "generator": getattr(synthetic, "VERSION", ""),
        },
        [],
        make_data,
    )

    # ---- warm-up: the target ---------------------------------------------------------------------------------
    from sftadapt.train.stage import NoFinalCheckpoint, train

    # the pipeline drops a finished stage's checkpoints: the one transformers writes after the last step
    # (weights + optimizer state, ~1.6 GB for a 135M model) would be written only to be deleted
    last = [] if cfg.keep_checkpoints else [NoFinalCheckpoint()]
    target, target_inputs = cfg.model, ["data"]
    configs = stage_configs(cfg, seed, target, paths)  # validate everything before long work starts
    if "warmup" in configs:
        stages.run("warmup", configs["warmup"], ["data"], lambda folder: train(configs["warmup"], last))
        target, target_inputs = paths["warmup"], ["warmup"]
        configs = stage_configs(cfg, seed, target, paths)
    protocol = configs["protocol"]

    # ---- adapt ----------------------------------------------------------------------------------------------
    needs = {arm_table.TRAINED_ARMS[a][0] for a in arms if a in arm_table.TRAINED_ARMS}
    for source, chain in arm_table.SOURCE_STAGES.items():
        if source not in needs:
            continue
        inputs = target_inputs
        for stage in chain:  # each stage of a source builds on the one before (RL -> synthesis)
            stages.run(
                stage,
                configs[stage],
                inputs,
                lambda f, stage=stage: adapt_stage(stage)(configs[stage], progress=progress),
            )
            inputs = [stage]

    # ---- train ----------------------------------------------------------------------------------------------
    models = {"base": target}
    for arm in arms:
        if arm in arm_table.TRAINED_ARMS:
            source = arm_table.TRAINED_ARMS[arm][0]
            upstream = list(arm_table.SOURCE_STAGES[source][-1:]) or target_inputs
            stages.run(
                f"train_{arm}",
                configs[f"train_{arm}"],
                upstream,
                lambda f, arm=arm: train(configs[f"train_{arm}"], last),
            )
            models[arm] = paths[f"train_{arm}"]
    if "direct_rl" in arms:
        from sftadapt.rl.direct_rl import direct_rl

        stages.run(
            "direct_rl",
            configs["direct_rl"],
            target_inputs,
            lambda f: direct_rl(configs["direct_rl"], progress=progress),
        )
        models["direct_rl"] = paths["direct_rl"]

    # ---- evaluate ---------------------------------------------------------------------------------------------
    from sftadapt.eval.evaluate import evaluate

    to_eval = dict(models)
    if "warmup" in configs and cfg.eval.raw_model:
        to_eval = {"raw": cfg.model, **to_eval}
    eval_dtype = study_eval_dtype(cfg.eval.dtype, to_eval.values())
    for arm, model in to_eval.items():
        upstream = {"raw": [], "base": target_inputs}.get(
            arm, [f"train_{arm}" if arm in arm_table.TRAINED_ARMS else arm]
        )
        stages.run(
            f"eval_{arm}",
            {
                "protocol": protocol.record(),
                "benchmarks": cfg.eval.benchmarks,
                "limit": cfg.eval.limit,
                "dtype": eval_dtype,
                "model": model,
                "engine": dataclasses.asdict(cfg.eval.engine),
                "max_prompt_tokens": cfg.eval.max_prompt_tokens,
            },
            upstream,
            lambda f, model=model: evaluate(
                model,
                cfg.eval.benchmarks,
                protocol,
                f,
                limit=cfg.eval.limit,
                dtype=eval_dtype,
                batch_size=cfg.eval.batch_size,
                engine_config=cfg.eval.engine,
                progress=progress,
                print_summary=False,
                max_prompt_tokens=cfg.eval.max_prompt_tokens,
                report_to=cfg.report_to,
                tracking_dir=tracking_options(cfg)["tracking_dir"],
                online=cfg.online or None,
            ),
        )
    return {
        "stages": stages,
        "models": to_eval,
        "paths": paths,
        "protocol": protocol,
        "folders": stages.folders,
        "plan": stages.plan,
    }


def seed_paths(root: Path) -> dict[str, str]:
    """Every stage folder of one seed, the data files, and each source's training set (`<source>_data`)."""
    stage_names = {s for chain in arm_table.SOURCE_STAGES.values() for s in chain}
    paths = {name: str(root / name) for name in sorted(stage_names) + ["direct_rl", "warmup"]}
    paths.update({f"train_{a}": str(root / f"train_{a}") for a in arm_table.TRAINED_ARMS})
    paths.update({f"{source}_data": str(root / arm_table.train_data(source)) for source in arm_table.SOURCE_STAGES})
    paths.update(
        expert=str(root / "data" / "expert.jsonl"),
        warmup_data=str(root / "data" / "warmup.jsonl"),
        mapper_model=str(root / "mapper_train"),
    )
    return paths


def adapt_stage(stage: str) -> Callable[..., dict[str, Any]]:
    """The function that builds an adapt stage's output from its config (`fn(cfg, progress=...)`)."""
    if stage in ("rewrite", "sdft"):
        from sftadapt.adapt.rewrite import rewrite

        return rewrite
    from sftadapt.adapt.mapper import synthesize, train_mapper

    return train_mapper if stage.startswith("mapper_train") else synthesize


def study_eval_dtype(requested: str, models) -> str:
    """One evaluation dtype for every arm, so that no difference between arms is a difference of precision.

    `auto` is bf16 where the hardware runs it natively, but float32 as soon as one evaluated model carries a
    trained LoRA update (direct RL, LoRA arms): bf16 inference erases most of such an update (models.py,
    `inference_dtype`), and the other arms are then evaluated in float32 beside it."""
    from sftadapt.runtime.models import adapter_of
    from sftadapt.runtime.precision import resolve_dtype

    if requested == "auto" and any(adapter_of(str(m)) for m in models):
        return "float32"
    return resolve_dtype(requested)


# ---------------------------------------------------------------- the whole run
REPORT_OPTIONS = ("metric", "html_samples")


def check_stage_options(cfg: RunConfig) -> None:
    """Build every stage's config for every seed and check the `report` section: the untyped sections (`train`,
    `rewrite`, `mapper_train`, `synth`, `patch`, `direct_rl`, `warmup.train`, `eval.protocol_overrides`,
    `report`) are otherwise only read when their stage starts, after `run` has claimed its folder, written
    run_config.json and run earlier stages. run_seed builds the configs again with the warmed-up target as the
    model, which changes no option's validity. Raises ConfigError."""
    from sftadapt.report.markdown import metric_key

    for seed in cfg.seeds:
        protocol = stage_configs(cfg, seed, cfg.model, seed_paths(Path(cfg.out)))["protocol"]
    unknown = [k for k in cfg.report if k not in REPORT_OPTIONS]
    if unknown:
        raise ConfigError(f"report: unknown option '{unknown[0]}'; known: {', '.join(REPORT_OPTIONS)}")
    try:
        metric_key(str(cfg.report.get("metric", "avg")), protocol.n)
    except ValueError as err:
        raise ConfigError(f"report: {err}") from None
    html = cfg.report.get("html_samples")
    if html is not None and (isinstance(html, bool) or not isinstance(html, int) or html < 1):
        raise ConfigError(f"report: option 'html_samples' = {html!r}: must be an integer >= 1 (or null)")


def run(cfg: RunConfig, progress: bool = True, dry_run: bool = False) -> dict[str, Any]:
    """Run every seed, then the report; returns the report dict (also written to RUN/report/).

    `dry_run`: every config is built and validated and each stage says whether it is cached, would run or would
    re-run (and which options changed); nothing is written. Returns {"plan": {seed: [stage rows]}}."""
    from sftadapt.report.study import write_study_report
    from sftadapt.runtime import offline

    offline.honour(cfg.online)  # `online: true` in the run config = --online
    root = Path(cfg.out)
    check_stage_options(cfg)  # a bad nested option leaves no folder behind
    if dry_run:
        clock = _Clock(planned_stages(cfg) * len(cfg.seeds))
        plan = {}
        for seed in cfg.seeds:
            seed_root = root / f"seed-{seed}" if len(cfg.seeds) > 1 else root
            plan[seed] = run_seed(cfg, seed, seed_root, progress, clock, dry_run=True)["plan"]
        return {"plan": plan}
    from sftadapt.runtime.outdir import claim  # refuse a folder this command did not make

    claim(
        root,
        "run",
        force=getattr(cfg, "force", False),
        new_out="a new run folder (`out:` in the study config, or --set out=DIR)",  # run has neither --out nor --force
        force_option=None,
    )
    write_json(root / "run_config.json", dataclasses.asdict(cfg))
    per_seed = {}
    clock = _Clock(planned_stages(cfg) * len(cfg.seeds))
    for seed in cfg.seeds:
        seed_root = root / f"seed-{seed}" if len(cfg.seeds) > 1 else root
        per_seed[seed] = run_seed(cfg, seed, seed_root, progress, clock)
    study = write_study_report(cfg, per_seed, root / "report")
    study["outputs"] = {seed: r["folders"] for seed, r in per_seed.items()}
    study["elapsed"] = clock.elapsed()
    return study


# ---------------------------------------------------------------- seeds run apart, reported together
# options that may differ between runs whose seeds are pooled: where they ran, which seeds, bookkeeping
POOL_FREE = ("out", "seeds", *UNHASHED)


class _Finished:
    """A finished seed folder read back for the report: its stage results, nothing re-run (Stages' fields that
    write_study_report reads)."""

    def __init__(self, root: Path):
        self.root, self.ran, self.results = root, [], {}
        for meta_path in sorted(root.glob("*/stage.json")):
            meta = stage_record(meta_path, "delete it and re-run `sftadapt run` on that folder to redo the stage")
            if meta.get("status") != "done":
                raise ConfigError(f"{meta_path}: stage {meta_path.parent.name} is {meta.get('status')}, not done")
            self.results[meta_path.parent.name] = meta["result"]


def _seed_folders(folder: Path) -> tuple[RunConfig, dict[int, Path]]:
    config_path = folder / "run_config.json"
    if not config_path.is_file():
        raise ConfigError(f"no such file: {config_path} (pool reads folders that `sftadapt run` wrote)")
    cfg = load_config(RunConfig, config_path)
    roots = {s: folder / f"seed-{s}" for s in cfg.seeds} if len(cfg.seeds) > 1 else {cfg.seeds[0]: folder}
    return cfg, roots


def pool(folders: list[str | Path], out: str | Path) -> dict[str, Any]:
    """One study report over the seeds of several finished runs (the seeds of one study run in separate sittings
    or on separate machines): each folder is a `sftadapt run` output, single-seed or multi-seed. Nothing is
    re-run and no stage hash is checked (those contain each run's own paths); instead every run must have been
    made with the same options apart from POOL_FREE, and every stage must be done. The report (OUT/study.md,
    study.json, study.html) is the one `run` writes, seeds in the order given."""
    from sftadapt.report.study import write_study_report

    first: RunConfig | None = None
    per_seed: dict[int, dict[str, Any]] = {}
    for folder in map(Path, folders):
        cfg, roots = _seed_folders(folder)
        mine = {k: v for k, v in _flatten(_jsonable(cfg)).items() if k.split(".")[0] not in POOL_FREE}
        if first is None:
            first, theirs = cfg, mine
        elif mine != theirs:
            changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise ConfigError(
                f"{folder}: ran with other options than {folders[0]}: "
                + "; ".join(f"{k} {theirs.get(k)!r} -> {mine.get(k)!r}" for k in changed[:6])
            )
        for seed, root in roots.items():
            if seed in per_seed:
                raise ConfigError(f"{folder}: seed {seed} is already in {per_seed[seed]['stages'].root}")
            stages, paths = _Finished(root), seed_paths(root)
            target = paths["warmup"] if "warmup" in stages.results else cfg.model
            where = {"raw": cfg.model, "base": target, "direct_rl": paths["direct_rl"]}
            models = {a: where.get(a) or paths[f"train_{a}"] for a in _evaluated(cfg, stages)}
            per_seed[seed] = {"stages": stages, "models": models, "paths": paths}
    if first is None:
        raise ConfigError("pool: no run folder given")
    return write_study_report(dataclasses.replace(first, seeds=list(per_seed)), per_seed, Path(out))


def _evaluated(cfg: RunConfig, stages: _Finished) -> list[str]:
    """The arms run_seed evaluated, in its order: raw, base, the trained arms, direct RL."""
    missing = [a for a in cfg.arms if f"eval_{a}" not in stages.results]
    if missing:
        raise ConfigError(f"{stages.root}: no finished evaluation of arm(s) {', '.join(missing)}")
    trained = [a for a in cfg.arms if a in arm_table.TRAINED_ARMS]
    order = ["raw", "base", *trained, *(["direct_rl"] if "direct_rl" in cfg.arms else [])]
    return [a for a in order if f"eval_{a}" in stages.results]  # raw: only where the run evaluated it


def load_run_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    return load_config(RunConfig, path, overrides)


def quickstart_config(overrides: list[str] | None = None) -> RunConfig:
    path = CONFIG_DIR / "quickstart.yaml"
    if not path.exists():
        raise ConfigError(f"{path}: the quickstart config is missing (run from a source checkout)")
    return load_run_config(path, overrides)
