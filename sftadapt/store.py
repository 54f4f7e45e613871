"""Resumable output by construction: append-only shards, a manifest with the config hash, atomic renames.

A stage cuts its work into fixed, ordered chunks and writes chunk i as `shard-0000i.jsonl` (temp file, fsync,
rename). A killed run leaves complete shards and at most one stray temp file; re-running the same command skips
the complete shards and redoes the rest. Because every sample's seed derives from (problem id, stage, index),
a resumed run writes exactly what an uninterrupted one would. A run whose config hash differs from the
manifest's refuses to mix with the old shards unless `force=True`, which moves them aside.

    store = ShardStore(out / "shards", config_hash(cfg), config_dict(cfg), force=cfg.force)
    for i, rows in run_sharded(store, items, shard_size=16, work=process_chunk, desc="rewrite"):
        ...
    store.finalize(out / "train.jsonl")
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from sftadapt import SCHEMA_VERSION
from sftadapt.records import to_dict

MANIFEST = "manifest.json"


class StoreError(RuntimeError):
    pass


class ShardStore:
    def __init__(self, root: str | os.PathLike, config_hash: str, config: dict[str, Any] | None = None,
                 force: bool = False):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_hash = config_hash
        manifest = self.read_manifest()
        if manifest and manifest.get("config_hash") != config_hash:
            if not force:
                raise StoreError(
                    f"{self.root}: holds shards of another config (hash {manifest.get('config_hash')}, this run "
                    f"{config_hash}); use a new output folder, or --force to set the old shards aside")
            aside = self.root.with_name(f"{self.root.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            shutil.move(str(self.root), aside)
            self.root.mkdir(parents=True)
            manifest = None
        if manifest and manifest.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"{self.root}: written with schema version {manifest.get('schema_version')}, "
                             f"this sftadapt writes {SCHEMA_VERSION}; use a new output folder")
        if not manifest:
            self._write_json(self.root / MANIFEST, {"schema_version": SCHEMA_VERSION, "config_hash": config_hash,
                                                    "config": config or {}, "created": time.time()})

    def read_manifest(self) -> dict[str, Any] | None:
        path = self.root / MANIFEST
        return json.loads(path.read_text()) if path.exists() else None

    def shard_path(self, index: int) -> Path:
        return self.root / f"shard-{index:05d}.jsonl"

    def has(self, index: int) -> bool:
        return self.shard_path(index).exists()

    def write(self, index: int, records: Sequence[Any]) -> None:
        path = self.shard_path(index)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for rec in records:
                row = rec if isinstance(rec, dict) else to_dict(rec)
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # the shard exists whole or not at all

    def read(self, index: int) -> list[dict[str, Any]]:
        with open(self.shard_path(index), encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def shard_indices(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.root.glob("shard-*.jsonl"))

    def rows(self) -> Iterator[dict[str, Any]]:
        for index in self.shard_indices():
            yield from self.read(index)

    def finalize(self, out_path: str | os.PathLike, expected_shards: int | None = None,
                 extra: dict[str, Any] | None = None) -> int:
        """Concatenate the shards in order into `out_path` (atomically); returns the row count."""
        indices = self.shard_indices()
        if expected_shards is not None and indices != list(range(expected_shards)):
            missing = sorted(set(range(expected_shards)) - set(indices))
            raise StoreError(f"{self.root}: cannot finalise, shards {missing[:10]} are missing")
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(out_path.name + ".tmp")
        count = 0
        with open(tmp, "w", encoding="utf-8") as out:
            for index in indices:
                with open(self.shard_path(index), encoding="utf-8") as fh:
                    for line in fh:
                        if line.strip():
                            out.write(line if line.endswith("\n") else line + "\n")
                            count += 1
        os.replace(tmp, out_path)
        manifest = self.read_manifest() or {}
        manifest.update({"complete": True, "rows": count, "output": str(out_path), **(extra or {})})
        self._write_json(self.root / MANIFEST, manifest)
        return count

    @staticmethod
    def _write_json(path: Path, data: dict[str, Any]) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str))
        os.replace(tmp, path)


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def run_sharded(store: ShardStore, items: Sequence[Any], shard_size: int,
                work: Callable[[Sequence[Any]], list[Any]], desc: str = "", progress: bool = True,
                unit: str = "item") -> int:
    """Run `work` on each chunk not yet stored and store its records; returns the number of shards.

    The progress bar counts items, starting from those already done in earlier (killed) runs."""
    from tqdm.auto import tqdm

    parts = chunks(items, shard_size)
    done = sum(len(part) for i, part in enumerate(parts) if store.has(i))
    with tqdm(total=len(items), initial=done, desc=desc, unit=unit, disable=not progress, dynamic_ncols=True) as bar:
        for i, part in enumerate(parts):
            if store.has(i):
                continue
            store.write(i, work(part))
            bar.update(len(part))
    return len(parts)
