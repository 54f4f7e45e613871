"""`sftadapt eval` as a stage: its config (`EvalConfig`) and `run(cfg)`, over the harness in evaluate.py.

The config holds what decides an evaluation: the model, the benchmarks, a protocol (`quick`, `paper` or a YAML
file of Protocol fields) and any Protocol field set on top of it (`n`, `temperature`, ... left unset: the
protocol's own value), plus where and how it runs. The study's `eval:` section (pipeline.py) is this class with
the study's defaults.

    sftadapt eval --model smollm2-135m --benchmarks gsm8k,math500 --protocol quick --set n=4 --set temperature=1
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from typing import Any

from sftadapt.config import option
from sftadapt.data.formats import FieldOptions, fields_option
from sftadapt.engines.base import EngineConfig
from sftadapt.eval.protocol import Protocol, load_protocol
from sftadapt.registry import Stage
from sftadapt.runtime import tracking

# the Protocol fields an eval config may set over its protocol (the label `name` is the protocol's own)
PROTOCOL_FIELDS = tuple(f.name for f in dataclasses.fields(Protocol) if f.name != "name")


@dataclass
class _EvalOptions:
    model: str = option("smollm2-135m", help="HF id, local folder, smollm2-135m or tiny-random")
    benchmarks: list[str] = option(
        ["gsm8k", "math500"],
        help="names (gsm8k, math500, aime24, amc23, minerva_math, olympiadbench, math_test, synthetic_id, "
        "synthetic_ood, synthetic_ood4) or your own as a file / save_to_disk folder / hf:id (read with the field "
        "map, reported under the file's stem); repeatable or comma-separated, and a file whose name holds a comma "
        "is taken whole when it exists",
    )
    fields: FieldOptions = fields_option()
    protocol: str = option("quick", help="paper | quick | a YAML file of protocol fields")
    limit: int | None = option(None, help="first N problems of each benchmark")
    out: str = option("runs/eval", help="output folder (resumable; results.json at the end)")
    dtype: str = option("auto", help="auto (bf16 only where native) | float32 | bfloat16")
    batch_size: int = option(32, help="sequences per generate call")
    engine: EngineConfig = field(default_factory=EngineConfig, metadata={"help": "the backend that evaluates"})
    verify_timeout: float = option(5.0, help="seconds per verified answer before a timeout verdict")
    data_dir: str | None = option(None, help="benchmark data folder (default: shared/data found nearby)")
    force: bool = option(False, help="set aside shards written with another model/protocol/problem list")
    max_prompt_tokens: int | None = option(
        None, help="prompt budget in tokens (default: the model's context less max_new_tokens)"
    )
    report_to: str = tracking.report_to_option()
    tracking_dir: str | None = tracking.tracking_dir_option()
    online: bool = tracking.online_option()
    max_row_bytes: int | None = option(None, help="reject benchmark-file rows larger than this many bytes (1 MiB)")

    def __post_init__(self) -> None:
        if isinstance(self.benchmarks, list):
            self.benchmarks = benchmark_names(self.benchmarks)

    def validate(self) -> None:
        tracking.check_report_to(self.report_to)
        if not self.benchmarks:
            raise ValueError("benchmarks: name at least one")
        self.resolved_protocol()

    def protocol_changes(self) -> dict[str, Any]:
        """The Protocol fields this config sets over its protocol."""
        return {k: getattr(self, k) for k in PROTOCOL_FIELDS if getattr(self, k) is not None}

    def resolved_protocol(self) -> Protocol:
        """The protocol, with the Protocol fields this config sets over it."""
        return load_protocol(self.protocol, [f"{k}={json.dumps(v)}" for k, v in self.protocol_changes().items()])


def _protocol_field(f: dataclasses.Field, hint: Any) -> tuple[str, Any, Any]:
    text = f.metadata.get("help", "")
    return f.name, hint | None, option(None, help=f"{text} (unset: the protocol's)")


_HINTS = typing.get_type_hints(Protocol)
# One declaration of the protocol fields: Protocol's own, each optional here.
EvalConfig = dataclasses.make_dataclass(
    "EvalConfig",
    [_protocol_field(f, _HINTS[f.name]) for f in dataclasses.fields(Protocol) if f.name in PROTOCOL_FIELDS],
    bases=(_EvalOptions,),
)
EvalConfig.__module__ = __name__
EvalConfig.__doc__ = "The options of `sftadapt eval` (module docstring)."


def benchmark_names(values: list[str]) -> list[str]:
    """The benchmarks values as names. Each value may list several, comma-separated; but a run of items that,
    joined back with their commas, names an existing file or folder is one item, so a file such as `a,b.jsonl`
    can be given (alone or in a list) although the comma also separates names."""
    names = []
    for value in values:
        pieces = str(value).split(",")
        i = 0
        while i < len(pieces):
            # the longest run from i that exists (os.path.exists swallows a name too long or a loop: not a file)
            j = next((j for j in range(len(pieces), i + 1, -1) if os.path.exists(",".join(pieces[i:j]).strip())), i + 1)
            if ",".join(pieces[i:j]).strip():
                names.append(",".join(pieces[i:j]).strip())
            i = j
    return names


def run(cfg, progress: bool = True, *, engine=None, verifier=None) -> dict[str, Any]:
    """Evaluate `cfg.model` on `cfg.benchmarks` under the resolved protocol; writes OUT/results.json."""
    from sftadapt.eval.evaluate import evaluate

    return evaluate(cfg, engine=engine, verifier=verifier, progress=progress)


def _echo(cfg, results: dict[str, Any]) -> list[str]:
    from pathlib import Path

    from sftadapt.eval.evaluate import summary_table

    return [summary_table(results), f"results -> {Path(cfg.out) / 'results.json'}"]


STAGE = Stage(
    name="eval",
    config=EvalConfig,
    run=run,
    outputs=("results.json", "rejects.jsonl"),
    record="Attempt",
    echo=_echo,
)
