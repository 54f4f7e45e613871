"""What a stage may reach by itself while sftadapt is offline (no `--online`, no `online: true`).

offline.py turns the hub libraries offline. This module covers the connections a config asks for by option,
which those switches do not stop:

- the `openai` engine backend's servers (`engine.options.base_urls`): offline, only loopback hosts (127.0.0.0/8,
  ::1, also written as ::ffff:127.x.x.x, and the name `localhost`) and the hosts the user lists in
  `engine.options.allow_hosts`. Any other name counts as remote and is not resolved to decide, because the
  lookup itself already leaves the machine; other spellings of a loopback address (2130706433, 127.1) are names.
- `push_to_hub` in `trainer_args` / `trl_args` (the trainer uploads the model to the hub): online only.

`check_config` runs when a stage or run config is built (config.build_config), so the refusal comes before
any work, `sftadapt run --dry-run` included; the openai engine and the trainers check again where they
connect, for callers that build them directly. Every refusal is one line naming the option and the fix.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import urllib.parse
from typing import Any

_PASSTHROUGH = ("trainer_args", "trl_args")  # dicts handed to transformers/TRL argument classes as they are


def online_now() -> bool:
    """What the entry point decided: `--online`, or a config's `online: true` once the stage honoured it."""
    from sftadapt.runtime import offline

    return not offline.is_offline()


def is_loopback(host: str) -> bool:
    """True for a loopback address literal or the name `localhost`; every other name is remote."""
    host = host.lower().strip("[]")
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1 over an IPv6 socket
    return address.is_loopback


def url_host(url: Any, field: str) -> str:
    """The host an HTTP client connects to for `url`: the same `urlsplit(url).hostname` the openai backend uses,
    so a userinfo or fragment trick (http://127.0.0.1@evil.com/) is judged by where it really goes."""
    host = None
    if isinstance(url, str):
        try:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme in ("http", "https") and parts.port != -1:  # .port raises on a non-number port
                host = parts.hostname
        except ValueError:  # an unbalanced [ or a port outside 0-65535
            host = None
    if not host:
        raise ValueError(f"{field}: {url!r} is not an http:// or https:// URL, e.g. http://127.0.0.1:8000/v1")
    return host


def listed(value: Any, field: str) -> list[str]:
    """A list option given as a list or as one comma-separated string (`--engine-option base_urls=a,b`)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"{field}: give a list of strings, not {value!r}")


def _same_host(a: str, b: str) -> bool:
    a, b = a.lower().strip("[]"), b.lower().strip("[]")
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def check_servers(urls: Any, allow_hosts: Any, online: bool, field: str, allow_field: str) -> None:
    """Refuse (ValueError, one line) a server URL that is malformed, or, offline, on a host neither loopback nor
    in `allow_hosts`. `field` / `allow_field` name the options as the user wrote them."""
    allowed = listed(allow_hosts, allow_field)
    for url in listed(urls, field):
        host = url_host(url, field)
        if online or is_loopback(host) or any(_same_host(host, a) for a in allowed):
            continue
        raise ValueError(
            f"{field}: host '{host}' is not a loopback address (127.x.x.x, ::1, localhost) and sftadapt is "
            f"offline, so nothing is sent there: pass --online, or list the host in {allow_field}"
        )


def check_engine_options(options: dict, online: bool, where: str) -> None:
    """The openai backend's servers in an engine block's `options` (`where`: the block, e.g. `eval.engine`)."""
    check_servers(
        options.get("base_urls"),
        options.get("allow_hosts"),
        online,
        f"{where}.options.base_urls",
        f"{where}.options.allow_hosts",
    )


def check_push(args: dict, what: str, online: bool) -> None:
    """Refuse `push_to_hub` in a trainer pass-through dict (`what`: trainer_args / trl_args) while offline."""
    if args.get("push_to_hub") and not online:
        raise ValueError(
            f"{what}.push_to_hub: uploading the model to the hub needs the network and sftadapt is offline: "
            "pass --online (or set online: true)"
        )


def check_cluster_address(address: Any, allow_hosts: Any, online: bool, where: str) -> None:
    """A Ray cluster `address` (engine backend ray) by the servers' rule: unset (a cluster of this process) and
    `auto` (the one `ray start` made on this node) are local; host:port or ray://host:port must be loopback or in
    allow_hosts unless online. Ray reads RAY_ADDRESS before `auto`, so that one is checked in its place."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or None
        if address in (None, "auto", "local"):
            return
    if address is None:
        return
    text = str(address)
    scheme, _, rest = text.rpartition("://")
    if scheme not in ("", "ray") or not rest:
        raise ValueError(f"{where}.address: {text!r} is not auto, host:port or ray://host:port")
    check_servers([f"http://{rest}"], allow_hosts, online, f"{where}.address", f"{where}.allow_hosts")


