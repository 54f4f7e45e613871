"""A registry stage's `run` on several processes through `accelerate launch`: what `launcher.kind: accelerate`
means in `sftadapt run` (the train arms and the warm-up, the mapper's RL, direct RL).

The parent (`run_stage`) writes the stage's name and its whole config (`config_dict`, which the stage's config
class rebuilds with `config.build_config`) to `OUT/launch.json`, then runs

    accelerate launch --num_processes N [--config_file F] [launcher.args] -m sftadapt.runtime.launch OUT/launch.json

streaming its output to the console and to `OUT/launch.log`. Without a config file it asks for plain DDP
(`--multi_gpu`): on a machine without CUDA the trainers set `use_cpu`, and accelerate then joins the ranks
with gloo over the CPU; with CUDA they use NCCL. Every rank (`main`) applies the network rule first, as every
entry point does (runtime/offline.py: offline unless the parent was `--online`, which passes through), rebuilds
the config, and calls the stage's `run`; rank 0 writes the summary to `OUT/launch_summary.json`, which the
parent reads and returns, so `sftadapt run`'s stage cache, logs, resume and report see what an inline stage
returns (plus `processes`). A rank that fails ends the launch (torch's elastic agent stops the others); the
parent then raises one `LaunchError` naming the stage, the rank that failed first and how, and the log. The
trainers resume from their last checkpoint, so running the stage again continues where the lost rank stopped.

    from sftadapt.runtime import launch
    summary = launch.run_stage("train", cfg, progress=True, final_checkpoint=False)
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

LAUNCH_FILE = "launch.json"
SUMMARY_FILE = "launch_summary.json"
LOG_FILE = "launch.log"
ENTRY = "sftadapt.runtime.launch"


class LaunchError(ValueError):
    """A launched stage failed on some rank. A ValueError so that the command prints it as one line (with the
    log to read) rather than the parent's traceback, which says nothing about the rank."""


def wanted(cfg: Any) -> bool:
    """True when the stage's config asks to be started through accelerate (`launcher.kind: accelerate`)."""
    return getattr(getattr(cfg, "launcher", None), "kind", "inline") == "accelerate"


def run(stage: str, cfg: Any, inline: Any, progress: bool = True, **kwargs: Any) -> dict[str, Any]:
    """Registry stage `stage` with `cfg`: `inline(cfg, progress=..., **kwargs)` in this process, or, where its
    `launcher` says accelerate, the same run on several processes (run_stage); either way the same summary
    reaches the caller (`sftadapt run`'s stage cache and report, a stage command's echo). Inside a launch
    already (WORLD_SIZE set: `accelerate launch -m sftadapt.cli ...`) it runs on this rank."""
    if wanted(cfg) and "WORLD_SIZE" not in os.environ:
        return run_stage(stage, cfg, progress, **kwargs)
    return inline(cfg, progress=progress, **kwargs)


def run_stage(stage: str, cfg: Any, progress: bool = True, **kwargs: Any) -> dict[str, Any]:
    """Run registry stage `stage` with `cfg` on `cfg.launcher.num_processes` processes; its summary (rank 0's,
    with `processes`). `kwargs` (JSON values) go to the stage's `run` as they would inline."""
    from sftadapt.config import config_dict
    from sftadapt.data.records import write_json
    from sftadapt.runtime import offline

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    summary_path, log_path = out / SUMMARY_FILE, out / LOG_FILE
    summary_path.unlink(missing_ok=True)  # a summary left by an earlier launch must not pass for this one's
    spec = {"stage": stage, "config": config_dict(cfg), "progress": progress, "kwargs": kwargs}
    write_json(out / LAUNCH_FILE, spec)
    cmd = command(cfg.launcher, out / LAUNCH_FILE, online=not offline.is_offline())
    code = _stream(cmd, log_path, quiet=not progress)
    if code != 0:
        raise LaunchError(failure_message(stage, code, log_path))
    if not summary_path.is_file():
        raise LaunchError(f"stage {stage}: accelerate launch ended without rank 0's summary; see {log_path}")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    return {**summary, "processes": cfg.launcher.num_processes}


