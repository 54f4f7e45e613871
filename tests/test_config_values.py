"""Config values a hostile user may give: each is one clear error (ConfigError), through the loader and the CLI."""

import pytest
from typer.testing import CliRunner

from sftadapt.adapt.rewrite import RewriteConfig
from sftadapt.cli import app
from sftadapt.config import ConfigError, load_config, read_yaml
from sftadapt.eval.sample import SampleConfig

runner = CliRunner()


@pytest.mark.parametrize(
    "override, message",
    [
        ("verifier_timeout=0", "'verifier_timeout' = 0.0: must be > 0"),
        ("verifier_timeout=.nan", "must be a finite number"),
        ("temperature=-0.5", "'temperature' = -0.5: must be >= 0"),
        ("guided_temperature=.inf", "must be a finite number"),
        ("limit=-3", "'limit' = -3: must be >= 1"),
        ("limit=0", "'limit' = 0: must be >= 1"),
        ("max_new_tokens=0", "'max_new_tokens' = 0"),
    ],
)
def test_bad_numbers_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(RewriteConfig, None, [override])


def test_duplicate_yaml_keys_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("k: 4\nlimit: 10\nk: 8\n")
    with pytest.raises(ConfigError, match="duplicate key 'k'"):
        read_yaml(path)
    nested = tmp_path / "n.yaml"
    nested.write_text("grpo:\n  beta: 0.1\n  beta: 0.2\n")
    with pytest.raises(ConfigError, match="duplicate key 'beta'"):
        read_yaml(nested)
    with pytest.raises(ConfigError, match="duplicate key"):
        load_config(SampleConfig, None, ["n={a: 1, a: 2}"])


def test_unsafe_tags_and_non_yaml_stay_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("k: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_yaml(path)
    path.write_bytes(b"\xff\xfe\x00k: 1")
    with pytest.raises(ConfigError):
        read_yaml(path)
    with pytest.raises(ConfigError, match="is a folder"):
        read_yaml(tmp_path)


def test_good_values_still_load():
    cfg = load_config(RewriteConfig, None, ["temperature=0", "limit=5", "verifier_timeout=0.5"])
    assert (cfg.temperature, cfg.limit, cfg.verifier_timeout) == (0.0, 5, 0.5)


def test_the_cli_shows_one_line_for_a_bad_value(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("verifier_timeout: .nan\n")
    result = runner.invoke(app, ["rewrite", "--config", str(config), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "must be a finite number" in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    result = runner.invoke(app, ["sample", "--limit", "-1", "--out", str(tmp_path / "o2")])
    assert result.exit_code == 2 and "'limit' = -1" in result.output
    result = runner.invoke(app, ["sample", "--temperature", "-1", "--out", str(tmp_path / "o3")])
    assert result.exit_code == 2 and "'temperature' = -1.0" in result.output


def test_eval_options_are_checked_like_every_stage_config(tmp_path):
    for args, message in (
        (["--limit", "-2"], "'limit' = -2"),
        (["--verify-timeout", "0"], "'verify_timeout' = 0.0"),
        (["--verify-timeout", "nan"], "'verify_timeout' = nan"),
    ):
        result = runner.invoke(app, ["eval", "--model", "tiny-random", "--out", str(tmp_path / "e"), *args])
        assert result.exit_code == 2 and message in result.output, result.output


def test_library_arguments_pass_through_by_name_and_misspellings_are_refused():
    from sftadapt.config import ConfigError, load_config
    from sftadapt.train.stage import TrainConfig, _training_args

    cfg = load_config(TrainConfig, None, ["trainer_args.optim=adafactor", "out=/tmp/x"])
    assert _training_args(cfg).optim.value == "adafactor"  # any TrainingArguments field reaches the trainer
    with pytest.raises(ConfigError, match="did you mean 'optim'"):
        load_config(TrainConfig, None, ["trainer_args.optimm=adafactor"])
    with pytest.raises(ConfigError, match="our option 'lr'"):  # a field we expose is set through our option
        load_config(TrainConfig, None, ["trainer_args.learning_rate=0.1"])
    from sftadapt.rl.grpo import GRPOOptions

    with pytest.raises(ConfigError, match="trl_args.vllm_mod is not a GRPOConfig field"):
        load_config(GRPOOptions, None, ["trl_args.vllm_mod=server"])
