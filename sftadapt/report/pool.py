"""`sftadapt pool RUN... --out DIR`: one study report over seeds run apart (other sittings, other machines).

Each folder is a finished `sftadapt run` output, single- or multi-seed. Nothing is re-run and no stage hash is
checked (those contain each run's own paths); instead every run must have been made with the same options apart
from POOL_FREE, and every stage must be done. The report is the one `run` writes, seeds in the order given.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from sftadapt import arms as arm_table
from sftadapt.config import ConfigError, load_config
from sftadapt.run_config import run_config_class, seed_paths
from sftadapt.runtime.stage_cache import UNHASHED, _flatten, _jsonable, stage_record

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


def _seed_folders(folder: Path) -> tuple[Any, dict[int, Path]]:
    config_path = folder / "run_config.json"
    if not config_path.is_file():
        raise ConfigError(f"no such file: {config_path} (pool reads folders that `sftadapt run` wrote)")
    cfg = load_config(run_config_class(), config_path)
    roots = {s: folder / f"seed-{s}" for s in cfg.seeds} if len(cfg.seeds) > 1 else {cfg.seeds[0]: folder}
    return cfg, roots


def pool(folders: list[str | Path], out: str | Path) -> dict[str, Any]:
    """One study report over the seeds of several finished runs (the seeds of one study run in separate sittings
    or on separate machines): each folder is a `sftadapt run` output, single-seed or multi-seed. Nothing is
    re-run and no stage hash is checked (those contain each run's own paths); instead every run must have been
    made with the same options apart from POOL_FREE, and every stage must be done. The report (OUT/study.md,
    study.json, study.html) is the one `run` writes, seeds in the order given."""
    from sftadapt.report.study import write_study_report

    first: Any = None
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
            where = {"raw": cfg.model, "base": target}
            rl = {a: str(Path(paths["direct_rl"]).with_name(a)) for a in cfg.arms if arm_table.is_direct_rl(a)}
            models = {a: where.get(a) or rl.get(a) or paths[f"train_{a}"] for a in _evaluated(cfg, stages)}
            per_seed[seed] = {"stages": stages, "models": models, "paths": paths}
    if first is None:
        raise ConfigError("pool: no run folder given")
    return write_study_report(dataclasses.replace(first, seeds=list(per_seed)), per_seed, Path(out))


def _evaluated(cfg: Any, stages: _Finished) -> list[str]:
    """The arms run_seed evaluated, in its order: raw, base, the trained arms, direct RL (each budget)."""
    missing = [a for a in cfg.arms if f"eval_{a}" not in stages.results]
    if missing:
        raise ConfigError(f"{stages.root}: no finished evaluation of arm(s) {', '.join(missing)}")
    trained = [a for a in cfg.arms if a in arm_table.TRAINED_ARMS]
    order = ["raw", "base", *trained, *[a for a in cfg.arms if arm_table.is_direct_rl(a)]]
    return [a for a in order if f"eval_{a}" in stages.results]  # raw: only where the run evaluated it
