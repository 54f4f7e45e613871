"""The shared trainer options (runtime/trainer_options.py): declared once for TrainConfig and GRPOOptions, the
defaults each had kept, and one pass-through rule for trainer_args and trl_args."""

import dataclasses

import pytest
from transformers import TrainingArguments
from trl import GRPOConfig

from sftadapt.config import ConfigError, load_config
from sftadapt.rl.grpo import GRPOOptions, grpo_kwargs
from sftadapt.runtime.trainer_options import FIXED, OVERRIDABLE, TrainerOptions, shared_names
from sftadapt.train.stage import TrainConfig, _training_args, _training_kwargs

# the defaults each class had before the shared block: config files and --set keys rely on them
DEFAULTS = {
    TrainConfig: {"lr": 5e-5, "max_steps": -1, "warmup_ratio": 0.1, "scheduler": "cosine", "save_steps": 200},
    GRPOOptions: {"lr": None, "max_steps": 100, "warmup_ratio": 0.0, "scheduler": "constant", "save_steps": 50},
}
SAME = {
    "max_grad_norm": 1.0,
    "seed": 0,
    "lora": False,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lora_target_modules": "all-linear",
    "dtype": "auto",
    "weights_dtype": "float32",
    "gradient_checkpointing": False,
    "logging_steps": 1,
    "save_total_limit": 2,
    "resume": "auto",
}


@pytest.mark.parametrize("cls", [TrainConfig, GRPOOptions], ids=lambda c: c.__name__)
def test_shared_options_are_declared_once_and_keep_each_default(cls):
    assert issubclass(cls, TrainerOptions)
    base = {f.name: f for f in dataclasses.fields(TrainerOptions)}
    own = set(cls.__dict__.get("__annotations__", {}))
    for name in own & set(base):  # a redeclaration only changes the default
        assert getattr(cls(), name) != base[name].default, (cls.__name__, name)
    assert {name: getattr(cls(), name) for name in shared_names()} == {**SAME, **DEFAULTS[cls]}


@pytest.mark.parametrize("cls", [TrainConfig, GRPOOptions], ids=lambda c: c.__name__)
def test_resume_takes_either_spelling(cls):
    assert load_config(cls, None, ["resume=no"]).resume is False
    assert load_config(cls, None, ["resume=auto"]).resume == "auto"
    assert load_config(cls, None, ["resume=runs/x/checkpoint-4"]).resume == "runs/x/checkpoint-4"


@pytest.mark.parametrize(
    ("cls", "field", "option"),
    [
        (TrainConfig, "learning_rate", "lr"),
        (TrainConfig, "save_strategy", "save_steps"),
        (TrainConfig, "per_device_train_batch_size", "batch_size"),
        (GRPOOptions, "learning_rate", "lr"),
        (GRPOOptions, "max_steps", "max_steps"),
        (GRPOOptions, "per_device_train_batch_size", "num_generations"),
        (GRPOOptions, "vllm_mode", "vllm_mode"),
        (GRPOOptions, "report_to", "report_to"),
    ],
)
def test_a_field_one_of_our_options_sets_is_refused_naming_the_option(cls, field, option):
    what = cls.PASSTHROUGH
    with pytest.raises(ConfigError, match=rf"{what}\.{field}: set it with our option '{option}' instead"):
        load_config(cls, None, [f"{what}.{field}=1"])


@pytest.mark.parametrize("cls", [TrainConfig, GRPOOptions], ids=lambda c: c.__name__)
def test_a_field_training_depends_on_is_refused_with_the_reason(cls):
    with pytest.raises(ConfigError, match=rf"{cls.PASSTHROUGH}\.remove_unused_columns: sftadapt keeps it False"):
        load_config(cls, None, [f"{cls.PASSTHROUGH}.remove_unused_columns=true"])


def test_every_field_our_builders_set_is_owned_fixed_or_overridable(tmp_path):
    train_set = set(_training_kwargs(TrainConfig(out=str(tmp_path / "t"))))
    grpo_set = set(grpo_kwargs(GRPOOptions(), tmp_path / "g"))
    for fields, cls, args_class in ((train_set, TrainConfig, TrainingArguments), (grpo_set, GRPOOptions, GRPOConfig)):
        loose = fields - set(cls.OWNED) - set(FIXED) - set(OVERRIDABLE)
        assert not loose, (cls.__name__, loose)  # a new field we set must join one of the three
        library = {f.name for f in dataclasses.fields(args_class)}
        assert set(OVERRIDABLE) <= fields <= library


def test_a_field_we_set_without_an_option_can_be_replaced():
    cfg = load_config(TrainConfig, None, ["trainer_args.dataloader_num_workers=1", "out=/tmp/x"])
    assert _training_args(cfg).dataloader_num_workers == 1  # it used to clash with ours (a TypeError)
    opts = load_config(GRPOOptions, None, ["trl_args.dataloader_num_workers=1"])
    assert opts.trl_args == {"dataloader_num_workers": 1}
