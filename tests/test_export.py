"""`sftadapt data export` round trips, each on an adapted set (Example rows + summary) written by the test:

- trl: TRL's own SFTTrainer tokenises the export into exactly our training tokens and trains 2 steps (tiny model,
  CPU);
- hf: `datasets.load_dataset(DIR)` reads the folder, card included;
- llamafactory / verl / trl: the prompt, or the messages rendered through the model's chat template, equal our
  SOLVE prompt, checked with the real SmolLM2 tokenizer (`smollm2-135m`);
- verl: verl itself is not a dependency (it needs a GPU stack to import: see docs/formats.md), so the export is
  checked against the fields its dataset classes read, from verl's source (volcengine/verl at b178a3c:
  verl/utils/dataset/sft_dataset.py SFTDataset, rl_dataset.py RLHFDataset, multiturn_sft_dataset.py, and
  docs/preparation/prepare_data.rst): the test rebuilds SFTDataset's prompt/response tokenisation from those
  fields with pandas, as verl reads them, and compares it to ours;
- llamafactory: the `dataset_info.json` entry is checked against what LLaMA-Factory's parser
  (src/llamafactory/data/parser.py DatasetAttr.join) and sharegpt converter (converter.py) read: the keys,
  the tags, and the user/assistant alternation by position;
- every export and every adapted set gets a dataset card with YAML front matter (license from SOURCE.md).
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sftadapt.cli import app
from sftadapt.data import prompts
from sftadapt.data.card import read_card
from sftadapt.data.records import Example, write_json, write_records

runner = CliRunner()


def adapted_set(tmp_path, model="tiny-random"):
    """A small adapted set as rewrite writes it: train.jsonl, summary.json, and a source with a SOURCE.md."""
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    (src_dir / "SOURCE.md").write_text("# toy\n\n- License: MIT (c) 2021 OpenAI (copied)\n")
    (src_dir / "train.jsonl").write_text(json.dumps({"question": "q", "answer": "x\n#### 1"}) + "\n")
    prov = {
        "method": "mind_the_gap",
        "model": {"spec": model, "path": "/x", "revision": "abc123"},
        "chat": True,
        "verifier": {"math_verify": "0.9.0", "sftadapt": "0.1"},
    }
    rows = [
        Example(
            id=f"p{i}",
            problem=f"Tom has {i} apples and buys {i + 2}. How many apples?",
            response=f"{i} + {i + 2} = {2 * i + 2}.\nThe final answer is $\\boxed{{{2 * i + 2}}}$.",
            answer=str(2 * i + 2),
            origin=origin,
            target_logprob_mean=-0.5 - i,
            self_pass_rate=0.25 * i,
            provenance=prov,
        )
        for i, origin in enumerate(["self", "guided", "expert", "self"])
    ]
    folder = tmp_path / "rewrite"
    folder.mkdir()
    write_records(folder / "train.jsonl", rows)
    write_json(
        folder / "summary.json",
        {
            "method": "mind_the_gap",
            "model": prov["model"],
            "data": str(src_dir / "train.jsonl"),
            "config": {"k": 4, "out": "x"},
            "gap": {"expert_set": -3.5, "final_set": -1.1},
        },
    )
    return folder, rows


def _export(folder, fmt, out, *extra):
    result = runner.invoke(app, ["data", "export", str(folder), "--format", fmt, "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    assert "differs from training's: 0" in result.output
    return result


def _ours(tok, ex):
    prompt = prompts.solve_prompt(tok, ex.problem)
    return prompts.prompt_token_ids(tok, prompt), prompts.response_token_ids(tok, ex.response)


def test_trl_export_trains_two_steps_with_trls_sfttrainer(tmp_path):
    import datasets
    from trl import SFTConfig, SFTTrainer

    from sftadapt.runtime.models import load_model, load_tokenizer

    folder, rows = adapted_set(tmp_path)
    out = tmp_path / "trl"
    _export(folder, "trl", out)
    ds = datasets.load_dataset("json", data_files=str(out / "train.jsonl"), split="train")
    assert set(ds.column_names) >= {"prompt", "completion", "origin", "gap", "provenance"}
    tok = load_tokenizer("tiny-random")
    model = load_model("tiny-random", dtype="float32", device="cpu")
    model.train()
    trainer = SFTTrainer(
        model=model,
        processing_class=tok,
        train_dataset=ds,
        args=SFTConfig(
            output_dir=str(tmp_path / "run"),
            max_steps=2,
            per_device_train_batch_size=2,
            learning_rate=1e-3,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            dataloader_num_workers=0,
        ),
    )
    # TRL's own tokenisation of our export is our training sequence, with the loss on the response only
    for ex, row in zip(rows, trainer.train_dataset):
        prompt_ids, response_ids = _ours(tok, ex)
        assert row["input_ids"] == prompt_ids + response_ids
        assert row["labels"] == [-100] * len(prompt_ids) + response_ids
    trainer.train()
    assert trainer.state.global_step == 2
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 2 and all(loss == loss and loss > 0 for loss in losses)


def test_every_export_carries_our_prompt_through_smollm2s_chat_template(tmp_path):
    """The real SmolLM2 tokenizer (its chat template adds a default system turn): trl's prompt text, and the
    llamafactory / verl / hf messages rendered through the template, are the SOLVE prompt training uses."""
    import pandas as pd

    from sftadapt.runtime.models import load_tokenizer

    folder, rows = adapted_set(tmp_path, model="smollm2-135m")
    tok = load_tokenizer("smollm2-135m")
    for fmt in ("trl", "llamafactory", "verl", "hf"):
        _export(folder, fmt, tmp_path / fmt)
    trl_rows = [json.loads(line) for line in (tmp_path / "trl" / "train.jsonl").read_text().splitlines()]
    lf_rows = json.loads((tmp_path / "llamafactory" / "train.json").read_text())
    verl_rows = pd.read_parquet(tmp_path / "verl" / "train.parquet").to_dict("records")
    hf_rows = pd.read_parquet(next((tmp_path / "hf" / "data").glob("*.parquet"))).to_dict("records")
    for ex, trl_row, lf_row, verl_row, hf_row in zip(rows, trl_rows, lf_rows, verl_rows, hf_rows):
        ours = prompts.solve_prompt(tok, ex.problem)
        assert trl_row["prompt"] == ours and trl_row["completion"] == ex.response + "<|im_end|>"
        for messages in (lf_row["messages"], list(verl_row["messages"]), list(hf_row["messages"])):
            messages = [dict(m) for m in messages]
            assert tok.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=False) == ours
            whole = tok.apply_chat_template(messages, tokenize=False)
            assert whole.startswith(ours + ex.response + "<|im_end|>")
        assert [dict(m) for m in verl_row["prompt"]] == [dict(lf_row["messages"][0])]


def test_hf_export_is_read_by_datasets_load_dataset_with_its_card(tmp_path):
    import datasets

    folder, rows = adapted_set(tmp_path)
    out = tmp_path / "hf"
    _export(folder, "hf", out)
    ds = datasets.load_dataset(str(out), split="train")
    assert ds.num_rows == len(rows) and ds["id"] == [r.id for r in rows]
    assert ds["origin"] == ["self", "guided", "expert", "self"] and ds["gap"][1] == pytest.approx(-1.5)
    assert json.loads(ds["provenance"][0])["model"]["revision"] == "abc123"
    card = read_card(out)
    assert card["license"] == "mit" and card["configs"][0]["data_files"][0]["path"] == "data/train-*.parquet"
    info = card["sftadapt"]
    assert info["source"]["text"].startswith("MIT") and info["target_model"]["revision"] == "abc123"
    assert info["origin_shares"] == {"expert": 0.25, "guided": 0.25, "self": 0.5}
    assert info["gap"]["before_expert_set"] == -3.5 and info["gap"]["after_adapted_set"] == -1.1
    assert info["verifier"]["math_verify"] == "0.9.0" and info["method"] == "mind_the_gap"
    assert info["command"].startswith("sftadapt data export") or "library call" in info["command"]
    assert info["options"] == {"k": 4}


def test_verl_export_has_the_fields_verls_sft_and_rl_datasets_read(tmp_path):
    import pandas as pd

    from sftadapt.data.sources import load_problems
    from sftadapt.runtime.models import load_tokenizer

    folder, rows = adapted_set(tmp_path)
    out = tmp_path / "verl"
    _export(folder, "verl", out)
    frame = pd.read_parquet(out / "train.parquet")  # verl reads its parquet with pandas
    # RLHFDataset: prompt_key "prompt" (a chat list), reward_model.ground_truth, data_source, extra_info.index
    assert {"data_source", "prompt", "ability", "reward_model", "extra_info", "messages"} <= set(frame.columns)
    tok = load_tokenizer("tiny-random")
    for ex, (_, row) in zip(rows, frame.iterrows()):
        assert row["reward_model"]["ground_truth"] == ex.answer and row["data_source"] == "lighteval/MATH"
        assert row["prompt"][0]["role"] == "user" and isinstance(row["extra_info"]["index"], int)
        # SFTDataset (prompt_key/response_key = extra_info, dict keys question/answer): one user turn through the
        # chat template, then the response + EOS, each tokenised without special tokens
        prompt_chat = [{"role": "user", "content": row["extra_info"]["question"]}]
        verl_prompt = tok(
            tok.apply_chat_template(prompt_chat, add_generation_prompt=True, tokenize=False), add_special_tokens=False
        )["input_ids"]
        verl_response = tok(row["extra_info"]["answer"] + tok.eos_token, add_special_tokens=False)["input_ids"]
        assert (verl_prompt, verl_response) == _ours(tok, ex)
        assert row["origin"] == ex.origin and json.loads(row["provenance"])["method"] == "mind_the_gap"
    # and our own verl reader reads it back: the same problems, answers and solutions
    back = load_problems(out / "train.parquet")
    assert back.fmt == "verl" and [(p.problem, p.answer, p.solution) for p in back.problems] == [
        (ex.problem, ex.answer, ex.response) for ex in rows
    ]


def test_llamafactory_export_entry_matches_its_parser(tmp_path):
    folder, rows = adapted_set(tmp_path)
    out = tmp_path / "lf"
    _export(folder, "llamafactory", out, "--name", "my_set")
    info = json.loads((out / "dataset_info.json").read_text())
    entry = info["my_set"]
    # DatasetAttr: a local file entry is `file_name`; `formatting` one of alpaca | sharegpt | openai; `columns`
    # and `tags` keys are the ones DatasetAttr.join reads
    assert (out / entry["file_name"]).is_file() and entry["formatting"] == "sharegpt"
    assert set(entry["columns"]) <= {
        "prompt",
        "query",
        "response",
        "history",
        "messages",
        "system",
        "tools",
        "images",
        "videos",
        "audios",
        "chosen",
        "rejected",
        "kto_tag",
    }
    assert set(entry["tags"]) <= {
        "role_tag",
        "content_tag",
        "user_tag",
        "assistant_tag",
        "observation_tag",
        "function_tag",
        "system_tag",
    }
    data = json.loads((out / entry["file_name"]).read_text())
    assert len(data) == len(rows)
    tags = entry["tags"]
    for row in data:
        messages = row[entry["columns"]["messages"]]
        # SharegptDatasetConverter: odd turns carry the user tag, even turns the assistant tag, an even count
        roles = [m[tags["role_tag"]] for m in messages]
        assert roles == [tags["user_tag"], tags["assistant_tag"]]
        assert all(isinstance(m[tags["content_tag"]], str) for m in messages)
    assert read_card(out)["sftadapt"]["export"]["format"] == "llamafactory"
    # our sharegpt reader reads the export back
    from sftadapt.data.sources import load_problems

    back = load_problems(out / "train.json")
    assert back.fmt == "messages" and [p.answer for p in back.problems] == [r.answer for r in rows]


def test_export_refuses_what_it_should(tmp_path):
    folder, _ = adapted_set(tmp_path)
    result = runner.invoke(
        app, ["data", "export", str(tmp_path / "nope"), "--format", "trl", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "no adapted set here" in result.output
    result = runner.invoke(app, ["data", "export", str(folder), "--format", "axolotl", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "choose one of trl, llamafactory, verl, hf" in result.output
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = runner.invoke(app, ["data", "export", str(folder), "--format", "trl", "--out", str(mine)])
    assert result.exit_code == 2 and "not made by sftadapt" in result.output
    assert (mine / "notes.txt").read_text() == "keep me"
    # publishing needs --online; offline the folder is built and the upload refused in one line (no mock upload)
    result = runner.invoke(
        app,
        ["data", "export", str(folder), "--format", "hf", "--out", str(tmp_path / "h"), "--push-to-hub", "me/my-set"],
    )
    assert result.exit_code == 2 and "pass --online" in result.output
    assert (tmp_path / "h" / "README.md").is_file()
