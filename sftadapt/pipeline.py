"""`sftadapt run CONFIG.yaml`: the whole study as one cached stage graph, and `sftadapt quickstart`.

    data ─► (warm-up) ─► eval base
      │   (select: the training problems by the target's pass rate, with task.select_pool)
      ├─► rewrite (Mind the Gap) ────────────► train DR+SFT, DR+DFT, DR+IS ─► eval
      ├─► sdft (one prompted rewrite) ───────► train SDFT+SFT ──────────────► eval
      ├─► mapper RL ─► synthesize ───────────► train DART+SFT (+ fallback ablations) ─► eval
      ├─► synthesize (untrained mapper) ─────► train PR best-of-k+SFT (+ ablation) ──► eval
      ├─► mapper RL (Patch reward) ─► synth. ► train Patch+SFT ─────────────► eval
      ├─► expert set ────────────────────────► train SFT, DFT ──────────────► eval
      └─► direct GRPO on the target ────────────────────────────────────────► eval
                                                                        ─► report (+ compute per arm)

The graph is read from two tables: the stage registry (registry.py: each stage's config class, its options
section in the run config, and the steps that build a training set, e.g. `rewrite` and `sdft` from the rewrite
stage) and the arms (arms.py: each arm's training set, loss and training options). Which steps run follows from
the arms. Each step's config is its stage's defaults <- its run config sections <- what the step fixes <- the
wiring (target model, expert set, seed, output folder), all built and validated before any work starts.

Every stage lives in `RUN/<stage>/` and is cached by the hash of its options and inputs
(runtime/stage_cache.py): re-running the same config skips finished stages, a changed option redoes that stage
and what depends on it, and a killed run resumes inside the stage that was running.

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
import os
import typing
from pathlib import Path
from typing import Any

from sftadapt import arms as arm_table
from sftadapt import registry
from sftadapt.config import ConfigError, build_config
from sftadapt.data.records import write_json
from sftadapt.report.pool import pool  # noqa: F401 - `sftadapt pool`, importable from here as before
from sftadapt.run_config import (  # noqa: F401 - the run config's names, where users import them from
    CONFIG_DIR,
    RunConfig,
    StudyEvalConfig,
    TaskConfig,
    WarmupConfig,
    load_run_config,
    quickstart_config,
    seed_paths,
)
from sftadapt.runtime import launch
from sftadapt.runtime.stage_cache import UNHASHED, Clock, Stages, _decided, spec_changes, stage_record  # noqa: F401

EvalConfig = StudyEvalConfig  # the `eval:` section's class under its older name


# ---------------------------------------------------------------- stage configs, validated up front
def stage_configs(cfg, seed: int, target: str, paths: dict[str, str]) -> dict[str, Any]:
    """Every step's config object for one seed, built (and so validated) before any work starts: the registry's
    source steps, one train step per trained arm, the warm-up, direct RL and the evaluation (`eval`, with the
    resolved `protocol`)."""
    out: dict[str, Any] = {}
    for name, (row, step) in registry.step_rows().items():
        fixed = dict(step.fixed)
        for carried_from, key in step.carry:  # an option of another step's sections (Patch's reward weights)
            value = _dotted(_sections(cfg, registry.step_rows()[carried_from][1].sections), key)
            if value is not None:
                fixed = _merge(fixed, _nested(key, value))
        if step.input_key:
            fixed[step.input_key] = paths[step.after]
        out[name] = _step_config(cfg, row.name, step.sections, fixed, seed, target, paths["expert"], paths[name])
    for arm in arm_table.TABLE:
        if arm.source:
            fixed = {**arm.train, "loss": arm.loss, "fallback": arm.fallback}
            data = paths[f"{arm.source}_data"]
            out[f"train_{arm.name}"] = _step_config(
                cfg, "train", ("train",), fixed, seed, target, data, paths[f"train_{arm.name}"]
            )
    if cfg.task.kind == "synthetic" and cfg.warmup.enabled:
        out["warmup"] = _step_config(
            cfg, "train", ("warmup.train",), {"loss": "nll"}, seed, cfg.model, paths["warmup_data"], paths["warmup"]
        )
    out["direct_rl"] = _step_config(cfg, "rl", ("direct_rl",), {}, seed, target, paths["expert"], paths["direct_rl"])
    for name in cfg.arms:  # direct RL at another budget (direct_rl@N): the section with grpo.max_steps = N
        if arm_table.direct_rl_steps(name) is not None:
            fixed = {"grpo": {"max_steps": arm_table.direct_rl_steps(name)}}
            folder = str(Path(paths["direct_rl"]).with_name(name))
            out[name] = _step_config(cfg, "rl", ("direct_rl",), fixed, seed, target, paths["expert"], folder)
    values = {k: v for k, v in dataclasses.asdict(cfg.eval).items() if k not in ("raw_model", "protocol_overrides")}
    values.update(cfg.eval.protocol_changes())
    out["eval"] = build_config(registry.load("eval").config, {**values, **tracking_options(cfg)}, "eval")
    out["protocol"] = out["eval"].resolved_protocol()
    study_precision(cfg, out)
    return out


def study_precision(cfg, configs: dict[str, Any]) -> None:
    """Like for like (docs/precision.md, "One precision per study"): the arms of a study differ in their data and
    method, never in the precision a stage ran in. Rewrites `configs` in place, where this machine needs it:

    - mapper stages: the target scores rewrites (r_align) in float32 under `auto`, and the untrained mapper (the
      target) samples in that dtype, as a trained one does by default (adapt/mapper.py: `scoring_dtype`,
      `synth_dtypes`); the option is spelled out here so that a stage cached from bf16 scoring runs again;
    - training: one compute dtype for the study's SFT-family arms: float32 for all as soon as one arm's loss
      trains in float32 only (`is`); an arm whose explicit options keep it in bf16 is named in a warning.

    Each option is written only where this machine's answer to it differs (precision.spelled_for_study): on an
    AVX2-only CPU, where every stage already runs in float32, every config and its hash stay as they were."""
    _one_mapper_precision(cfg, configs)
    _one_training_dtype(cfg, configs)


def _one_mapper_precision(cfg, configs: dict[str, Any]) -> None:
    from sftadapt.runtime import precision as prec

    steps = registry.step_rows()
    mappers = {name: step for name, (row, step) in steps.items() if row.name in ("map train", "map synthesize")}
    for name in mappers:
        c = configs[name]
        configs[name] = dataclasses.replace(c, dtype=prec.spelled_for_study(c.dtype, prec.scoring_dtype(c.dtype)))
    sources: dict[str, list[str]] = {}
    for a in cfg.arms:
        if a in arm_table.TRAINED_ARMS:
            sources.setdefault(arm_table.TRAINED_ARMS[a][0], []).append(a)
    sampled = {}  # the mapper sampling dtype of each synthesis step the study runs, by the arms that use it
    for name, step in mappers.items():
        if steps[name][0].name == "map synthesize" and step.source in sources:
            c, arms = configs[name], "/".join(sources[step.source])
            if step.input_key != "mapper" or c.mapper_dtype is None:
                sampled[arms] = prec.scoring_dtype(c.dtype)
            else:  # an explicit mapper_dtype: auto loads a LoRA-trained mapper (the default) in float32
                lora = _dotted(dataclasses.asdict(configs[step.after]), "grpo.lora")
                sampled[arms] = "float32" if c.mapper_dtype == "auto" and lora else prec.resolve_dtype(c.mapper_dtype)
    if "sdft" in sources and "sdft" in configs and len(set(sampled.values())) == 1:
        # SDFT's one rewrite is sampled as the mappers sample (its scoring is float32 already: score_dtype)
        c = configs["sdft"]
        configs["sdft"] = dataclasses.replace(c, dtype=prec.spelled_for_study(c.dtype, next(iter(sampled.values()))))
    if len(set(sampled.values())) > 1:
        said = ", ".join(f"{arm} {dtype}" for arm, dtype in sorted(sampled.items()))
        prec.warn_once(
            f"study-mapper-dtype:{said}",
            f"synth: the mappers of this study sample in different precisions ({said}): the arms then differ in "
            "precision as well as in their mapper; leave synth.mapper_dtype unset (docs/precision.md)",
        )


def _one_training_dtype(cfg, configs: dict[str, Any]) -> None:
    from sftadapt.runtime import precision as prec
    from sftadapt.train.losses import LOSSES

    trained = [a for a in arm_table.TABLE if a.source and a.name in cfg.arms]
    computes = {}
    for arm in trained:
        loss = LOSSES.get(arm.loss)
        computes[arm.name] = (configs[f"train_{arm.name}"].precision()[0], bool(loss and loss.float32_only))
    want = prec.study_training_dtype(computes)
    if want is None:
        return
    kept = []
    for arm, (compute, _) in computes.items():
        c = configs[f"train_{arm}"]
        if compute != want and prec.normalize(c.dtype) == "auto":
            c = configs[f"train_{arm}"] = dataclasses.replace(c, dtype=prec.spelled_for_study(c.dtype, want))
        if c.precision()[0] != want:
            kept.append(arm)
    if kept:
        forced = [arm for arm, (_, only) in computes.items() if only]
        prec.warn_once(
            f"study-train-dtype:{kept}",
            f"train: arm(s) {', '.join(kept)} train in bfloat16 (their dtype or weights_dtype say so) while "
            f"{', '.join(forced)} must train in {want} (its loss needs it): the arms then differ in precision as "
            "well as in their loss; use dtype auto or float32 and weights_dtype float32 (docs/precision.md)",
        )


def _step_config(cfg, stage: str, sections, fixed: dict, seed: int, model: str, data: str, folder: str) -> Any:
    """A stage's config for one step: the run's tracker and network switch <- the sections <- `fixed` <- the
    wiring. The run's seed is a default (a section's own seed wins), the rest is the step's."""
    st = registry.load(stage)
    values = _merge({**tracking_options(cfg), **_merge(_nested(st.seed_key, seed), _sections(cfg, sections))}, fixed)
    list_data = typing.get_origin(typing.get_type_hints(st.config)["data"]) is list
    wired = {st.target_key: model, "data": [data] if list_data else data, "out": folder}
    return build_config(st.config, _merge(values, wired), ".".join(sections[-1:]))


