"""The loss registry (train/losses.py): a loss registered from outside is accepted by TrainConfig, gets its own
options through `loss_options`, trains, and the model card prints its formula."""

import json

import pytest
import torch
from test_train import _config, _examples

from sftadapt.config import ConfigError, load_config
from sftadapt.data.records import write_records
from sftadapt.train import losses
from sftadapt.train.losses import LOSSES, Loss, register_loss, token_weights
from sftadapt.train.stage import TrainConfig, read_log, train

FORMULA = "L = -Σ_t sg(0.5 · scale) · log π(y_t) / N"


def _half_weights(logp, mask, scale: float = 1.0, **_):
    return 0.5 * scale * mask.to(logp.dtype), torch.zeros_like(mask)


@pytest.fixture
def half():
    """A constant-weight loss registered for one test (TrainConfig and the stage were imported before it)."""
    assert register_loss(Loss("half", _half_weights, {"scale": 1.0}, FORMULA)) is None
    yield LOSSES["half"]
    del LOSSES["half"]


def test_register_refuses_a_taken_name_unless_replaced(half):
    with pytest.raises(ValueError, match="'half' is already registered"):
        register_loss(Loss("half", _half_weights))
    other = Loss("half", _half_weights, {"scale": 1.0}, "another formula")
    assert register_loss(other, replace=True) is half and LOSSES["half"] is other
    assert "half" in losses.LOSS_TYPES  # the old name stays current


def test_registered_loss_weights_take_its_options(half):
    logp, mask = torch.log(torch.full((1, 3), 0.5)), torch.tensor([[True, True, False]])
    weights, clipped = token_weights(logp, mask, "half", scale=3.0)
    assert weights.tolist() == [[1.5, 1.5, 0.0]] and not clipped.any()
    assert token_weights(logp, mask, "half")[0].tolist() == [[0.5, 0.5, 0.0]]  # the declared default
    with pytest.raises(ValueError, match="loss 'half' has no option temperature; its options: scale"):
        token_weights(logp, mask, "half", temperature=2.0)


def test_train_config_accepts_a_registered_loss_and_checks_its_options(half):
    cfg = load_config(TrainConfig, None, ["loss=half", "loss_options.scale=0.8"])
    assert cfg.loss_values() == {"scale": 0.8}
    with pytest.raises(ConfigError, match=r"loss_options\.scal: loss 'half' has no such option; its options: scale"):
        load_config(TrainConfig, None, ["loss=half", "loss_options.scal=0.8"])
    # a built-in loss's options are fields of the config, not loss_options
    with pytest.raises(ConfigError, match=r"loss_options\.dft_floor: set it with the option 'dft_floor'"):
        load_config(TrainConfig, None, ["loss=dft", "loss_options.dft_floor=0.1"])
    with pytest.raises(ConfigError, match="loss = 'halff'"):
        load_config(TrainConfig, None, ["loss=halff"])


def test_a_registered_loss_trains_and_the_card_prints_its_formula(half, tmp_path):
    from sftadapt.runtime.models import load_tokenizer

    data = tmp_path / "d.jsonl"
    write_records(data, _examples(load_tokenizer("tiny-random"), 4))
    cfg = _config(tmp_path, data, "half", loss="half", loss_options={"scale": 0.8}, max_steps=2)
    assert train(cfg)["steps"] == 2
    rows = read_log(cfg.out)
    assert len(rows) == 2
    for row in rows:  # the option reached the trainer: every weight is 0.5 · 0.8, the loss 0.4 × the plain nll
        assert row["weight_mean"] == pytest.approx(0.4) and row["weight_max"] == pytest.approx(0.4)
        assert row["loss"] == pytest.approx(0.4 * row["nll"], rel=1e-3)
    card = (tmp_path / "half" / "README.md").read_text(encoding="utf-8")
    assert f"- `half`: {FORMULA};" in card and f"- options: {json.dumps({'scale': 0.8})}" in card


def test_a_registered_loss_is_on_the_reference_page(half):
    from sftadapt.stage_cli import reference_markdown

    assert f"| `half` | {FORMULA} | `scale` (1.0) |" in reference_markdown()
