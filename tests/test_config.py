from dataclasses import dataclass

import pytest

from sftadapt.config import ConfigError, config_hash, load_config, option


@dataclass
class Demo:
    k: int = option(4, help="samples")
    temperature: float = option(1.0, help="T")
    keep: str = option("most_likely", help="policy")
    stop: list[str] = option([], help="stops")
    limit: int | None = option(None, help="N")

    def validate(self):
        if self.keep not in ("most_likely", "first"):
            raise ValueError(f"keep must be most_likely or first, got '{self.keep}'")


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("k: 8\ntemperature: 1\n")
    cfg = load_config(Demo, path, ["keep=first", "stop=[a, b]", "limit=5"])
    assert (cfg.k, cfg.temperature, cfg.keep, cfg.stop, cfg.limit) == (8, 1.0, "first", ["a", "b"], 5)
    assert isinstance(cfg.temperature, float)


def test_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown option 'tempature' \\(did you mean 'temperature'\\?\\)"):
        load_config(Demo, overrides=["tempature=0.7"])
    with pytest.raises(ConfigError, match="'k' = 'four' should be int"):
        load_config(Demo, overrides=["k=four"])
    with pytest.raises(ConfigError, match="keep must be"):
        load_config(Demo, overrides=["keep=best"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("k: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Demo, bad)
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config(Demo, overrides=["k"])


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("k: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Demo, path)


def test_hash_follows_options():
    assert config_hash(Demo()) == config_hash(Demo())
    assert config_hash(Demo()) != config_hash(Demo(k=5))
    assert config_hash(Demo(limit=1), exclude=("limit",)) == config_hash(Demo(limit=2), exclude=("limit",))


def test_engine_options_are_not_part_of_a_run_id_but_the_backend_is():
    from sftadapt.adapt.rewrite import RewriteConfig
    from sftadapt.config import decided_options
    from sftadapt.engines.base import EngineConfig

    here = RewriteConfig(engine=EngineConfig("openai", {"base_urls": ["http://a:8000/v1"], "concurrency": 4}))
    there = RewriteConfig(engine=EngineConfig("openai", {"base_urls": ["http://b:8000/v1"], "concurrency": 16}))
    assert config_hash(decided_options(here)) == config_hash(decided_options(there))
    assert decided_options(here)["engine"] == {"backend": "openai"}
    assert config_hash(decided_options(RewriteConfig())) != config_hash(decided_options(here))  # hf vs openai
