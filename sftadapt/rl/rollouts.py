"""Where GRPO's rollouts are generated: the `rollout_engine` block of `GRPOOptions` (rl/grpo.py), mapped onto
TRL's own generation switches.

TRL's `GRPOTrainer` samples the rollouts itself; sftadapt only chooses how, with the same `{backend, options}`
block every other generation role uses (engines/base.py):

- `hf` (default): TRL generates with the training model (`model.generate`), as without a block.
- `vllm`: TRL's colocate mode, a vLLM engine inside each training process on the training GPUs.
  `options`: `tensor_parallel_size`, `gpu_memory_utilization`, and any other `vllm_*` field of TRL's
  `GRPOConfig` under its TRL name (e.g. `vllm_enable_sleep_mode`, `vllm_max_model_length`).
- `openai` with `options: {server: trl, base_urls: [URL]}`: TRL's server mode against one `trl vllm-serve`
  process (not `vllm serve`: TRL pushes the new weights to it after every step through its own endpoints).
  `allow_hosts` and the offline rule are those of every openai block (runtime/network.py), and the server-mode
  `vllm_*` fields of `GRPOConfig` (e.g. `vllm_server_timeout`) go in `options` under their TRL names.

The older TRL-named options of `GRPOOptions` (`use_vllm`, `vllm_mode`, `vllm_server_host`, ...) say the same
thing in TRL's words; a config uses one spelling or the other (`check_one_spelling`). Nothing here imports
vllm: a CPU machine validates a GPU recipe; TRL's `GRPOConfig` is imported only to check a TRL field name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sftadapt.config import option
from sftadapt.engines.base import EngineConfig

ROLLOUT_BACKENDS = ("hf", "vllm", "openai")
TRL_SERVER = "trl"  # the one server kind TRL's client speaks to: `trl vllm-serve`
# our short names in a `vllm` block -> TRL's field
COLOCATE_OPTIONS = {
    "tensor_parallel_size": "vllm_tensor_parallel_size",
    "gpu_memory_utilization": "vllm_gpu_memory_utilization",
}
# GRPOConfig fields the block itself sets from its backend and base_urls
SET_BY_BLOCK = ("use_vllm", "vllm_mode", "vllm_server_base_url", "vllm_server_host", "vllm_server_port")
# TRL fields that only one mode reads (grpo_config.py's "only used when vllm_mode is ..." groups)
SERVER_ONLY = ("vllm_server_timeout", "vllm_group_port")
COLOCATE_ONLY = (
    "vllm_gpu_memory_utilization",
    "vllm_tensor_parallel_size",
    "vllm_enable_sleep_mode",
    "vllm_max_model_length",
    "vllm_model_impl",
)
OPENAI_OPTIONS = ("server", "base_urls", "allow_hosts")
# GRPOOptions' TRL-named spelling of the same choice (its defaults mean "not chosen")
TRL_NAMED = (
    "use_vllm",
    "vllm_mode",
    "vllm_server_host",
    "vllm_server_port",
    "vllm_gpu_memory_utilization",
    "vllm_tensor_parallel_size",
)


@dataclass
class RolloutEngineConfig(EngineConfig):
    """How TRL generates GRPO's rollouts: `hf` (the training model), `vllm` (TRL's colocate mode) or `openai`
    with `server: trl` (TRL's server mode against one `trl vllm-serve`). See sftadapt/rl/rollouts.py."""

    backend: str = option(
        "hf",
        help="hf (TRL generates with the training model) | vllm (TRL's colocate mode on the training GPUs) | "
        "openai with options {server: trl, base_urls: [URL]} (TRL's server mode: one `trl vllm-serve`)",
    )
    options: dict = option(
        {},
        help="vllm: tensor_parallel_size, gpu_memory_utilization, and any other GRPOConfig vllm_* field under its "
        "TRL name (e.g. vllm_enable_sleep_mode); openai: server: trl, base_urls: [ONE url], allow_hosts (offline: "
        "the server must be loopback or listed there, as for every openai block), server-mode vllm_* fields",
    )

    def validate(self) -> None:
        """The backend is one TRL can roll out with, and every option is one that backend reads."""
        rollout_fields(self)


def rollout_fields(engine: RolloutEngineConfig) -> dict[str, Any]:
    """The GRPOConfig fields `engine` sets (nothing for `hf`); ValueError, naming the option, for anything TRL
    would not read in that mode."""
    where = "rollout_engine"
    if engine.backend not in ROLLOUT_BACKENDS:
        raise ValueError(
            f"{where}.backend '{engine.backend}': TRL rolls out with one of {', '.join(ROLLOUT_BACKENDS)} "
            "(hf: the training model, vllm: colocate, openai: a `trl vllm-serve` server)"
        )
    options = dict(engine.options or {})
    if engine.backend == "hf":
        if options:
            raise ValueError(
                f"{where}.options {sorted(options)}: backend hf (the training model) takes no options; "
                "set backend: vllm or openai"
            )
        return {}
    if engine.backend == "vllm":
        return {"use_vllm": True, "vllm_mode": "colocate", **_vllm_fields(options, where)}
    return {"use_vllm": True, "vllm_mode": "server", **_server_fields(options, where)}


def _vllm_fields(options: dict[str, Any], where: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in options.items():
        name = f"{where}.options.{key}"
        if key in COLOCATE_OPTIONS:
            fields[COLOCATE_OPTIONS[key]] = _checked(key, value, name)
            continue
        short = {v: k for k, v in COLOCATE_OPTIONS.items()}.get(key)
        if short:
            raise ValueError(f"{name}: write it as {where}.options.{short}")
        _trl_field(key, name, "vllm")
        if key in SERVER_ONLY:
            raise ValueError(f"{name}: TRL reads it in server mode only (backend openai with server: trl)")
        fields[key] = value
    return fields


def _server_fields(options: dict[str, Any], where: str) -> dict[str, Any]:
    from sftadapt.runtime.network import listed, url_host

    server = options.get("server")
    if server != TRL_SERVER:
        raise ValueError(
            f"{where}.options.server: {server!r}: TRL's client talks to one `trl vllm-serve` process (server: trl), "
            "which also takes the new weights after every step; a plain `vllm serve` or another OpenAI server cannot"
        )
    urls = listed(options.get("base_urls"), f"{where}.options.base_urls")
    if len(urls) != 1:
        raise ValueError(
            f"{where}.options.base_urls: {len(urls)} URLs: TRL's client talks to one `trl vllm-serve`; give exactly "
            "one (its tensor/data parallelism is that server's own flags)"
        )
    url_host(urls[0], f"{where}.options.base_urls")  # an http(s) URL with a host, or one line saying why not
    fields: dict[str, Any] = {"vllm_server_base_url": urls[0]}
    for key, value in options.items():
        if key in OPENAI_OPTIONS:
            continue
        name = f"{where}.options.{key}"
        if key in COLOCATE_OPTIONS or key in COLOCATE_ONLY:
            raise ValueError(
                f"{name}: TRL reads it in colocate mode only; a server takes it as its own flag "
                "(`trl vllm-serve --help`)"
            )
        _trl_field(key, name, "openai")
        fields[key] = value
    return fields


def _trl_field(key: str, name: str, backend: str) -> None:
    """`key` must be a `vllm_*` field of TRL's GRPOConfig the block does not set itself."""
    import difflib

    from trl import GRPOConfig

    known = sorted(f.name for f in dataclasses.fields(GRPOConfig) if f.name.startswith("vllm_"))
    if key in SET_BY_BLOCK:
        raise ValueError(f"{name}: the rollout_engine block sets it from its backend and base_urls")
    if key not in known:
        ours = list(COLOCATE_OPTIONS) if backend == "vllm" else list(OPENAI_OPTIONS)
        close = difflib.get_close_matches(key, known + ours, n=1)
        raise ValueError(
            f"{name}: not an option of backend {backend}: it takes {', '.join(ours)} and TRL's GRPOConfig vllm_* "
            "fields" + (f" (did you mean '{close[0]}'?)" if close else "")
        )


def _checked(key: str, value: Any, name: str) -> Any:
    if key == "tensor_parallel_size":
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} = {value!r}: a whole number of GPUs, at least 1")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{name} = {value!r}: the share of each GPU's memory vLLM takes, in (0, 1]")
    return float(value)


