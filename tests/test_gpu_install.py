"""The GPU install path (requirements-gpu.txt, `make gpu-install`), resolved for a Linux x86_64 CUDA machine.

Runs `make gpu-resolve`'s script (.ci/gpu_resolve.py: pip's dry run with a JSON report, against PyPI, 30-50 s, no
wheel downloaded whole) once, and checks from the report that the set resolves to Linux x86_64 wheels, that vllm
is the release requirements-gpu.txt pins, that torch is the CUDA build vllm pins (with its nvidia-* libraries in
the set), and that every dependency of sftadapt is there, at pyproject.toml's version except where the GPU set
replaces it on purpose. Without PyPI the resolve is skipped with the reason; under CI (CI set) it fails instead,
since the package index is all CI is promised to reach. The file comparison at the end needs no network.
"""

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "requirements-gpu.txt"
RESOLVE = REPO / ".ci" / "gpu_resolve.py"
# pyproject.toml's pins the GPU set replaces on purpose (requirements-gpu.txt says why): vLLM pins its own CUDA
# torch, and admits no transformers as new as our CPU line's
REPLACED = {"torch", "transformers"}
# what a CUDA build of torch depends on (cuDNN, NCCL, the CUDA toolkit's libraries); PyPI's CPU torch has none
CUDA_LIBS = re.compile(r"nvidia-|cuda-toolkit$")
# the target's marker values (the resolve is for Linux x86_64; the rest come from this interpreter, as in pip)
LINUX_X86_64 = {"platform_system": "Linux", "sys_platform": "linux", "platform_machine": "x86_64", "extra": ""}


def _requirements(lines: list[str]) -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in reqs}


def gpu_file_requirements() -> dict[str, Requirement]:
    """requirements-gpu.txt's requirements by name (comments and blank lines left out)."""
    lines = [line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines()]
    return _requirements([line for line in lines if line])


def project_requirements() -> dict[str, Requirement]:
    """pyproject.toml's [project] dependencies by name."""
    with open(REPO / "pyproject.toml", "rb") as f:
        return _requirements(tomllib.load(f)["project"]["dependencies"])


def _index_unreachable() -> str | None:
    """Why the package index cannot be reached, or None when it answers."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    try:
        urllib.request.urlopen(urllib.request.Request(f"{index}/vllm/", method="HEAD"), timeout=20).close()
    except (urllib.error.URLError, OSError) as exc:
        return f"the package index {index} is unreachable ({exc})"
    return None


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict[str, dict]:
    """The resolve's chosen packages by name: each the report's `install` entry (metadata, download_info)."""
    why = _index_unreachable()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"{why}: CI must reach PyPI to resolve the GPU set")
        pytest.skip(why)
    # `make test` resolves beside its installs (network-bound) and names the report here; it must be newer
    # than the files it resolved, else the test resolves again itself
    given = Path(os.environ.get("SFTADAPT_GPU_RESOLVE_REPORT") or "/nonexistent")
    inputs = [REPO / "requirements-gpu.txt", REPO / "pyproject.toml", RESOLVE]
    if given.is_file() and all(given.stat().st_mtime > f.stat().st_mtime for f in inputs):
        return _chosen(given)
    report = tmp_path_factory.mktemp("gpu-resolve") / "report.json"
    proc = subprocess.run(
        [sys.executable, str(RESOLVE), "--report", str(report)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"the GPU set does not resolve:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return _chosen(report)


def _chosen(report: Path) -> dict[str, dict]:
    install = json.loads(report.read_text())["install"]
    return {canonicalize_name(item["metadata"]["name"]): item for item in install}


def _version(resolved: dict[str, dict], name: str) -> Version:
    assert name in resolved, f"{name} is not in the resolved set"
    return Version(resolved[name]["metadata"]["version"])


def test_the_gpu_set_resolves_to_linux_x86_64_wheels(resolved):
    assert len(resolved) > 50  # vllm alone brings well over a hundred packages
    for name, item in resolved.items():
        filename = item["download_info"]["url"].rsplit("/", 1)[-1]
        assert filename.endswith(".whl"), f"{name}: {filename} is not a wheel"
        platform = filename[: -len(".whl")].rsplit("-", 1)[-1]
        assert platform == "any" or all("x86_64" in p and "linux" in p for p in platform.split(".")), filename


def test_vllm_is_the_pinned_release(resolved):
    (pin,) = gpu_file_requirements()["vllm"].specifier
    assert pin.operator == "==", "requirements-gpu.txt must pin vllm exactly"
    assert _version(resolved, "vllm") == Version(pin.version)


def test_torch_is_the_cuda_build_vllm_pins(resolved):
    vllm_needs = _requirements(resolved["vllm"]["metadata"]["requires_dist"])
    torch = _version(resolved, "torch")
    assert torch in vllm_needs["torch"].specifier, f"torch {torch} is not what vllm asks for"
    assert not torch.local, f"torch {torch}: PyPI's CUDA wheel has no local tag (+cpu builds come from elsewhere)"
    torch_needs = [Requirement(r) for r in resolved["torch"]["metadata"]["requires_dist"]]
    applies = [r for r in torch_needs if r.marker is None or r.marker.evaluate(LINUX_X86_64)]
    cuda = [canonicalize_name(r.name) for r in applies if CUDA_LIBS.match(canonicalize_name(r.name))]
    assert any(n.startswith("nvidia-") for n in cuda), f"torch {torch} depends on no nvidia-* library: a CPU build"
    missing = [n for n in cuda if n not in resolved]
    assert not missing, f"torch's CUDA libraries are not in the set: {missing}"


def test_every_sftadapt_dependency_is_in_the_set(resolved):
    for name, req in project_requirements().items():
        version = _version(resolved, name)
        if name not in REPLACED:
            assert version in req.specifier, f"{name} {version} does not satisfy pyproject.toml's {req}"
    # the replaced ones: the version requirements-gpu.txt pins, and within what vllm admits
    vllm_needs = _requirements(resolved["vllm"]["metadata"]["requires_dist"])
    transformers = _version(resolved, "transformers")
    assert transformers in gpu_file_requirements()["transformers"].specifier
    assert transformers in vllm_needs["transformers"].specifier


def test_the_gpu_file_repeats_pyprojects_pins_and_lists_no_cpu_torch():
    gpu, project = gpu_file_requirements(), project_requirements()
    assert "torch" not in gpu, "torch comes from vllm's own pin; a torch line here would fight it"
    for name, req in project.items():
        if name in REPLACED:
            continue
        assert name in gpu, f"requirements-gpu.txt lacks sftadapt's dependency {req}"
        assert gpu[name].specifier == req.specifier, f"requirements-gpu.txt has {gpu[name]}, pyproject.toml {req}"
    assert str(gpu["transformers"].specifier) != str(project["transformers"].specifier)  # else drop the override
