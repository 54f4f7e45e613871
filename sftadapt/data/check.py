"""`sftadapt data check` and `data convert`: read a dataset as Problem records and say what was kept and why not.

Rejects go where `rejects` says, else (convert) beside the output as OUT.rejects.jsonl; `data check` alone
writes none, since the data's folder may be read-only, or someone else's.
"""

from __future__ import annotations

from pathlib import Path

from sftadapt.data.formats import FieldOptions


def check_or_convert(
    file: Path,
    out: Path | None,
    fields: FieldOptions,
    training: bool,
    rejects: Path | None,
    max_row_bytes: int,
    strict: bool,
    force: bool = False,
) -> tuple[list[str], list[str], bool]:
    """Validate `file` (and write its problems to `out`); returns (report lines, warnings for stderr, whether a
    strict check failed). A file that cannot be read at all raises SourceError or OutDirError."""
    from sftadapt.data.records import write_records
    from sftadapt.data.sources import load_problems, write_rejects
    from sftadapt.runtime.outdir import check_output_file

    if out:
        check_output_file(out, inputs=(file,), force=force)
    result = load_problems(
        file,
        fields=fields,
        require_solution=training,
        max_row_bytes=max_row_bytes,
        limit_hint="raise --max-row-bytes if it is real",
    )
    rejects_path = rejects or (out.with_name(out.stem + ".rejects.jsonl") if out else None)
    written = write_rejects(result.rejects, rejects_path, inputs=(file,)) if rejects_path else None
    if out:
        write_records(out, result.problems)
    s = result.summary()
    with_solution = sum(1 for p in result.problems if p.solution)
    lines = [
        f"{file}: format {s['format']}, answer rule {result.answer_rule}, {s['rows']} rows, {s['ok']} ok, "
        f"{s['rejected']} rejected, {with_solution} with an expert solution"
    ]
    for rej in result.rejects[:20]:
        where = f"field {rej['field']}" if rej["field"] else "whole row"
        lines.append(f"  reject {rej['file']}:{rej['line']} {where}: {rej['reason']}")
    if len(result.rejects) > 20:
        lines.append(f"  ... {len(result.rejects) - 20} more")
    lines += [f"warning: {warning}" for warning in result.warnings]
    if written:
        lines.append(f"rejects written to {written}")
    elif result.rejects and not out:
        lines.append("(pass --rejects FILE to keep the rejected rows)")
    errors = []
    if not result.total_rows:
        errors.append(f"{'error' if strict else 'warning'}: {file}: no rows (the file is empty or blank)")
    if out:
        lines.append(f"{s['ok']} problems written to {out}")
    return lines, errors, strict and bool(result.rejects or not result.total_rows)
