"""Write the tiny demo checkpoint that ``pi demo`` and ``pi run serve --demo`` serve.

The checkpoint is a π0 of the reference-data size (two "dummy" Gemma experts, a
2-layer 32-wide SigLIP, a 256-entry vocabulary, action horizon 10, float32) with
seeded random weights, in this project's native format. Beside the weights it holds:

* ``norm_stats.json``: statistics of the 14-dim ALOHA state and actions, computed
  over the ALOHA embodiment's random example observations after its input transforms;
* ``assets/tokenizer.model``: a small SentencePiece model trained here on a few
  ALOHA prompts;
* ``README.md``: says that the weights are random.

Everything depends only on the seed, so running the script again rewrites the same
weights and statistics. Usage::

    python scripts/make_demo_checkpoint.py [--out core/src/openpi_core/demo_checkpoint]
"""

import argparse
import io
from pathlib import Path

import numpy as np
import sentencepiece

from openpi_core.checkpoints import save_checkpoint
from openpi_core.models.config import GEMMA_VARIANTS, Pi0Config, SiglipConfig
from openpi_core.models.pi0_weights import pi0_weight_schema
from openpi_core.norm_stats import RunningStats
from openpi_core.transforms import save_norm_stats
from openpi_embodiment_aloha.aloha import AlohaEmbodiment, AlohaInputs

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "core" / "src" / "openpi_core" / "demo_checkpoint"
SEED = 0
VOCAB_SIZE = 256

CONFIG = Pi0Config(
    llm=GEMMA_VARIANTS["dummy"],
    action_expert=GEMMA_VARIANTS["dummy"],
    vision=SiglipConfig(width=32, depth=2, mlp_dim=128, num_heads=2),
    vocab_size=VOCAB_SIZE,
    action_horizon=10,
    dtype="float32",
)

PROMPTS = (
    "Transfer cube",
    "transfer the cube to the other arm",
    "fold the towel",
    "open the tupperware and put the food on the plate",
    "uncap the pen",
    "pick up the cube and place it in the bowl",
    "do something",
    "Task: transfer cube, State: 0 1 2 3 4 5 6 7 8 9 10 64 100 127 128 200 255;\nAction: ",
)
"""The tokenizer's training text: openpi's ALOHA prompts and the π0.5 prompt format."""

README = """\
# Demo checkpoint: random weights

This folder is a tiny π0 checkpoint in this project's native format. `pi demo` and
`pi run serve --demo` serve it with the ALOHA embodiment.

**The weights are random** (seeded, not trained). The actions it returns are
meaningless, and a robot must never execute them. The checkpoint exists only to show
the serving path end to end without a download: observation in, ALOHA transforms,
normalization, tokenizer, model, actions `[10, 14]` out, over the websocket.

| file | what |
|---|---|
| `model.safetensors`, `manifest.json` | π0 with two 4-layer 64-wide Gemma experts, a 2-layer 32-wide SigLIP, vocabulary 256, action horizon 10, float32 |
| `norm_stats.json` | statistics of the 14-dim ALOHA state and actions over the embodiment's random example observations |
| `assets/tokenizer.model` | a small SentencePiece model trained on a few ALOHA prompts, in place of the PaliGemma tokenizer |

`python scripts/make_demo_checkpoint.py` regenerates this folder.
"""


def seeded_params(config: Pi0Config, seed: int) -> dict[str, np.ndarray]:
    """N(0, 1/fan_in) weights so activations stay of order one; zero biases; unit LayerNorm scales."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in sorted(pi0_weight_schema(config).items()):
        if name.endswith(".bias"):
            value = np.zeros(shape)
        elif name.endswith(".scale"):
            # SigLIP's LayerNorm multiplies by its scale; Gemma's RMSNorm by (1 + scale).
            value = np.ones(shape) if name.startswith("vision.") else np.zeros(shape)
        else:
            value = rng.normal(0.0, 1.0 / np.sqrt(_fan_in(name, shape)), shape)
        params[name] = value.astype(np.float32)
    return params


def _fan_in(name: str, shape: tuple[int, ...]) -> int:
    """Input width of a weight in the canonical layouts (:mod:`openpi_core.models.pi0_weights`)."""
    if name.endswith("patch_embed.kernel"):
        return int(np.prod(shape[:3]))
    if name.endswith(("o_proj", "attn.out.kernel")):
        return shape[-3] * shape[-2]
    if name.startswith("vision.") and ".attn." in name:
        return shape[-3]
    return shape[-2]


def aloha_norm_stats(samples: int = 1024) -> dict:
    """Stats of ALOHA state and actions in the model's (π runtime) convention."""
    robot, inputs = AlohaEmbodiment(), AlohaInputs()
    state_stats, action_stats = RunningStats(), RunningStats()
    for seed in range(samples):
        example = robot.example(seed)
        example["images"] = {"cam_high": example["images"]["cam_high"]}
        example["actions"] = np.tile(example["state"], (CONFIG.action_horizon, 1))
        data = inputs(example)
        state_stats.update(data["state"][None])
        action_stats.update(data["actions"])
    return {"state": state_stats.get_statistics(), "actions": action_stats.get_statistics()}


def train_tokenizer(destination: Path) -> None:
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(PROMPTS * 20),
        model_writer=model,
        vocab_size=VOCAB_SIZE,
        hard_vocab_limit=False,
        user_defined_symbols=["\n"],
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",  # no NFKC table: keeps the file under a kilobyte
        num_threads=1,
        minloglevel=2,
    )
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(model.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    save_checkpoint(args.out, CONFIG, seeded_params(CONFIG, SEED), dtype="float32", overwrite=True)
    save_norm_stats(aloha_norm_stats(), args.out)
    train_tokenizer(args.out / "assets" / "tokenizer.model")
    (args.out / "README.md").write_text(README)
    args.out.chmod(0o755)  # the checkpoint writer's scratch folder is private; package data is not
    for path in args.out.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    size = sum(file.stat().st_size for file in args.out.rglob("*") if file.is_file())
    print(f"wrote {args.out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
