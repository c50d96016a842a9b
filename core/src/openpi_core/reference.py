"""Reading a reference directory: weights, inputs and outputs recorded from openpi.

A reference directory (``../shared/reference/pi0`` and alike) holds
``manifest.json`` (every architecture number and array), ``params.safetensors``
(openpi JAX naming), optionally ``orbax_params/params`` and
``torch_state/model.safetensors``, and ``io.safetensors`` (inputs, intermediate
values, outputs). Nothing about sizes is assumed: everything comes from the manifest.
π0-FAST sets (``"model": "pi0_fast"``) describe a :class:`Pi0FASTConfig` and also
record the token masks of their prompts.
"""

import json
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from safetensors.numpy import load_file

from openpi_core.errors import InputError
from openpi_core.models.config import GemmaConfig, Pi0Config, Pi0FASTConfig, SiglipConfig
from openpi_core.observation import Observation

IMAGE_GRID_REPEAT = 4
"""Each stored 56x56 image cell is a 4x4 block of the 224x224 image the model saw."""


def decode_image(grid: np.ndarray, repeat: int) -> np.ndarray:
    """uint8 ``[B, h, w, 3]`` grid -> the exact float32 ``[B, h*repeat, w*repeat, 3]`` image."""
    image = np.repeat(np.repeat(grid, repeat, axis=1), repeat, axis=2)
    return image.astype(np.float32) / 64.0 - 1.0


def _gemma(section: dict[str, Any]) -> GemmaConfig:
    return GemmaConfig(**{field: section[field] for field in attrs.fields_dict(GemmaConfig)})


def _siglip(section: dict[str, Any]) -> SiglipConfig:
    return SiglipConfig(
        width=section["width"],
        depth=section["depth"],
        mlp_dim=section["mlp_dim"],
        num_heads=section["num_heads"],
        patch_size=tuple(section["patch_size"]),
        image_size=tuple(section["image_resolution"]),
        pool_type=section["pool_type"],
    )


def pi0_config_from_manifest(config: dict[str, Any]) -> Pi0Config:
    """The :class:`Pi0Config` described by a manifest's ``config`` section (float32)."""
    return Pi0Config(
        llm=_gemma(config["llm"]),
        action_expert=_gemma(config["action_expert"]),
        vision=_siglip(config["vision"]),
        vocab_size=config["vocab_size"],
        pi05=bool(config["pi05"]),
        action_dim=config["action_dim"],
        action_horizon=config["action_horizon"],
        max_token_len=config["max_token_len"],
        dtype="float32",
        image_keys=tuple(config["image_keys"]),
    )


def pi0_fast_config_from_manifest(config: dict[str, Any]) -> Pi0FASTConfig:
    """The :class:`Pi0FASTConfig` described by a π0-FAST manifest's ``config`` section (float32)."""
    return Pi0FASTConfig(
        llm=_gemma(config["llm"]),
        vision=_siglip(config["vision"]),
        vocab_size=config["llm"]["vocab_size"],
        action_dim=config["action_dim"],
        action_horizon=config["action_horizon"],
        max_token_len=config["max_token_len"],
        max_decoding_steps=config["max_decoding_steps"],
        eos_token=config["eos_token"],
        dtype="float32",
        image_keys=tuple(config["image_keys"]),
    )


@attrs.frozen
class ReferenceSet:
    """One reference directory, loaded.

    Attributes:
        path: the directory.
        manifest: the parsed ``manifest.json``.
        config: the model config it describes.
        io: every array of ``io.safetensors`` by its name (``inputs/noise``, ``outputs/actions``, …).
    """

    path: Path
    manifest: dict[str, Any]
    config: Pi0Config | Pi0FASTConfig
    io: dict[str, np.ndarray]

    @property
    def family(self) -> str:
        return str(self.manifest["model"])

    def observation(self, prefix: str = "inputs") -> Observation:
        """The observation the recorded outputs were computed from.

        ``prefix`` names the recorded prompt (``loss`` for π0-FAST's training prompt);
        images and state it does not record come from ``inputs``. The π0-FAST token
        masks are filled when recorded.
        """

        def array(name: str) -> np.ndarray:
            key = f"{prefix}/{name}"
            return self.io[key if key in self.io else f"inputs/{name}"]

        images, masks = {}, {}
        for key in self.config.image_keys:
            grid = array(f"image_q56/{key}")
            repeat = self.config.vision.image_size[0] // grid.shape[1]
            images[key] = decode_image(grid, repeat)
            masks[key] = array(f"image_mask/{key}").astype(bool)
        ar_mask = self.io.get(f"{prefix}/token_ar_mask")
        loss_mask = self.io.get(f"{prefix}/token_loss_mask")
        return Observation(
            images=images,
            image_masks=masks,
            state=array("state"),
            tokenized_prompt=self.io[f"{prefix}/tokenized_prompt"],
            tokenized_prompt_mask=self.io[f"{prefix}/tokenized_prompt_mask"].astype(bool),
            token_ar_mask=None if ar_mask is None else ar_mask.astype(np.int32),
            token_loss_mask=None if loss_mask is None else loss_mask.astype(bool),
        )

    def recorded_num_steps(self) -> dict[str, int]:
        """Output name -> the ``num_steps`` it was sampled with (``outputs/actions`` and
        ``outputs/actions_num_steps_N``)."""
        steps = {"outputs/actions": int(self.manifest["config"].get("num_steps", 10))}
        for name in self.io:
            if name.startswith("outputs/actions_num_steps_"):
                steps[name] = int(name.rsplit("_", 1)[1])
        return steps

    @property
    def openpi_params_path(self) -> Path:
        return self.path / "params.safetensors"

    @property
    def orbax_params_path(self) -> Path:
        return self.path / "orbax_params" / "params"

    @property
    def torch_state_path(self) -> Path:
        return self.path / "torch_state" / "model.safetensors"


def load_reference(path: str | Path) -> ReferenceSet:
    """Load a reference directory of a π0, π0.5 or π0-FAST model.

    Raises:
        InputError: the directory lacks ``manifest.json`` or ``io.safetensors``.
    """
    path = Path(path)
    for required in ("manifest.json", "io.safetensors"):
        if not (path / required).is_file():
            raise InputError(
                f"reference directory {path} should contain {required}; it holds "
                f"{sorted(p.name for p in path.iterdir()) if path.is_dir() else 'nothing'}"
            )
    manifest = json.loads((path / "manifest.json").read_text())
    read_config = pi0_fast_config_from_manifest if manifest["model"] == "pi0_fast" else pi0_config_from_manifest
    return ReferenceSet(
        path=path,
        manifest=manifest,
        config=read_config(manifest["config"]),
        io=load_file(str(path / "io.safetensors")),
    )