def _sections(cfg, sections) -> dict:
    merged: dict = {}
    for section in sections:
        node = cfg
        for part in section.split("."):
            node = getattr(node, part)
        merged = _merge(merged, node)
    return merged


def _nested(key: str, value: Any) -> dict:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def _dotted(values: dict, key: str) -> Any:
    for part in key.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return values


def _merge(values: dict, fixed: dict) -> dict:
    merged = dict(values)
    for key, value in fixed.items():
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    return merged


def tracking_options(cfg) -> dict[str, Any]:
    """What the run hands every stage: the tracker, one tracking folder (RUN/tracking), the network switch."""
    return {
        "report_to": cfg.report_to,
        "tracking_dir": cfg.tracking_dir or str(Path(cfg.out) / "tracking"),
        "online": cfg.online,
    }


def planned_stages(cfg) -> int:
    """How many stages one seed of `cfg` runs (for the [k/N] counter)."""
    arms = list(cfg.arms)
    needs = {arm_table.TRAINED_ARMS[a][0] for a in arms if a in arm_table.TRAINED_ARMS}
    warm = cfg.task.kind == "synthetic" and cfg.warmup.enabled
    n = 1 + warm + (cfg.task.select_pool is not None) + sum(len(arm_table.SOURCE_STAGES[s]) for s in needs)
    n += sum(a in arm_table.TRAINED_ARMS or arm_table.is_direct_rl(a) for a in arms)
    n += len([a for a in arms if a in arm_table.TRAINED_ARMS or a == "base" or arm_table.is_direct_rl(a)]) + (
        warm and cfg.eval.raw_model
    )
    return n


