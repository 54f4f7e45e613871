"""The stage registry is the one place a stage is defined: a dummy stage, one module (tests/dummy_stage.py) and
one `registry.register` row, becomes a CLI command with its options, a step of `sftadapt run`'s graph, a validated
section of the run config and a section of docs/reference.md; and the shipped reference page is current."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sftadapt import arms, registry
from sftadapt.cli import app
from sftadapt.config import ConfigError

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def dummy():
    row = registry.Row(
        "dummy",
        "dummy_stage:STAGE",
        "A dummy stage: copies a marker row.",
        section="dummy",
        steps=(registry.Step("dummy", "dummy", ("dummy",)),),
    )
    registry.register(row)
    previous = arms.set_table((*arms.TABLE, arms.Arm("dummy_sft", "Dummy+SFT", "dummy", "nll", train={"lr": 1e-5})))
    yield row
    arms.set_table(previous)
    registry.unregister("dummy")


def test_a_registered_stage_is_a_command_with_its_options(dummy, tmp_path):
    listed = runner.invoke(app, ["--help"])
    assert "dummy" in listed.output and "A dummy stage" in listed.output
    shown = runner.invoke(app, ["dummy", "--help"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "--words" in text and "words of the marker each row gets [default: 2]" in text
    done = runner.invoke(app, ["dummy", "--out", str(tmp_path / "d"), "--words", "3"])
    assert done.exit_code == 0, done.output
    assert "dummy wrote 1 row with 3 words" in done.output
    assert (tmp_path / "d" / "train.jsonl").read_text().count("dummy") == 3
    bad = runner.invoke(app, ["dummy", "--out", str(tmp_path / "e"), "--set", "wordz=3"])
    assert bad.exit_code == 2 and "did you mean 'words'" in bad.output


def test_a_registered_stage_is_in_runs_graph_and_its_section_is_validated(dummy, tmp_path):
    from sftadapt.pipeline import load_run_config, run, stage_configs
    from sftadapt.run_config import seed_paths

    assert arms.SOURCE_STAGES["dummy"] == ("dummy",)
    assert arms.train_data("dummy") == "dummy/train.jsonl"
    sets = [f"out={tmp_path / 'run'}", "model=tiny-random", "arms=[base,dummy_sft]", "dummy.words=4"]
    cfg = load_run_config(ROOT / "configs" / "quickstart.yaml", sets)
    configs = stage_configs(cfg, 0, "tiny-random", seed_paths(tmp_path / "run"))
    assert configs["dummy"].words == 4 and configs["dummy"].out == str(tmp_path / "run" / "dummy")
    assert configs["train_dummy_sft"].data == [str(tmp_path / "run" / "dummy" / "train.jsonl")]
    assert configs["train_dummy_sft"].lr == 1e-5  # the arm's own training option, over the train section
    plan = run(cfg, progress=False, dry_run=True)["plan"][0]
    assert [r["stage"] for r in plan if r["stage"] in ("dummy", "train_dummy_sft", "eval_dummy_sft")] == [
        "dummy",
        "train_dummy_sft",
        "eval_dummy_sft",
    ]
    with pytest.raises(ConfigError, match="did you mean 'words'"):
        check = load_run_config(ROOT / "configs" / "quickstart.yaml", [*sets, "dummy.wordz=4"])
        stage_configs(check, 0, "tiny-random", seed_paths(tmp_path / "run"))
    with pytest.raises(ConfigError, match="words = 0"):
        stage_configs(load_run_config(None, [*sets, "dummy.words=0"]), 0, "tiny-random", seed_paths(tmp_path / "r"))


def test_the_reference_page_is_written_from_the_registry(dummy):
    from sftadapt.stage_cli import reference_markdown

    page = reference_markdown()
    assert "## sftadapt dummy" in page and "| `words` | `2` | words of the marker each row gets |" in page
    assert "`run` step `dummy`: builds training set `dummy`" in page
    assert "| `dummy_sft` | Dummy+SFT | `dummy` | nll | keep | `lr: 1e-05` |" in page


def test_the_shipped_reference_page_is_current():
    from sftadapt.stage_cli import reference_markdown

    shipped = (ROOT / "docs" / "reference.md").read_text()
    assert shipped == reference_markdown(), "docs/reference.md is stale: sftadapt config reference > docs/reference.md"
