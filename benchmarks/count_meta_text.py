"""Count, per adapted set of a study, the training rows that DART's gate calls meta text or answer-only filler.

    python benchmarks/count_meta_text.py RUN_DIR                     # a seed folder, or a run with seed-<s>/ folders
    python benchmarks/count_meta_text.py benchmarks/results/embedded_study/seed-0.tar.xz   # a packed seed, read as is
    python benchmarks/count_meta_text.py RUN_DIR --examples 3       # and the first flagged rows of each set

Each adapted set is the last stage of a training source in arms.SOURCE_STAGES (rewrite, sdft, mapper, prompted,
patch: `<stage>/train.jsonl`). Every row is checked with the gate's own rules, `reward.content_reasons` at the
default RewardConfig (`meta_text`: it echoes a mapping prompt's instruction or talks of rewriting; `no_reasoning`:
it shows less work than the expert solution), against the problem, its gold answer and the expert solution of the
seed's `data/expert.jsonl` normalised as every stage normalises it (prompts.ensure_boxed). On a set written before
these rules existed, the counts are what the gate would have refused. Expert-fallback rows are checked too: they
are the expert solutions themselves, so anything flagged there is a false positive of the rules.

Reads the files only (an archive in memory, nothing extracted); no model, no torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sftadapt import arms  # noqa: E402
from sftadapt.adapt.reward import RewardConfig, content_reasons  # noqa: E402
from sftadapt.data.prompts import ensure_boxed  # noqa: E402

LABELS = {
    "rewrite": "Mind the Gap (DR)",
    "sdft": "SDFT (one rewrite)",
    "mapper": "DART",
    "prompted": "PR best-of-k",
    "patch": "Patch",
}


class Seed:
    """The files of one seed: a folder, or a packed archive (`benchmarks/study_archive.py pack`) read in memory."""

    def __init__(self, name: str, folder: Path | None = None, members: dict[str, bytes] | None = None):
        self.name, self.folder, self.members = name, folder, members

    def lines(self, rel: str) -> list[str] | None:
        if self.members is not None:
            data = self.members.get(rel)
            return None if data is None else data.decode("utf-8").splitlines()
        path = self.folder / rel
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else None


def seeds(source: Path) -> Iterator[Seed]:
    """The seeds under `source`: an archive, a seed folder (it holds data/expert.jsonl) or a run of seed-<s>/."""
    if source.is_file():
        with tarfile.open(source) as tar:
            wanted = {"data/expert.jsonl"} | {arms.train_data(s) for s in arms.SOURCE_STAGES}
            members = {}
            for member in tar.getmembers():
                name = member.name.removeprefix("./")
                if member.isfile() and name in wanted:
                    members[name] = tar.extractfile(member).read()
        yield Seed(source.name, members=members)
        return
    if (source / "data" / "expert.jsonl").exists():
        yield Seed(source.name, folder=source)
        return
    found = sorted(d for d in source.glob("seed-*") if (d / "data" / "expert.jsonl").exists())
    if not found:
        raise SystemExit(
            f"{source}: no data/expert.jsonl here nor in a seed-<s>/ folder: give a seed folder, a run folder "
            "or a .tar.xz made by benchmarks/study_archive.py pack"
        )
    for d in found:
        yield Seed(d.name, folder=d)


def count(seed: Seed, cfg: RewardConfig, examples: int = 0) -> tuple[list[dict], list[str]]:
    """One row per adapted set of `seed` (sets the seed does not have are left out), and the flagged examples."""
    expert_lines = seed.lines("data/expert.jsonl")
    if expert_lines is None:
        raise SystemExit(f"{seed.name}: data/expert.jsonl is missing: the expert solutions are the gate's reference")
    experts = {}
    for line in expert_lines:
        if line.strip():
            e = json.loads(line)
            experts[e["id"]] = ensure_boxed(e.get("solution") or "", e["answer"])
    table, shown = [], []
    for source in arms.SOURCE_STAGES:
        if source == "expert":
            continue
        rel = arms.train_data(source)
        lines = seed.lines(rel)
        if lines is None:
            continue
        row = {"set": source, "file": rel, "rows": 0, "adapted": 0, "meta_text": 0, "no_reasoning": 0, "either": 0}
        row["expert_rows_flagged"] = 0
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            r = json.loads(line)
            pid = (r.get("meta") or {}).get("problem_id") or r["id"]
            if pid not in experts:
                raise SystemExit(f"{seed.name}/{rel}:{n}: problem id '{pid}' is not in data/expert.jsonl")
            reasons = content_reasons(r["response"], r["problem"], experts[pid], r["answer"], cfg)
            row["rows"] += 1
            if r["origin"] == "expert":
                row["expert_rows_flagged"] += bool(reasons)
                continue
            row["adapted"] += 1
            row["meta_text"] += "meta_text" in reasons
            row["no_reasoning"] += "no_reasoning" in reasons
            row["either"] += bool(reasons)
            if reasons and sum(s.startswith(f"{source}:") for s in shown) < examples:
                text = " ".join(r["response"].split())
                shown.append(f"{source}: [{', '.join(reasons)}] {text[:200]}{'…' if len(text) > 200 else ''}")
        table.append(row)
    return table, shown


def markdown(seed: str, table: list[dict]) -> str:
    lines = [
        f"### {seed}",
        "",
        "| set | train file | rows | adapted rows | meta_text | no_reasoning | either (share of adapted) "
        "| expert-fallback rows flagged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        share = f"{r['either'] / r['adapted']:.0%}" if r["adapted"] else "–"
        lines.append(
            f"| {LABELS.get(r['set'], r['set'])} | {r['file']} | {r['rows']} | {r['adapted']} | {r['meta_text']} "
            f"| {r['no_reasoning']} | {r['either']} ({share}) | {r['expert_rows_flagged']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a seed folder, a run folder with seed-<s>/, or a .tar.xz archive")
    parser.add_argument("--examples", type=int, default=0, help="print the first N flagged rows of each set")
    args = parser.parse_args(argv)
    if not args.source.exists():
        raise SystemExit(f"{args.source}: no such file or folder")
    cfg = RewardConfig()
    print(
        f"Rows flagged by the gate's text rules (meta_text, no_reasoning; min_reasoning_frac {cfg.min_reasoning_frac}); "
        "'adapted rows' = every origin but the expert fallback."
    )
    for seed in seeds(args.source):
        table, shown = count(seed, cfg, args.examples)
        print()
        print(markdown(seed.name, table))
        if shown:
            print()
            print("\n".join(f"- {s}" for s in shown))


if __name__ == "__main__":
    main()