# ---------------------------------------------------------------- one seed
def run_seed(cfg, seed: int, root: Path, progress: bool = True, clock: Clock | None = None, dry_run: bool = False):
    """The whole graph for one seed in `root`; returns {arm: {eval results, compute, gap}}."""
    stages = Stages(
        root, progress, cfg.keep_checkpoints, keep_superseded=cfg.keep_superseded, clock=clock, dry_run=dry_run
    )
    arms = list(cfg.arms)
    paths = seed_paths(root)
    stages.run(
        "data",
        {
            "task": _data_task(cfg.task),
            "warmup_problems": cfg.warmup.problems,
            "seed": seed,
            "generator": _generator_version(),
        },
        [],
        lambda folder: make_data(cfg, seed, folder),
    )

    # ---- warm-up: the target
    train = registry.load("train")
    target, target_inputs = cfg.model, ["data"]
    configs = stage_configs(cfg, seed, target, paths)  # validate everything before long work starts
    if "warmup" in configs:
        stages.run(
            "warmup",
            configs["warmup"],
            ["data"],
            lambda f: launch.run(
                "train", configs["warmup"], train.run, progress, final_checkpoint=cfg.keep_checkpoints
            ),
        )
        target, target_inputs = paths["warmup"], ["warmup"]
        configs = stage_configs(cfg, seed, target, paths)

    # ---- select: the training problems the target solves sometimes (adapt/select.py), when asked
    base_inputs = target_inputs
    if cfg.task.select_pool is not None:
        from sftadapt.adapt import select

        pool_file, folder = str(root / "data" / "pool.jsonl"), root / "select"
        sampling = select.sampling_config(
            cfg.task, seed, target, pool_file, folder, configs["eval"], configs["rewrite"]
        )
        chosen = {k: getattr(cfg.task, k) for k in ("train_problems", "select_pool", "select_k", "select_band")}
        stages.run(
            "select",
            {"sampling": sampling, **chosen},
            sorted({"data", *target_inputs}),
            lambda f: select.run_select(cfg.task, sampling, pool_file, f, progress),
        )
        paths["expert"] = paths["expert_data"] = str(folder / "expert.jsonl")
        target_inputs = [*target_inputs, "select"]
        configs = stage_configs(cfg, seed, target, paths)

    # ---- adapt: the steps of each training set an arm needs
    needs = {arm_table.TRAINED_ARMS[a][0] for a in arms if a in arm_table.TRAINED_ARMS}
    steps = registry.step_rows()
    for source, chain in registry.sources().items():
        inputs = target_inputs
        for step in chain if source in needs else ():
            stage = registry.load(steps[step.name][0].name)
            stages.run(
                step.name,
                configs[step.name],
                inputs,
                lambda f, s=step.name, st=stage: launch.run(steps[s][0].name, configs[s], st.run, progress),
            )
            inputs = [step.name]

    # ---- train each arm, then evaluate it: a finished arm is whole (its scores need its weights only until then),
    # so a run stopped between stages leaves no trained model waiting for its evaluation
    models = {"base": target}
    for arm in arms:
        if arm in arm_table.TRAINED_ARMS:
            models[arm] = paths[f"train_{arm}"]
        elif arm_table.is_direct_rl(arm):
            models[arm] = configs[arm].out
    to_eval = {"raw": cfg.model, **models} if "warmup" in configs and cfg.eval.raw_model else dict(models)
    evaluate = registry.load("eval")
    eval_cfg, protocol = configs["eval"], configs["protocol"]
    dtype = study_eval_dtype(cfg.eval.dtype, to_eval.values(), lora=_lora_arms(configs, models))

    def run_eval(arm: str) -> None:
        model = to_eval[arm]
        upstream = {"raw": [], "base": base_inputs}.get(arm, [f"train_{arm}" if arm in arm_table.TRAINED_ARMS else arm])
        one = dataclasses.replace(eval_cfg, model=model, out=str(root / f"eval_{arm}"), dtype=dtype)
        decided = {
            "protocol": protocol.record(),
            "benchmarks": one.benchmarks,
            "limit": one.limit,
            "dtype": dtype,
            "model": model,
            "engine": dataclasses.asdict(one.engine),
            "max_prompt_tokens": one.max_prompt_tokens,
        }
        stages.run(f"eval_{arm}", decided, upstream, lambda f, one=one: evaluate.run(one, progress=progress))

    for arm in [a for a in ("raw", "base") if a in to_eval]:
        run_eval(arm)
    rl = registry.load("rl")
    for arm in arms:
        if arm in arm_table.TRAINED_ARMS:
            upstream = list(arm_table.SOURCE_STAGES[arm_table.TRAINED_ARMS[arm][0]][-1:]) or target_inputs
            name = f"train_{arm}"
            stages.run(
                name,
                configs[name],
                upstream,
                lambda f, n=name: launch.run(
                    "train", configs[n], train.run, progress, final_checkpoint=cfg.keep_checkpoints
                ),
            )
        elif arm_table.is_direct_rl(arm):  # direct_rl and any direct_rl@N, one stage each
            stages.run(
                arm, configs[arm], target_inputs, lambda f, a=arm: launch.run("rl", configs[a], rl.run, progress)
            )
        else:
            continue
        run_eval(arm)
    return {
        "stages": stages,
        "models": to_eval,
        "paths": paths,
        "protocol": protocol,
        "folders": stages.folders,
        "plan": stages.plan,
    }


