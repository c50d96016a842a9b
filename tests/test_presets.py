"""Every named preset points at an installed embodiment and a family that matches its config."""

import json
from pathlib import Path

import pytest
import sentencepiece

from openpi_core.plugins import PluginManager
from openpi_core.serialization import unstructure
from openpi_embodiment_aloha import plugin as aloha
from openpi_embodiment_droid import plugin as droid
from openpi_embodiment_libero import plugin as libero
from openpi_embodiment_ur5 import plugin as ur5

MANAGER = PluginManager(
    entry_points=False, plugins=[("aloha", aloha), ("droid", droid), ("libero", libero), ("ur5", ur5)]
)
PRESETS = sorted(MANAGER.registry("config").names())


def test_openpi_inference_presets_are_present():
    assert {"pi0_aloha_sim", "pi05_droid", "pi0_droid", "pi0_fast_droid", "pi05_libero"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_is_consistent(name):
    preset = MANAGER.registry("config").get(name)
    embodiment = MANAGER.registry("embodiment").get(preset.embodiment)
    assert preset.family == preset.model_config.family
    assert embodiment.action_dim <= preset.model_config.action_dim
    if not preset.checkpoint.startswith("gs://"):  # trained here and shipped: stats and tokenizer inside
        assert preset.norm_stats is None
        assert (Path(preset.checkpoint) / "norm_stats.json").is_file()
        assert (Path(preset.checkpoint) / "assets" / "tokenizer.model").is_file()
        stored = json.loads((Path(preset.checkpoint) / "manifest.json").read_text())["config"]
        assert stored == json.loads(json.dumps(unstructure(preset.model_config))), (
            "the shipped weights were trained with another model config"
        )
    else:
        assert preset.checkpoint.startswith("gs://openpi-assets/checkpoints/")
        assert preset.norm_stats.startswith(preset.checkpoint + "/assets/")
    if preset.tokenizer is not None:
        pieces = sentencepiece.SentencePieceProcessor(model_file=preset.tokenizer).get_piece_size()
        assert pieces <= preset.model_config.vocab_size
        assert preset.default_prompt is not None
