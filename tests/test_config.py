import dataclasses
import tomllib
from pathlib import Path

import pytest

from bot.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def test_partial_config_keeps_defaults(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[index]\ndir = "elsewhere"\n[retrieval]\ntop_k = 5\n[discord]\nask_channels = ["123"]\n')
    config = load_config(path)
    assert config.data_dir == tmp_path / "elsewhere"
    assert config.retrieval.top_k == 5
    assert config.retrieval.candidates == Config().retrieval.candidates
    assert config.discord.ask_channels == [123]
    assert config.llm.base_url == ""


def test_a_retired_key_is_ignored_with_a_warning(tmp_path, caplog):
    path = tmp_path / "c.toml"
    path.write_text("[retrieval]\nrrf_k = 20\ntop_k = 6\n")
    config = load_config(path)
    assert config.retrieval.top_k == 6
    assert f"{path}: retrieval: rrf_k is no longer read" in caplog.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[index]\nbatchsize = 3\n", "unknown key"),
        ("[nope]\n", "unknown key"),
        ("[retrieval]\ntop_k = 'many'\n", "expected int"),
        ("[index\n", "not valid TOML"),
        ("[discord]\nuser_requests = -1\n", "discord.user_requests: must be 0 \\(no limit\\) or more"),
        ("[discord]\nserver_window_seconds = 0\n", "discord.server_window_seconds: must be positive"),
        ("[discord]\nuser_requests = 2.5\n", "user_requests: expected int"),
        ("[discord]\ncooldown_seconds = 10\n", "unknown key\\(s\\) cooldown_seconds"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, body, message):
    path = tmp_path / "c.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_shipped_config_lists_every_key_with_its_default():
    shipped = tomllib.loads((REPO / "config.toml").read_text())
    defaults = Config()
    for section in dataclasses.fields(defaults):
        if section.name == "base_dir":
            continue
        value = getattr(defaults, section.name)
        for key in dataclasses.fields(value):
            if key.name == "sources":
                continue  # feeds are examples in comments
            assert key.name in shipped[section.name], f"config.toml lacks [{section.name}] {key.name}"
            assert shipped[section.name][key.name] == getattr(value, key.name), f"[{section.name}] {key.name}"