def check_one_spelling(opts: Any) -> None:
    """A non-hf `rollout_engine` and the TRL-named options (`use_vllm`, `vllm_*`, or `vllm_*` in `trl_args`) both
    choose TRL's rollouts: a config uses one of them (ValueError naming both keys)."""
    if opts.rollout_engine.backend == "hf":
        return
    chosen = f"rollout_engine.backend: {opts.rollout_engine.backend}"
    if opts.use_vllm:
        raise ValueError(
            f"{chosen} and use_vllm: true both choose TRL's rollouts: keep rollout_engine and drop use_vllm and "
            "the other vllm_* options (they are its TRL-named spelling)"
        )
    defaults = {f.name: f.default for f in dataclasses.fields(opts)}
    changed = [k for k in TRL_NAMED if getattr(opts, k) != defaults[k]]
    changed += [f"trl_args.{k}" for k in opts.trl_args if k.startswith("vllm_")]
    if changed:
        raise ValueError(
            f"{chosen} and {', '.join(changed)} both set TRL's rollouts: put TRL vllm_* fields in "
            "rollout_engine.options instead"
        )


def rollout_kwargs(opts: Any) -> dict[str, Any]:
    """GRPOConfig's rollout fields for GRPOOptions `opts`: the TRL-named options as they are, then what a non-hf
    `rollout_engine` sets over them (the two spellings exclusive: `check_one_spelling`)."""
    check_one_spelling(opts)
    kwargs = {key: getattr(opts, key) for key in TRL_NAMED}
    kwargs.update(rollout_fields(opts.rollout_engine))
    return kwargs
