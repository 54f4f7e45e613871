"""Keep one seed of a `sftadapt run` study without its model weights, and put it back later - finished or not.

A study's seeds need not run in one sitting: each seed is its own folder (RUN/seed-<s>/) and every finished
stage is found again by its hash (stage.json). What the report needs of a finished seed is small - the data
sets, each stage's record, the training and RL logs, every eval sample - while the models are hundreds of MB.
`pack` writes those small files into one archive; `unpack` restores them; `sftadapt pool` then reports the
restored seeds together with the seeds run since.

    sftadapt run configs/embedded_study.yaml --set seeds=[1] --set out=/work/runs/study-s1
    python benchmarks/study_archive.py pack /work/runs/study-s1 benchmarks/results/embedded_study/seed-1.tar.xz
    python benchmarks/study_archive.py unpack benchmarks/results/embedded_study/seed-1.tar.xz   # where it was
    sftadapt pool /work/runs/study /work/runs/study-s1 /work/runs/study-s2 --out /work/runs/study-pooled

Archive and resume (a seed longer than a sitting): stop the run between stages or inside one, then
`pack --unfinished`: the finished stages are packed as above, an unfinished stage's folder is left out whole (it
runs again from its start). In a later sitting `unpack` restores the seed and the same `sftadapt run` command
continues it: finished stages are cached; a stage that has to run and names a finished stage's folder as its model
(the warmed-up target, a trained arm) first makes that stage's weights again from its cached inputs
(runtime/stage_cache.py) and checks them against the sha256 this archive recorded: identical on a CPU of the same
kind (every stage is deterministic there), different elsewhere, and the stage's stage.json says which (`remade`).

A folder is a single-seed run (its run_config.json, stages and eval folders; its report/ and tracking/ are left
out) or one seed-<s>/ folder of a multi-seed run. Stage hashes contain the run's absolute paths, so a restored
seed is also cached for `sftadapt run` in the folder it was packed from: `unpack` restores there unless told
otherwise and says so. The archive carries a manifest (`<name>.manifest.json` beside it): the folder, commit,
date, CPU, each file's sha256, what was left out with its size and sha256, and the stages left unfinished.
Nothing is overwritten: `unpack` refuses a file that exists with other bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engines import lscpu  # noqa: E402  (a sibling script: the one lscpu reader of benchmarks/)

from sftadapt.data.records import file_sha256  # noqa: E402
from sftadapt.runtime.owned import LEFT_OUT  # noqa: E402

# weights, optimiser state and the tokenizer copies every model folder carries: large and rebuilt by a re-run
SKIP_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".npy")
SKIP_NAMES = ("tokenizer.json", "vocab.json", "merges.txt")
# a run's own top-level folders that a pool rebuilds or does not read: the report, tracker event files
SKIP_TOP = ("report", "tracking")


def _skipped(rel: Path) -> bool:
    return rel.suffix in SKIP_SUFFIXES or rel.name in SKIP_NAMES or _bookkeeping(rel)


def _bookkeeping(rel: Path) -> bool:
    """Files no stage needs again: the report and tracker folders, checkpoints, set-aside outputs."""
    parts = rel.parts
    return (len(parts) > 1 and parts[0] in SKIP_TOP) or any(
        p.startswith("checkpoint-") or ".old-" in p for p in parts[:-1]
    )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _commit() -> str:
    here = Path(__file__).resolve().parent
    out = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def _unfinished(seed_dir: Path) -> list[str]:
    """Stage folders without a finished stage.json: one that was running, or one a re-make left (`.packed`)."""
    names = [p.parent.name for p in seed_dir.glob("*/stage.json") if json.loads(p.read_text())["status"] != "done"]
    return sorted(names + [p.name for p in seed_dir.glob("*.packed") if p.is_dir()])


def pack(seed_dir: Path, archive: Path, unfinished: bool = False) -> dict:
    seed_dir = seed_dir.resolve()
    if not (seed_dir / "data" / "stage.json").exists():  # every study seed starts with its data stage
        sys.exit(f"{seed_dir}: not a seed folder of a study (no data/stage.json)")
    running = _unfinished(seed_dir)
    if running and not unfinished:
        sys.exit(
            f"{seed_dir}: stages not done: {', '.join(running)}; pack a finished seed, or pass --unfinished to "
            "pack the finished stages and run the others again after unpack"
        )
    if archive.exists():
        sys.exit(f"{archive} exists: pack never overwrites; remove it or choose another name")
    kept, left, left_sha = {}, {}, {}
    for path in sorted(p for p in seed_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(seed_dir)
        if rel.parts[0] in running or rel.parts[0].split(".old-")[0] + ".packed" in running:
            continue  # an unfinished stage runs again from its start: nothing of it is kept
        if _skipped(rel):
            left[str(rel)] = path.stat().st_size
            if (seed_dir / rel.parts[0] / "stage.json").exists() and not _bookkeeping(rel):
                left_sha[str(rel)] = file_sha256(path)  # what a re-make must reproduce
        else:
            kept[str(rel)] = path
    manifest = {
        "folder": str(seed_dir),
        "commit": _commit(),
        "packed": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "cpu": lscpu(),  # model name, CPU count and the flags that decide dtype speed
        "files": {rel: _sha(path.read_bytes()) for rel, path in kept.items()},
        "left_out_bytes": sum(left.values()),
        "left_out": left,
        "left_out_sha256": left_sha,
        "unfinished": running,
    }
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:xz") as tar:
        for rel, path in kept.items():
            tar.add(path, arcname=rel, recursive=False)
        blob = json.dumps(manifest, indent=1).encode()
        entry = tarfile.TarInfo("MANIFEST.json")
        entry.size = len(blob)
        tar.addfile(entry, io.BytesIO(blob))
    _manifest_path(archive).write_text(json.dumps(manifest, indent=1))
    print(
        f"packed {len(kept)} files of {seed_dir} into {archive} ({archive.stat().st_size / 1e6:.1f} MB); "
        f"left out {len(left)} files ({manifest['left_out_bytes'] / 1e6:.0f} MB of weights and tokenizer copies)"
        + (f"; unfinished, to run again: {', '.join(running)}" if running else "")
    )
    return manifest


def _manifest_path(archive: Path) -> Path:
    return archive.with_name(archive.name.split(".tar")[0] + ".manifest.json")


def unpack(archive: Path, seed_dir: Path | None = None) -> Path:
    with tarfile.open(archive, "r:xz") as tar:
        manifest = json.loads(tar.extractfile("MANIFEST.json").read())
        target = (seed_dir or Path(manifest["folder"])).resolve()
        if str(target) != manifest["folder"]:
            print(
                f"note: packed from {manifest['folder']}; stage hashes contain that path, so `sftadapt run` "
                f"finds this seed cached only with its run folder there"
            )
        members = [m for m in tar.getmembers() if m.name != "MANIFEST.json"]
        for m in members:
            rel = Path(m.name)
            if not m.isfile() or rel.is_absolute() or ".." in rel.parts:  # only plain files inside the folder
                sys.exit(f"{archive}: refusing member {m.name!r}")
            data = tar.extractfile(m).read()
            if _sha(data) != manifest["files"].get(m.name):
                sys.exit(f"{archive}: {m.name} does not match its manifest sha256")
            dest = target / rel
            if dest.exists():
                if dest.read_bytes() != data:
                    sys.exit(f"{dest} exists with other contents: unpack never overwrites")
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
    remakable = _write_left_out(target, manifest)
    print(f"restored {len(members)} files into {target} (commit {manifest['commit']}, packed {manifest['packed']})")
    if remakable:
        print(
            f"without the weights of {', '.join(remakable)}: `sftadapt run` makes them again (and checks them "
            "against their sha256) only where a stage still to run needs them"
        )
    if manifest.get("unfinished"):
        print(f"unfinished when packed, run again from their start: {', '.join(manifest['unfinished'])}")
    return target


def _write_left_out(target: Path, manifest: dict) -> list[str]:
    """Into each restored stage folder whose weights were left out: the record the stage cache re-makes them
    from (runtime/owned.LEFT_OUT). Older archives recorded no sha256: nothing is written for them."""
    by_stage: dict[str, dict[str, str]] = {}
    for rel, sha in manifest.get("left_out_sha256", {}).items():
        stage, _, inside = rel.partition("/")
        by_stage.setdefault(stage, {})[inside] = sha
    for stage, files in sorted(by_stage.items()):
        cpu = manifest["cpu"]
        said = f"{cpu.get('model_name', '?')} ({' '.join(cpu.get('flags_that_matter', []))})"
        record = {"packed": manifest["packed"], "cpu": said, "files": files}
        blob = json.dumps(record, indent=1, sort_keys=True).encode()
        dest = target / stage / LEFT_OUT
        if dest.exists() and dest.read_bytes() != blob:
            sys.exit(f"{dest} exists with other contents: unpack never overwrites")
        dest.write_bytes(blob)
    return sorted(by_stage)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="archive a finished seed folder without its weights")
    p.add_argument("seed_dir", type=Path)
    p.add_argument("archive", type=Path)
    p.add_argument(
        "--unfinished", action="store_true", help="pack a seed whose run stopped: unfinished stages run again"
    )
    u = sub.add_parser("unpack", help="restore an archived seed (by default into the folder it was packed from)")
    u.add_argument("archive", type=Path)
    u.add_argument("seed_dir", type=Path, nargs="?")
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        pack(args.seed_dir, args.archive, unfinished=args.unfinished)
    else:
        unpack(args.archive, args.seed_dir)


if __name__ == "__main__":
    main()
