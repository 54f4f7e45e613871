"""Resolve the GPU install set (requirements-gpu.txt) for a Linux x86_64 CUDA machine, without installing it.

Runs `pip install --dry-run --ignore-installed --report FILE` for CPython and manylinux x86_64 wheels only,
on requirements-gpu.txt plus sftadapt's own dependencies read from pyproject.toml (sftadapt itself cannot be
resolved as a wheel for another platform: an editable install builds on this machine). pyproject.toml's lines for
the names in GPU_OVERRIDES are left out, since the GPU set replaces them on purpose. The report lists every
package pip chose, with its metadata; tests/test_gpu_install.py checks it.

    python .ci/gpu_resolve.py --report /tmp/gpu-resolve.json [--python-version 3.12]    (make gpu-resolve)

The Python version defaults to the running interpreter's (3.11 or newer, as vLLM requires): pip evaluates the
environment markers of dependencies with the interpreter that runs it, whatever --python-version says, so a 3.12
resolve from a 3.11 interpreter picks its wheels for 3.12 but its marker-gated packages for 3.11 (seen: another
setuptools, and six missing, against the same resolve run by a 3.12 interpreter).

No wheel is downloaded whole: pip reads each wheel's metadata from PyPI's separate metadata file, or where an
index serves none (the one reached from our CI does not) from HTTP range requests into the wheel (`fast-deps`).
Measured there for the whole set (221 packages, 2026-12-07): 30-50 s, ~80 MB of index pages (the JSON pages of
large projects run to several MB) and ~15 MB of ranges (2,300 requests), against several GB for the wheels.
pip's configuration files and PIP_* source options are ignored (PIP_INDEX_URL, the certificate and the timeout
are kept), so a local wheel folder or a version cap of this machine cannot change what a GPU machine gets.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements-gpu.txt"
PYPROJECT = ROOT / "pyproject.toml"
# vLLM's wheels need 3.11 or newer; an older interpreter resolves for this one
FALLBACK_PYTHON_VERSION = "3.12"
# glibc 2.17 (manylinux2014) to 2.35 (Ubuntu 22.04): pip matches the exact platform tags it is given and does
# not widen a single --platform to the older manylinux tags a real machine of that glibc accepts
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(35, 16, -1)] + ["manylinux2014_x86_64"]
# pyproject.toml's pins that the GPU set replaces: torch (vLLM pins its CUDA build) and transformers (the range
# vLLM admits); requirements-gpu.txt says why
GPU_OVERRIDES = ("torch", "transformers")
# options whose PIP_* variables would point pip at this machine's own wheels or caps
_LOCAL_SOURCE_VARS = ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT", "PIP_NO_INDEX", "PIP_REQUIREMENT")


def canonical(name: str) -> str:
    """PEP 503 normal form of a distribution name (`Math_Verify` -> `math-verify`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str:
    """The distribution name at the start of a requirement line (`trl==1.16.0` -> `trl`)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    if not match:
        raise ValueError(f"not a requirement: {line!r}")
    return canonical(match.group(1))


def project_dependencies(pyproject: Path = PYPROJECT) -> list[str]:
    """pyproject.toml's [project] dependencies, as written."""
    with open(pyproject, "rb") as f:
        deps = tomllib.load(f).get("project", {}).get("dependencies")
    if not isinstance(deps, list) or not deps:
        raise SystemExit(f"{pyproject}: [project] dependencies is missing or empty")
    return deps


def resolve_requirements() -> list[str]:
    """pyproject.toml's dependencies less GPU_OVERRIDES; requirements-gpu.txt comes with -r."""
    return [d for d in project_dependencies() if requirement_name(d) not in GPU_OVERRIDES]


def default_python_version() -> str:
    """The running interpreter's X.Y where vLLM has wheels for it, else FALLBACK_PYTHON_VERSION."""
    if sys.version_info >= (3, 11):
        return f"{sys.version_info[0]}.{sys.version_info[1]}"
    return FALLBACK_PYTHON_VERSION


def pip_command(report: Path, python_version: str) -> list[str]:
    """The pip arguments of the resolve (after `pip`)."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    return [
        "install", "--dry-run", "--ignore-installed", "--quiet", "--no-cache-dir", "--use-feature=fast-deps",
        "--report", str(report), "--python-version", python_version, "--implementation", "cp",
        *platforms, "--only-binary=:all:", "-r", str(REQUIREMENTS), *resolve_requirements(),
    ]  # fmt: skip


def pip_environment() -> dict[str, str]:
    """This process's environment with pip's configuration files and local wheel sources left out."""
    env = {k: v for k, v in os.environ.items() if k not in _LOCAL_SOURCE_VARS}
    env["PIP_CONFIG_FILE"] = os.devnull  # pip then reads no configuration file at all
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def summary(report: Path) -> str:
    """One line on what the resolve chose: the package count and the versions that matter."""
    with open(report, encoding="utf-8") as f:
        chosen = {canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in json.load(f)["install"]}
    cuda = sorted(n for n in chosen if n.startswith("nvidia-"))
    shown = ", ".join(f"{n} {chosen[n]}" for n in ("vllm", "torch", "transformers", "trl", "peft") if n in chosen)
    return f"{report}: {len(chosen)} packages resolved: {shown}; {len(cuda)} nvidia-* CUDA packages"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, required=True, help="where pip writes its JSON installation report")
    parser.add_argument("--python-version", default=default_python_version(), help="X.Y of the target python")
    parser.add_argument("--print-command", action="store_true", help="print the pip command and exit")
    args = parser.parse_args(argv)
    report = args.report.resolve()
    pip_args = pip_command(report, args.python_version)
    if args.print_command:
        print("pip " + " ".join(pip_args))
        return 0
    rc = subprocess.run([sys.executable, "-m", "pip", *pip_args], env=pip_environment(), cwd=ROOT).returncode
    if rc == 0:
        print(summary(report))
    return rc


if __name__ == "__main__":
    sys.exit(main())
