"""A shipped preset never warns about its own default prompt; a user's long prompt still does."""

import logging
from pathlib import Path

import numpy as np
import pytest

from openpi_core.plugins import PluginManager, use_plugin_manager
from openpi_core.tokenizers import PaligemmaTokenizer
from openpi_embodiment_aloha import plugin as aloha
from openpi_embodiment_droid import plugin as droid
from openpi_embodiment_libero import plugin as libero
from openpi_embodiment_ur5 import plugin as ur5

TOKENIZER_LOGGER = "openpi_core.tokenizers"
PLUGINS = [("aloha", aloha), ("droid", droid), ("libero", libero), ("ur5", ur5)]
PRESETS = PluginManager(entry_points=False, plugins=PLUGINS).registry("config").entries
LOCAL_TOKENIZER_PRESETS = sorted(
    name
    for name, entry in PRESETS.items()
    if entry.item.default_prompt is not None and entry.item.tokenizer and Path(entry.item.tokenizer).is_file()
)
"""Presets with a default prompt whose tokenizer ships with them (the others download PaliGemma's)."""


def truncation_warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if "truncating" in record.getMessage()]


def test_some_shipped_preset_has_its_own_tokenizer():
    assert "pi0_aloha_sim_small" in LOCAL_TOKENIZER_PRESETS


@pytest.mark.parametrize("name", LOCAL_TOKENIZER_PRESETS)
def test_shipped_default_prompt_fits_the_model(name, caplog):
    preset = PRESETS[name].item
    tokenizer = PaligemmaTokenizer(preset.model_config.max_token_len, preset.tokenizer)
    with caplog.at_level(logging.WARNING, logger=TOKENIZER_LOGGER):
        _, mask = tokenizer.tokenize(preset.default_prompt)
    assert truncation_warnings(caplog) == []
    assert mask.sum() <= preset.model_config.max_token_len


@pytest.fixture(scope="module")
def manager():
    torch_backend = pytest.importorskip("openpi_backend_torch.plugin")
    manager = PluginManager(entry_points=False, plugins=[*PLUGINS, ("torch", torch_backend)])
    with use_plugin_manager(manager):
        yield manager


def sim_observation(prompt: str | None = None) -> dict:
    state = np.zeros(14)
    state[[6, 13]] = 0.5
    observation = {"images": {"cam_high": np.zeros((3, 224, 224), np.uint8)}, "state": state}
    return observation if prompt is None else {**observation, "prompt": prompt}


@pytest.mark.slow
def test_serving_the_small_sim_checkpoint_warms_up_without_a_truncation_warning(manager, caplog):
    from openpi_core.policy import create_policy

    policy = create_policy("pi0_aloha_sim_small", backend="torch")
    assert policy.default_prompt == "Transfer cube"
    with caplog.at_level(logging.WARNING, logger=TOKENIZER_LOGGER):
        policy.warmup()  # what the server does before it answers
        policy.infer(sim_observation())  # a client that sends no prompt, as openpi's ALOHA-sim example
        policy.infer(sim_observation("Transfer cube"))
    assert truncation_warnings(caplog) == []

    with caplog.at_level(logging.WARNING, logger=TOKENIZER_LOGGER):
        policy.infer(sim_observation("transfer the cube to the other arm"))
    (warning,) = truncation_warnings(caplog)
    assert "more than max_token_len 12: truncating" in warning


def test_the_policy_default_prompt_is_the_one_an_observation_without_a_prompt_gets(manager):
    from openpi_core.policy import create_policy

    policy = create_policy("pi0_aloha_sim_small", backend="torch", default_prompt="transfer")
    assert policy.default_prompt == "transfer"
    assert policy.prepare(sim_observation()).tokenized_prompt.tolist() == (
        policy.prepare(sim_observation("transfer")).tokenized_prompt.tolist()
    )
