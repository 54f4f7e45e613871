"""Keep one seed of a `sftadapt run` study without its model weights, and put it back later.

A study's seeds need not run in one sitting: each seed is its own folder (RUN/seed-<s>/) and every finished
stage is found again by its hash (stage.json). What the report needs of a finished seed is small - the data
sets, each stage's record, the training and RL logs, every eval sample - while the models are hundreds of MB.
`pack` writes those small files into one archive; `unpack` restores them; `sftadapt pool` then reports the
restored seeds together with the seeds run since.

    sftadapt run configs/embedded_study.yaml --set seeds=[1] --set out=/work/runs/study-s1
    python benchmarks/study_archive.py pack /work/runs/study-s1 benchmarks/results/embedded_study/seed-1.tar.xz
    python benchmarks/study_archive.py unpack benchmarks/results/embedded_study/seed-1.tar.xz   # where it was
    sftadapt pool /work/runs/study /work/runs/study-s1 /work/runs/study-s2 --out /work/runs/study-pooled

A folder is a single-seed run (its run_config.json, stages and eval folders; its report/ and tracking/ are left
out) or one seed-<s>/ folder of a multi-seed run. Stage hashes contain the run's absolute paths, so a restored
seed is also cached for `sftadapt run` in the folder it was packed from: `unpack` restores there unless told
otherwise and says so. The archive
carries a manifest (`<name>.manifest.json` beside it): the folder, commit, date, CPU, each file's sha256, and
what was left out with its size. Nothing is overwritten: `unpack` refuses a file that exists with other bytes.
Without the weights nothing downstream can re-run from the archive: a stage whose options change re-runs from
its own inputs, which must then be recomputed.
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

# weights, optimiser state and the tokenizer copies every model folder carries: large and rebuilt by a re-run
SKIP_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".npy")
SKIP_NAMES = ("tokenizer.json", "vocab.json", "merges.txt")
# a run's own top-level folders that a pool rebuilds or does not read: the report, tracker event files
SKIP_TOP = ("report", "tracking")


def _skipped(rel: Path) -> bool:
    parts = rel.parts
    return (
        rel.suffix in SKIP_SUFFIXES
        or rel.name in SKIP_NAMES
        or (len(parts) > 1 and parts[0] in SKIP_TOP)
        or any(p.startswith("checkpoint-") or ".old-" in p for p in parts[:-1])
    )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _commit() -> str:
    here = Path(__file__).resolve().parent
    out = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def pack(seed_dir: Path, archive: Path) -> dict:
    seed_dir = seed_dir.resolve()
    if not (seed_dir / "data" / "stage.json").exists():  # every study seed starts with its data stage
        sys.exit(f"{seed_dir}: not a seed folder of a study (no data/stage.json)")
    running = [p.parent.name for p in seed_dir.glob("*/stage.json") if json.loads(p.read_text())["status"] != "done"]
    if running:
        sys.exit(f"{seed_dir}: stages not done: {', '.join(sorted(running))}; pack a finished seed")
    if archive.exists():
        sys.exit(f"{archive} exists: pack never overwrites; remove it or choose another name")
    kept, left = {}, {}
    for path in sorted(p for p in seed_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(seed_dir)
        if _skipped(rel):
            left[str(rel)] = path.stat().st_size
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
    print(f"restored {len(members)} files into {target} (commit {manifest['commit']}, packed {manifest['packed']})")
    return target


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="archive a finished seed folder without its weights")
    p.add_argument("seed_dir", type=Path)
    p.add_argument("archive", type=Path)
    u = sub.add_parser("unpack", help="restore an archived seed (by default into the folder it was packed from)")
    u.add_argument("archive", type=Path)
    u.add_argument("seed_dir", type=Path, nargs="?")
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        pack(args.seed_dir, args.archive)
    else:
        unpack(args.archive, args.seed_dir)


if __name__ == "__main__":
    main()