def make_data(cfg, seed: int, folder: Path) -> dict[str, Any]:
    """The seed's expert set (and the warm-up set of the synthetic task) in `folder`; with `task.select_pool`,
    the candidate pool instead of the expert set."""
    from sftadapt.data import synthetic
    from sftadapt.data.records import write_records
    from sftadapt.data.sources import load_dataset_spec

    if cfg.task.kind == "synthetic":
        lo, hi = cfg.task.steps
        pool = cfg.task.select_pool
        expert = synthetic.generate(
            pool or cfg.task.train_problems, seed=seed, steps=(lo, hi), style=cfg.task.expert_style, split="train"
        )
        write_records(folder / "warmup.jsonl", synthetic.warmup_set(cfg.warmup.problems, seed=seed))
        if pool is not None:  # the candidates; the select stage writes the chosen expert set
            write_records(folder / "pool.jsonl", expert)
            return {"pool_rows": len(expert), "pool": str(folder / "pool.jsonl")}
    else:
        expert = load_dataset_spec(
            cfg.task.data, limit=cfg.task.train_problems, require_solution=True, fields=cfg.task.fields
        ).problems
    write_records(folder / "expert.jsonl", expert)
    return {"expert_rows": len(expert), "expert": str(folder / "expert.jsonl")}


