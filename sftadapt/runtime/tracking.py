"""Experiment tracking for every stage: `report_to: none | tensorboard | wandb | trackio | mlflow`.

Two kinds of stage report to a tracker, each through the tracker's own library:

- **Stages that sample or score** (rewrite, map synthesize, eval) open a `Tracker` when they start, log their
  stage metrics (self/guided/expert shares and the gap; gate pass rate, gate reasons and the mapped share;
  accuracy per benchmark) when they end, and close it. `open_tracker(...)` returns a no-op tracker for `none`.
- **Trainers** (train, map train = mapper RL, direct RL) hand `report_to` to transformers / TRL, whose own
  callbacks log every step (loss, nll, IS weights; reward, gate pass rate and gate reasons for GRPO).
  `trainer_env(...)` sets, for the length of the training only, where those callbacks write and that they stay
  offline; `trainer_args(...)` gives the run name and project for the trainer's arguments.

Where it goes: `tracking_dir` (default `<out>/tracking`; `sftadapt run` uses `RUN/tracking` for every stage), one
run per stage named after the stage folder (`rewrite`, `train_sft`, `seed-1/eval_base`, ...):

| tracker | written to | offline (the default: no `--online`, no `online: true`) |
|---|---|---|
| tensorboard | `<tracking_dir>/<run>/events.out.tfevents.*` | always local |
| wandb | `<tracking_dir>/wandb/offline-run-*` | `WANDB_MODE=offline`: nothing is sent; `wandb sync` uploads later |
| trackio | `<tracking_dir>/trackio/` (its local SQLite store, `TRACKIO_DIR`) | no Space: a `TRACKIO_SPACE_ID` in the environment is ignored |
| mlflow | `<tracking_dir>/mlruns` (a `file:` tracking URI) | always that local store, whatever `MLFLOW_TRACKING_URI` says |

Online, wandb and trackio use their usual servers/Spaces (as configured by their own environment variables)
and mlflow keeps `MLFLOW_TRACKING_URI` if one is set.

A tracker whose package is missing is one line at config validation, before any work:
`report_to = mlflow: the mlflow package is not installed; pip install 'sftadapt[mlflow]'`.

    from sftadapt.runtime import tracking
    with tracking.open_tracker("tensorboard", out="runs/rewrite", tracking_dir=None, config=cfg_dict) as t:
        t.summary({"origins/self_share": 0.4, "gap/delta": 0.8})
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

TRACKERS = ("none", "tensorboard", "wandb", "trackio", "mlflow")
# tracker -> (module that must be importable, the extra that installs it)
PACKAGES = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "trackio": ("trackio", "trackio"),
    "mlflow": ("mlflow", "mlflow"),
}
PROJECT = "sftadapt"
FOLDER = "tracking"  # the default tracking folder inside a stage's output folder


def check_report_to(report_to: str, field: str = "report_to") -> None:
    """A known tracker whose package is installed, else ValueError (one line naming the extra to install)."""
    if report_to not in TRACKERS:
        raise ValueError(f"{field} = '{report_to}': choose one of {', '.join(TRACKERS)}")
    if report_to == "none":
        return
    module, extra = PACKAGES[report_to]
    if importlib.util.find_spec(module) is None:
        raise ValueError(
            f"{field} = {report_to}: the {module} package is not installed; pip install 'sftadapt[{extra}]'"
        )


def tracking_folder(out: str | os.PathLike, tracking_dir: str | os.PathLike | None) -> Path:
    return Path(tracking_dir) if tracking_dir else Path(out) / FOLDER


def run_name(out: str | os.PathLike, tracking_dir: str | os.PathLike | None) -> str:
    """The stage's run name: its folder relative to the folder that holds the tracking dir (`seed-1/rewrite`
    under `sftadapt run`), else the output folder's own name."""
    out = Path(out).resolve()
    if tracking_dir:
        try:
            rel = out.relative_to(Path(tracking_dir).resolve().parent)
            if str(rel) not in ("", "."):
                return rel.as_posix()
        except ValueError:
            pass
    return out.name or "stage"


