"""Count, per adapted set of a study, the training rows that DART's gate calls meta text or answer-only filler, and
per evaluated arm the test answers that carry meta text.

    python benchmarks/count_meta_text.py RUN_DIR                     # a seed folder, or a run with seed-<s>/ folders
    python benchmarks/count_meta_text.py benchmarks/results/embedded_study_v1/seed-0.tar.xz  # a packed seed, as is
    python benchmarks/count_meta_text.py RUN_DIR --examples 3       # and the first flagged rows of each set and arm

Each adapted set is the last stage of a training source in arms.SOURCE_STAGES (rewrite, sdft, mapper, prompted,
patch: `<stage>/train.jsonl`). Every row is checked with the gate's own rules, `reward.content_reasons` at the
default RewardConfig (`meta_text`: it echoes a mapping prompt's instruction or talks of rewriting; `no_reasoning`:
it shows less work than the expert solution), against the problem, its gold answer and the expert solution of the
seed's `data/expert.jsonl` normalised as every stage normalises it (prompts.ensure_boxed). On a set written before
these rules existed, the counts are what the gate would have refused. Expert-fallback rows are checked too: they
are the expert solutions themselves, so anything flagged there is a false positive of the rules.

The second table, "Test answers with meta text, per arm", counts what the models trained on those sets answer: every
sample of `eval_<arm>/<benchmark>/attempts.jsonl` (one folder per evaluated arm: eval_base, eval_dart_sft,
eval_direct_rl@8, ...) is checked with the gate's meta-text detector alone (policy.meta_text: the failure where a
model trained on echoing rows starts its test answer with "Rewriting the problem in your own words..."; the
no_reasoning rule is left out, as an eval answer has no expert solution to be measured against). The context whose
words do not count is the problem text alone, the only text the solve prompt showed: a registered benchmark's
problems are loaded again by name (sources.load_benchmark, the first `limit` of them as the eval stage's stage.json
records; the synthetic ones are generated again, deterministic in their ids) and every answer's problem id must be
among them. A benchmark given as a file, or one whose data folder is not found, is checked without context and its
row says so. Per arm and benchmark: the answers, how many are correct (verdict `correct`), how many carry meta text
and how many of those are correct anyway.

Reads the files only (an archive in memory, nothing extracted); no model, no torch.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sftadapt import arms  # noqa: E402
from sftadapt.adapt.policy import meta_text  # noqa: E402
from sftadapt.adapt.reward import RewardConfig, content_reasons  # noqa: E402
from sftadapt.data.prompts import ensure_boxed  # noqa: E402
from sftadapt.data.sources import SourceError, is_registered, load_benchmark  # noqa: E402

LABELS = {
    "rewrite": "Mind the Gap (DR)",
    "sdft": "SDFT (one rewrite)",
    "mapper": "DART",
    "prompted": "PR best-of-k",
    "patch": "Patch",
}
# the samples of one evaluated arm on one benchmark (evaluate.py writes one folder per benchmark in OUT=eval_<arm>)
EVAL_ATTEMPTS = re.compile(r"eval_(?P<arm>[^/]+)/(?P<benchmark>[^/]+)/attempts\.jsonl")
EVAL_STAGE = re.compile(r"eval_[^/]+/stage\.json")
# a seed's expert set: the select stage's where the study chose its problems by pass rate, else the data stage's
EXPERT_FILES = ("select/expert.jsonl", "data/expert.jsonl")


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

    def expert_lines(self) -> list[str] | None:
        return next((lines for lines in map(self.lines, EXPERT_FILES) if lines is not None), None)

    def eval_sets(self) -> list[tuple[str, str]]:
        """(arm, benchmark) of every `eval_<arm>/<benchmark>/attempts.jsonl`, arms in the study's table order (an arm
        not in the table, such as `direct_rl@8`, after them by name), benchmarks by name."""
        if self.members is not None:
            names = list(self.members)
        else:
            names = [p.relative_to(self.folder).as_posix() for p in self.folder.glob("eval_*/*/attempts.jsonl")]
        found = [m.group("arm", "benchmark") for m in map(EVAL_ATTEMPTS.fullmatch, names) if m]
        order = {arm: i for i, arm in enumerate(arms.ARMS)}
        return sorted(found, key=lambda ab: (order.get(ab[0], len(order)), ab))


def seeds(source: Path) -> Iterator[Seed]:
    """The seeds under `source`: an archive, a seed folder (it holds an expert set, EXPERT_FILES) or a run of
    seed-<s>/."""
    if source.is_file():
        with tarfile.open(source) as tar:
            wanted = set(EXPERT_FILES) | {arms.train_data(s) for s in arms.SOURCE_STAGES}
            members = {}
            for member in tar.getmembers():
                name = member.name.removeprefix("./")
                if member.isfile() and (name in wanted or EVAL_ATTEMPTS.fullmatch(name) or EVAL_STAGE.fullmatch(name)):
                    members[name] = tar.extractfile(member).read()
        yield Seed(source.name, members=members)
        return
    if _has_expert_set(source):
        yield Seed(source.name, folder=source)
        return
    found = sorted(d for d in source.glob("seed-*") if _has_expert_set(d))
    if not found:
        raise SystemExit(
            f"{source}: no {' or '.join(EXPERT_FILES)} here nor in a seed-<s>/ folder: give a seed folder, a run folder "
            "or a .tar.xz made by benchmarks/study_archive.py pack"
        )
    for d in found:
        yield Seed(d.name, folder=d)


def _has_expert_set(folder: Path) -> bool:
    return any((folder / rel).exists() for rel in EXPERT_FILES)


def count(seed: Seed, cfg: RewardConfig, examples: int = 0) -> tuple[list[dict], list[str]]:
    """One row per adapted set of `seed` (sets the seed does not have are left out), and the flagged examples."""
    expert_lines = seed.expert_lines()
    if expert_lines is None:
        raise SystemExit(
            f"{seed.name}: {' and '.join(EXPERT_FILES)} are missing: the expert solutions are the gate's reference"
        )
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


def eval_limit(seed: Seed, arm: str) -> int | None:
    """The `limit` (first N problems of each benchmark) the eval stage of `arm` ran with, None when its stage.json
    does not say (then every problem of the benchmark is loaded: the first N are the same)."""
    lines = seed.lines(f"eval_{arm}/stage.json")
    if lines is None:
        return None
    return ((json.loads("\n".join(lines)).get("spec") or {}).get("options") or {}).get("limit")


def problem_texts(benchmark: str, limit: int | None, cache: dict) -> tuple[dict[str, str] | None, str]:
    """(problem id -> problem text of `benchmark` as the eval loaded it, ''), or (None, why not) for a benchmark
    given as a file or one whose data is not found here. Cached per (benchmark, limit): the arms share them."""
    key = (benchmark, limit)
    if key not in cache:
        if not is_registered(benchmark):
            cache[key] = None, "a benchmark given as a file: its problems are not known by name"
        else:
            try:
                cache[key] = {p.id: p.problem for p in load_benchmark(benchmark, limit)}, ""
            except (SourceError, OSError) as err:
                cache[key] = None, f"its problems could not be loaded ({err})"
    return cache[key]


def count_answers(seed: Seed, examples: int = 0) -> tuple[list[dict], list[str]]:
    """One row per evaluated arm and benchmark of `seed`: its test answers (every sample), the correct ones, the
    ones carrying meta text (policy.meta_text against the problem text) and those of them that are correct; and
    the first `examples` flagged answers of each arm."""
    table, shown, cache = [], [], {}
    for arm, benchmark in seed.eval_sets():
        rel = f"eval_{arm}/{benchmark}/attempts.jsonl"
        problems, why = problem_texts(benchmark, eval_limit(seed, arm), cache)
        row = {"arm": arm, "benchmark": benchmark, "file": rel, "answers": 0, "correct": 0, "meta_text": 0}
        row |= {"meta_text_correct": 0, "context": "problem" if problems is not None else f"none: {why}"}
        for n, line in enumerate(seed.lines(rel), 1):
            if not line.strip():
                continue
            a = json.loads(line)
            if problems is not None and a["problem_id"] not in problems:
                raise SystemExit(
                    f"{seed.name}/{rel}:{n}: problem id '{a['problem_id']}' is not among the {len(problems)} problems "
                    f"of {benchmark} loaded now: the benchmark is not the one this arm was evaluated on"
                )
            context = (problems[a["problem_id"]],) if problems is not None else ()
            flag = meta_text(a["text"], context)
            correct = a["verdict"] == "correct"
            row["answers"] += 1
            row["correct"] += correct
            row["meta_text"] += flag is not None
            row["meta_text_correct"] += flag is not None and correct
            if flag is not None and sum(s.startswith(f"eval_{arm}:") for s in shown) < examples:
                text = " ".join(a["text"].split())
                shown.append(
                    f"eval_{arm}: [{benchmark}, {a['verdict']}, {flag}] {text[:200]}{'…' if len(text) > 200 else ''}"
                )
        table.append(row)
    return table, shown


def _table(title: str, columns: list[str], rows: list[list]) -> list[str]:
    lines = [title, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "–"


def markdown(seed: str, table: list[dict]) -> str:
    columns = ["set", "train file", "rows", "adapted rows", "meta_text", "no_reasoning", "either (share of adapted)"]
    rows = [
        [LABELS.get(r["set"], r["set"]), r["file"], r["rows"], r["adapted"], r["meta_text"], r["no_reasoning"]]
        + [f"{r['either']} ({_share(r['either'], r['adapted'])})", r["expert_rows_flagged"]]
        for r in table
    ]
    return "\n".join(_table(f"### {seed}", [*columns, "expert-fallback rows flagged"], rows))


def markdown_answers(seed: str, table: list[dict]) -> str:
    """The second table: test answers with meta text per arm and benchmark, and a note for each benchmark checked
    without its problem text as context."""
    columns = ["arm", "eval folder", "answers", "correct", "meta_text (share of answers)", "meta_text and correct"]
    rows = [
        [arms.ARM_LABELS.get(r["arm"], r["arm"]), f"eval_{r['arm']}/{r['benchmark']}", r["answers"], r["correct"]]
        + [f"{r['meta_text']} ({_share(r['meta_text'], r['answers'])})", r["meta_text_correct"]]
        for r in table
    ]
    lines = _table(f"### {seed}: test answers with meta text, per arm", columns, rows)
    notes = sorted({(r["benchmark"], r["context"]) for r in table if r["context"] != "problem"})
    lines += [f"\n{b}: checked without the problem as context, {why.removeprefix('none: ')}" for b, why in notes]
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
        "'adapted rows' = every origin but the expert fallback. Test answers: every eval sample, meta_text only, "
        "against its problem text."
    )
    for seed in seeds(args.source):
        table, shown = count(seed, cfg, args.examples)
        print()
        print(markdown(seed.name, table))
        if shown:
            print()
            print("\n".join(f"- {s}" for s in shown))
        answers, shown = count_answers(seed, args.examples)
        print()
        print(markdown_answers(seed.name, answers) if answers else f"### {seed.name}: no eval_<arm>/ answers")
        if shown:
            print()
            print("\n".join(f"- {s}" for s in shown))


if __name__ == "__main__":
    main()