def _data_task(task) -> dict[str, Any]:
    """The task options the data stage depends on: how many candidates it draws (select_pool, where set), not how
    the select stage chooses among them (and without select_pool, the options of a run from before it existed)."""
    values = dataclasses.asdict(task)
    for key in ("select_k", "select_band") + (("select_pool",) if task.select_pool is None else ()):
        values.pop(key)
    return values


def _generator_version() -> str:
    from sftadapt.data import synthetic

    return getattr(synthetic, "VERSION", "")


def _lora_arms(configs: dict[str, Any], models: dict[str, str]) -> bool:
    """Whether an arm of the study trains a LoRA update (`lora` in its training or GRPO options), known before
    any arm has trained."""
    for arm in models:
        c = configs.get(f"train_{arm}", configs.get(arm))
        if c is not None and (getattr(c, "lora", False) or getattr(getattr(c, "grpo", None), "lora", False)):
            return True
    return False


def study_eval_dtype(requested: str, models, lora: bool = False) -> str:
    """One evaluation dtype for every arm, so that no difference between arms is a difference of precision.

    `auto` is bf16 where the hardware runs it natively, but float32 as soon as one evaluated model carries a
    trained LoRA update (direct RL, LoRA arms): bf16 inference erases most of such an update (models.py,
    `inference_dtype`), and the other arms are then evaluated in float32 beside it. `lora`: an arm will carry one
    (its model folder need not exist yet)."""
    from sftadapt.runtime.models import adapter_of
    from sftadapt.runtime.precision import resolve_dtype

    if requested == "auto" and (lora or any(adapter_of(str(m)) for m in models)):
        return "float32"
    return resolve_dtype(requested)


# ---------------------------------------------------------------- the whole run
REPORT_OPTIONS = ("metric", "html_samples")


def check_stage_options(cfg) -> None:
    """Build every step's config for every seed and check the `report` section: the mapping sections are
    otherwise only read when their stage starts, after `run` has claimed its folder, written run_config.json and
    run earlier stages. run_seed builds the configs again with the warmed-up target as the model, which changes
    no option's validity. Raises ConfigError."""
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


def run(cfg, progress: bool = True, dry_run: bool = False) -> dict[str, Any]:
    """Run every seed, then the report; returns the report dict (also written to RUN/report/).

    `dry_run`: every config is built and validated and each stage says whether it is cached, would run or would
    re-run (and which options changed); nothing is written. Returns {"plan": {seed: [stage rows]}}."""
    from sftadapt.report.study import write_study_report
    from sftadapt.runtime import offline

    offline.honour(cfg.online)  # `online: true` in the run config = --online
    if not cfg.cpu_bf16:  # before any stage resolves `auto`; launched ranks inherit it
        from sftadapt.runtime.precision import capability

        os.environ["SFTADAPT_CPU_BF16"] = "0"
        capability.cache_clear()  # read once per process: an earlier answer in this process is stale now
    root = Path(cfg.out)
    check_stage_options(cfg)  # a bad nested option leaves no folder behind
    clock = Clock(planned_stages(cfg) * len(cfg.seeds))
    roots = {seed: root / f"seed-{seed}" if len(cfg.seeds) > 1 else root for seed in cfg.seeds}
    if dry_run:
        return {
            "plan": {seed: run_seed(cfg, seed, r, progress, clock, dry_run=True)["plan"] for seed, r in roots.items()}
        }
    from sftadapt.runtime.outdir import claim  # refuse a folder this command did not make

    claim(
        root,
        "run",
        force=getattr(cfg, "force", False),
        new_out="a new run folder (`out:` in the study config, or --set out=DIR)",  # run has neither --out nor --force
        force_option=None,
    )
    write_json(root / "run_config.json", dataclasses.asdict(cfg))
    per_seed = {seed: run_seed(cfg, seed, r, progress, clock) for seed, r in roots.items()}
    study = write_study_report(cfg, per_seed, root / "report")
    study["outputs"] = {seed: r["folders"] for seed, r in per_seed.items()}
    study["elapsed"] = clock.elapsed()
    return study