def check_config(cfg: Any) -> None:
    """Refuse what a stage or run config would send off this machine while offline: the config's own `online`
    counts as well as `--online`. Engine blocks and pass-through dicts are found at any depth, in nested
    configs and in the raw sections a run config hands its stages."""
    if getattr(cfg, "online", False) or online_now():
        return
    _check_vllm_server(cfg, "")
    for path, key, value in _walk(cfg, ""):
        if _is_openai_block(value):
            options = value.options if dataclasses.is_dataclass(value) else value.get("options")
            check_engine_options(options if isinstance(options, dict) else {}, False, path)
        elif _backend(value) == "ray":
            options = value.options if dataclasses.is_dataclass(value) else value.get("options")
            options = options if isinstance(options, dict) else {}
            check_cluster_address(options.get("address"), options.get("allow_hosts"), False, f"{path}.options")
        elif key in _PASSTHROUGH and isinstance(value, dict):
            check_push(value, path, False)
        _check_vllm_server(value, path)


def _check_vllm_server(value: Any, path: str) -> None:
    """TRL's rollouts from a `trl vllm-serve` server (`use_vllm` with `vllm_mode: server`), set in GRPO options or
    in their `trl_args`: offline, the server must be on this machine. 0.0.0.0, TRL's default host, is accepted:
    a client that connects to it reaches this machine."""
    get = (lambda k: getattr(value, k, None)) if dataclasses.is_dataclass(value) else getattr(value, "get", None)
    if get is None or not get("use_vllm") or get("vllm_mode") != "server":
        return
    extra = get("trl_args") if isinstance(get("trl_args"), dict) else {}
    field = f"{path + '.' if path else ''}trl_args.vllm_server_base_url"
    url = extra.get("vllm_server_base_url")
    host = url_host(url, field) if url else str(extra.get("vllm_server_host") or get("vllm_server_host") or "0.0.0.0")
    if host != "0.0.0.0" and not is_loopback(host):
        raise ValueError(
            f"{field if url else (path + '.' if path else '') + 'vllm_server_host'}: '{host}' is not on this machine "
            "and sftadapt is offline, so no rollout request goes there: pass --online"
        )


def _backend(value: Any) -> str | None:
    """The backend an engine block (an EngineConfig or its dict) names; None for anything else."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return getattr(value, "backend", None) if hasattr(value, "options") else None
    return value.get("backend") if isinstance(value, dict) else None


def _is_openai_block(value: Any) -> bool:
    # only the openai backend connects anywhere; hf and vllm run in this process
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return getattr(value, "backend", None) == "openai" and hasattr(value, "options")
    return isinstance(value, dict) and value.get("backend") == "openai"


def _walk(value: Any, path: str):
    """(path, key, value) of every dataclass field and dict item under `value`."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    elif isinstance(value, dict):
        items = [(k, v) for k, v in value.items() if isinstance(k, str)]
    else:
        return
    for key, item in items:
        where = f"{path}.{key}" if path else key
        yield where, key, item
        yield from _walk(item, where)