def _online(online: bool | None) -> bool:
    if online is not None:
        return online
    from sftadapt.runtime import offline

    return not offline.is_offline()


def scalars(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested numbers flattened to `a/b` keys; strings, None, NaN and lists are left out (trackers take scalars)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(scalars(value, name + "/"))
        elif isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            out[name] = float(value)
    return out


# ---------------------------------------------------------------- the options every stage config carries
def report_to_option() -> Any:
    from sftadapt.config import option

    return option(
        "none",
        help="experiment tracker: " + " | ".join(TRACKERS) + " (the package must be installed: "
        "pip install 'sftadapt[NAME]'; offline unless online)",
    )


def tracking_dir_option() -> Any:
    from sftadapt.config import option

    return option(None, help="tracker output folder (default: <out>/tracking)")


def online_option() -> Any:
    from sftadapt.config import option

    return option(
        False,
        help="allow the network (hub downloads and pushes, online trackers, remote engine servers): "
        "the YAML twin of --online",
    )


# ---------------------------------------------------------------- the stage tracker
class Tracker:
    """One stage's run in one tracker: `log(metrics, step)`, `summary(metrics)`, `close()` (also a context
    manager). The base class is the `none` tracker: it records nothing."""

    kind = "none"

    def __init__(self, folder: Path | None = None, name: str = "stage"):
        self.folder, self.name = folder, name
        self.step = 0

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        values = scalars(metrics)
        if values:
            self.step = self.step + 1 if step is None else step
            self._log(values, self.step)

    def summary(self, metrics: Mapping[str, Any]) -> None:
        """The stage's final metrics (logged at the last step, and as the run's summary where the tracker has one)."""
        values = scalars(metrics)
        if values:
            self._summary(values, self.step)

    def close(self) -> None:
        pass

    def _log(self, values: dict[str, float], step: int) -> None:
        pass

    def _summary(self, values: dict[str, float], step: int) -> None:
        self._log(values, step)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _TensorBoard(Tracker):
    kind = "tensorboard"

    def __init__(self, folder: Path, name: str, config: dict[str, Any], online: bool):
        super().__init__(folder, name)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder / name))
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```", 0)

    def _log(self, values, step):
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self):
        self.writer.close()


class _Wandb(Tracker):
    kind = "wandb"

    def __init__(self, folder: Path, name: str, config: dict[str, Any], online: bool):
        super().__init__(folder, name)
        import wandb

        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", PROJECT),
            name=name,
            dir=str(folder),
            config=config,
            mode="online" if online else "offline",
            reinit="create_new",
        )

    def _log(self, values, step):
        self.run.log(values, step=step)

    def _summary(self, values, step):
        self.run.log(values, step=step)
        self.run.summary.update(values)

    def close(self):
        self.run.finish()


class _Trackio(Tracker):
    kind = "trackio"

    def __init__(self, folder: Path, name: str, config: dict[str, Any], online: bool):
        super().__init__(folder, name)
        with _trackio_env(folder, online):
            import trackio

            self.trackio = trackio
            # no CPU/GPU sampler thread: a stage's metrics are what we log
            self.run = trackio.init(
                project=PROJECT,
                name=name,
                config=config,
                resume="allow",
                auto_log_cpu=False,
                auto_log_gpu=False,
                **({} if online else {"space_id": None}),
            )
        self.online = online

    def _log(self, values, step):
        with _trackio_env(self.folder, self.online):
            self.run.log(values, step=step)

    def close(self):
        with _trackio_env(self.folder, self.online):
            self.run.finish()


class _MLflow(Tracker):
    kind = "mlflow"

    def __init__(self, folder: Path, name: str, config: dict[str, Any], online: bool):
        super().__init__(folder, name)
        _mlflow_offline(online)
        from mlflow.tracking import MlflowClient

        # a client of its own: no global tracking URI or active run is changed in this process
        with _patched_env(_MLFLOW_FILE_STORE):
            self.client = MlflowClient(tracking_uri=mlflow_uri(folder, online))
        experiment = self.client.get_experiment_by_name(PROJECT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(PROJECT)
        self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
        for key, value in list(_params(config).items())[:200]:
            self.client.log_param(self.run_id, _mlflow_key(key), value)

    def _log(self, values, step):
        for key, value in values.items():
            self.client.log_metric(self.run_id, _mlflow_key(key), value, step=step)

    def close(self):
        self.client.set_terminated(self.run_id)


def _params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A config as flat `a/b` -> text (mlflow params are strings of at most a few hundred characters)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_params(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = (value if isinstance(value, str) else json.dumps(value, default=str))[:500]
    return out


def _mlflow_key(key: str) -> str:
    # mlflow keys take alphanumerics, _ - . / and spaces only (gate reasons and benchmark names are fine;
    # '@' of avg@n is not)
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


# mlflow 3 keeps its `file:` store in maintenance mode and refuses it unless asked; it is the one store that
# needs no database package (mlflow-skinny has none) and it stays inside the run folder
_MLFLOW_FILE_STORE = {"MLFLOW_ALLOW_FILE_STORE": "true"}


def _mlflow_offline(online: bool) -> None:
    """mlflow's usage telemetry looks up its own server from a background thread, whatever the tracking URI:
    offline, it is switched off for the rest of the process (the thread reads the variable when it runs)."""
    if not online:
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"


def mlflow_uri(folder: Path, online: bool) -> str:
    if online and os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return (folder / "mlruns").resolve().as_uri()


_KINDS = {"tensorboard": _TensorBoard, "wandb": _Wandb, "trackio": _Trackio, "mlflow": _MLflow}


def open_tracker(
    report_to: str,
    *,
    out: str | os.PathLike,
    tracking_dir: str | os.PathLike | None = None,
    config: Mapping[str, Any] | None = None,
    online: bool | None = None,
    name: str | None = None,
) -> Tracker:
    """The stage's tracker (`none`: one that records nothing). `online` None = what `--online` decided."""
    check_report_to(report_to)
    if report_to == "none":
        return Tracker()
    folder = tracking_folder(out, tracking_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return _KINDS[report_to](folder, name or run_name(out, tracking_dir), dict(config or {}), _online(online))


# ---------------------------------------------------------------- what each stage logs
def rewrite_metrics(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Rewrite (Mind the Gap and its baselines): each origin's share of the rows, the gap, stage counts, cost."""
    rows = max(int(summary.get("rows") or 0), 1)
    origins = {
        o: {"rows": v["rows"], "share": v["rows"] / rows, "target_logprob_mean": v["target_logprob_mean"]}
        for o, v in (summary.get("origins") or {}).items()
    }
    return {
        "rows": summary.get("rows"),
        "problems": summary.get("problems"),
        "origins": origins,
        "gap": summary.get("gap") or {},
        "self_pass_rate_mean": summary.get("self_pass_rate_mean"),
        "counts": summary.get("counts") or {},
        "rejected_input_rows": summary.get("rejected_input_rows"),
        "compute": summary.get("totals") or {},
    }


def synthesis_metrics(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Map synthesize (DART / prompted rewrite): gate pass rate, each gate reason's rate, mapped share, gap."""
    keys = (
        "rows",
        "rollouts",
        "gate_pass_rate",
        "mapped_rate",
        "fallback_rate",
        "r_align_kept_mean",
        "rejected_input_rows",
    )
    return {
        **{k: summary.get(k) for k in keys},
        "gate_reasons": summary.get("gate_failures") or {},
        "gap": summary.get("gap") or {},
        "compute": summary.get("compute") or {},
    }


def eval_metrics(results: Mapping[str, Any]) -> dict[str, Any]:
    """Eval: per benchmark every metric's value and 95% interval, verdict counts, truncations, tokens."""
    out: dict[str, Any] = {}
    for name, r in (results.get("benchmarks") or {}).items():
        out[name] = {k: v for k, v in r.items() if k != "per_problem"}
    return out


# ---------------------------------------------------------------- trainers (transformers / TRL callbacks)
@contextlib.contextmanager
def _patched_env(values: Mapping[str, str | None]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _trackio_env(folder: Path, online: bool):
    values: dict[str, str | None] = {"TRACKIO_DIR": str(folder / "trackio")}
    if not online:
        values["TRACKIO_SPACE_ID"] = None  # a Space named in the environment is the network
    _note_trackio_dir(folder / "trackio")
    return _patched_env(values)


def _note_trackio_dir(wanted: Path) -> None:
    """trackio reads TRACKIO_DIR once, when it is first imported: a second stage of one process that wants
    another folder writes where the first one chose. Say so once rather than pretend."""
    import sys
    import warnings

    utils = sys.modules.get("trackio.utils")
    chosen = getattr(utils, "TRACKIO_DIR", None)
    if chosen is not None and Path(chosen).resolve() != wanted.resolve() and not _TRACKIO_WARNED:
        _TRACKIO_WARNED.append(str(chosen))
        warnings.warn(
            f"trackio writes to {chosen} in this process (trackio fixes its folder when first imported), not {wanted}",
            stacklevel=3,
        )


_TRACKIO_WARNED: list[str] = []


@contextlib.contextmanager
def trainer_env(
    report_to: str, *, out: str | os.PathLike, tracking_dir: str | os.PathLike | None = None, online: bool | None = None
) -> Iterator[None]:
    """While a trainer is built and trains: its tracker callback writes into the tracking folder and stays
    offline unless online (environment variables the transformers callbacks read, restored afterwards)."""
    if report_to == "none":
        yield
        return
    check_report_to(report_to)
    # (no folder is made here: the stage claims its output folder after this, and the callbacks make their own)
    folder, name, online = tracking_folder(out, tracking_dir), run_name(out, tracking_dir), _online(online)
    values: dict[str, str | None] = {}
    if report_to == "tensorboard":
        values["TENSORBOARD_LOGGING_DIR"] = str(folder / name)
    elif report_to == "wandb":
        values.update(WANDB_DIR=str(folder), WANDB_PROJECT=os.environ.get("WANDB_PROJECT", PROJECT))
        if not online:
            values["WANDB_MODE"] = "offline"
    elif report_to == "trackio":
        values["TRACKIO_DIR"] = str(folder / "trackio")
        _note_trackio_dir(folder / "trackio")
        if not online:
            values["TRACKIO_SPACE_ID"] = None
    elif report_to == "mlflow":
        _mlflow_offline(online)
        values.update(
            MLFLOW_TRACKING_URI=mlflow_uri(folder, online), MLFLOW_EXPERIMENT_NAME=PROJECT, **_MLFLOW_FILE_STORE
        )
    with _patched_env(values):
        yield


def trainer_args(
    report_to: str, *, out: str | os.PathLike, tracking_dir: str | os.PathLike | None = None, online: bool | None = None
) -> dict[str, Any]:
    """TrainingArguments / GRPOConfig fields for `report_to`: the integration, the run name, the project."""
    if report_to == "none":
        return {"report_to": []}
    tracking_folder(out, tracking_dir).mkdir(parents=True, exist_ok=True)  # wandb needs WANDB_DIR to exist
    args: dict[str, Any] = {"report_to": [report_to], "run_name": run_name(out, tracking_dir)}
    if report_to == "trackio":
        args["project"] = PROJECT
        if not _online(online):
            args["trackio_static_space_id"] = False  # never make a Space after training when offline
    return args