def command(launcher: Any, spec_file: Path, online: bool = False) -> list[str]:
    """The `accelerate launch` command line for `launcher` (a LauncherConfig) and the spec file."""
    import torch

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(launcher.num_processes)]
    if launcher.config_file:
        cmd += ["--config_file", launcher.config_file]
    else:
        # no config: one machine, plain data parallel (gloo on CPUs, NCCL on GPUs), and no warnings about
        # the values accelerate would otherwise guess; a free port, so two launches on one machine do not meet
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if launcher.num_processes > 1:
            cmd += ["--multi_gpu"]
        if not any(a.startswith("--main_process_port") for a in launcher.args):
            cmd += ["--main_process_port", str(_free_port())]
        if not torch.cuda.is_available() and "--num_cpu_threads_per_process" not in launcher.args:
            # accelerate gives each rank one thread unless told: share the cores instead (OMP_NUM_THREADS wins)
            share = max(1, (os.cpu_count() or 1) // launcher.num_processes)
            cmd += ["--num_cpu_threads_per_process", os.environ.get("OMP_NUM_THREADS") or str(share)]
    cmd += [*launcher.args, "-m", ENTRY, str(spec_file)]
    return cmd + (["--online"] if online else [])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stream(cmd: list[str], log_path: Path, quiet: bool = False) -> int:
    """Run `cmd`, copying its output (stdout and stderr together, progress bars included) to our stdout and to
    `log_path`; its exit code."""
    with open(log_path, "wb") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(65536):
            log.write(chunk)
            if not quiet:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
        return proc.wait()


def failure_message(stage: str, code: int, log_path: Path) -> str:
    """One line: the stage, the rank that failed first and how (torch's elastic summary in the log), the
    error a rank printed, and the log to read."""
    text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
    root = text.split("Root Cause", 1)[1] if "Root Cause" in text else ""
    rank = re.search(r"rank\s*:\s*(\d+)", root)
    exit_code = re.search(r"exitcode\s*:\s*(-?\d+)", root)
    how = ""
    if exit_code and int(exit_code.group(1)) < 0:
        number = -int(exit_code.group(1))
        how = f"killed by signal {number} ({signal.Signals(number).name})" if number in _SIGNALS else ""
    elif exit_code:
        how = f"exit code {exit_code.group(1)}"
    who = f"rank {rank.group(1)} failed first ({how or 'see the log'})" if rank else "a rank failed"
    errors = [line.strip() for line in text.splitlines() if line.strip().startswith("error:")]
    said = f"; it said: {errors[-1]}" if errors else ""
    return f"stage {stage}: accelerate launch failed (exit {code}): {who}{said}; the whole output is in {log_path}"


_SIGNALS = {s.value for s in signal.Signals}


# ---------------------------------------------------------------- every rank
def main(argv: list[str]) -> None:
    """`python -m sftadapt.runtime.launch SPEC.json [--online]`: what each rank of a launch runs."""
    import argparse

    parser = argparse.ArgumentParser(prog=ENTRY, description="one rank of a launched sftadapt stage")
    parser.add_argument("spec", help=f"the {LAUNCH_FILE} the launching `sftadapt run` wrote")
    parser.add_argument("--online", action="store_true", help="allow hub downloads (default: offline)")
    ns = parser.parse_args(argv)
    from sftadapt.runtime import offline  # first, as on every entry point: offline unless --online

    offline.apply(ns.online)
    from sftadapt import registry
    from sftadapt.config import build_config
    from sftadapt.data.records import write_json
    from sftadapt.runtime.user_errors import one_line

    spec = json.loads(Path(ns.spec).read_text(encoding="utf-8"))
    stage = registry.load(spec["stage"])
    cfg = one_line(lambda: build_config(stage.config, spec["config"], spec["stage"]))
    # what the user can fix is one `error:` line, which the parent finds and repeats
    summary = one_line(lambda: stage.run(cfg, progress=spec.get("progress", True), **spec.get("kwargs", {})))
    if main_process():
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        write_json(Path(cfg.out) / SUMMARY_FILE, {**summary, "processes": processes})


def main_process() -> bool:
    """Whether this process is RANK 0 of a launch, or runs without a launcher: the one that writes what all
    ranks share."""
    return int(os.environ.get("RANK", "0")) == 0


if __name__ == "__main__":
    main(sys.argv[1:])
