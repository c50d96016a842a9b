"""Named presets for the ALOHA robot: published openpi checkpoints and their norm stats.

The real-robot presets predict joint deltas from the current state (openpi's
``use_delta_joint_actions``, on by default); the simulator preset does not. Every real-robot
preset uses openpi's ``trossen`` norm stats.
"""

from pathlib import Path

from openpi_core.models.config import GemmaConfig, Pi0Config, SiglipConfig
from openpi_core.specs import NamedConfig
from openpi_core.transforms import CropImages

CHECKPOINTS = "gs://openpi-assets/checkpoints"
SIM_TOKENIZER = str(Path(__file__).resolve().parent / "assets" / "sim_tokenizer.model")
"""A 68-piece SentencePiece model for the simulator's prompts (the small sim π0's vocabulary)."""
SIM_CHECKPOINT = str(Path(__file__).resolve().parent / "sim" / "checkpoint")
"""The small sim π0 trained here on ``pi data aloha-sim`` transfer-cube demonstrations (see its README)."""

SMALL_SIM_MODEL = Pi0Config(
    llm=GemmaConfig(width=128, depth=4, mlp_dim=512, num_heads=4, num_kv_heads=1, head_dim=32),
    action_expert=GemmaConfig(width=64, depth=4, mlp_dim=256, num_heads=4, num_kv_heads=1, head_dim=32),
    vision=SiglipConfig(width=96, depth=3, mlp_dim=384, num_heads=4, image_size=(112, 112)),
    vocab_size=68,
    action_dim=14,
    action_horizon=50,
    max_token_len=12,
    dtype="float32",
    image_keys=("base_0_rgb",),
)
"""A 1.7 M-parameter π0 sized for a CPU: the top camera only, its middle at 112x112 (64 patches)."""
SIM_FRAME = (224, 224)
"""The size of the frames the small sim π0 was trained on: the top camera resized with
padding to 224x224 (``pi data aloha-sim``)."""
SIM_CROP = CropImages(top=0.25, left=0.25, height=0.5, width=0.5, frame=SIM_FRAME)
"""The middle half of the simulator's top view, where the cube lies at every reset: rows and
columns 56..167 of the 224x224 recording, kept at full resolution so the cube's 6x7 pixels
cover a fifth of a 14-px patch (a twentieth on the whole view at 112x112). A frame of another
size (gym-aloha's raw 480x640, say) is first resized with padding to :data:`SIM_FRAME`, so
it gives the model the same window."""

PRESETS = (
    NamedConfig(
        name="pi05_aloha",
        family="pi05",
        model_config=Pi0Config(pi05=True),
        embodiment="aloha",
        description="π0.5 base model on ALOHA, with openpi's trossen norm stats (no task fine-tuning)",
        checkpoint=f"{CHECKPOINTS}/pi05_base",
        norm_stats=f"{CHECKPOINTS}/pi05_base/assets/trossen",
        delta_actions=True,
    ),
    NamedConfig(
        name="pi0_aloha_sim",
        family="pi0",
        model_config=Pi0Config(),
        embodiment="aloha",
        description="π0 fine-tuned on the simulated ALOHA transfer-cube task",
        checkpoint=f"{CHECKPOINTS}/pi0_aloha_sim",
        norm_stats=f"{CHECKPOINTS}/pi0_aloha_sim/assets/lerobot/aloha_sim_transfer_cube_human",
        default_prompt="Transfer cube",
    ),
    NamedConfig(
        name="pi0_aloha_towel",
        family="pi0",
        model_config=Pi0Config(),
        embodiment="aloha",
        description="π0 that folds towels on ALOHA",
        checkpoint=f"{CHECKPOINTS}/pi0_aloha_towel",
        norm_stats=f"{CHECKPOINTS}/pi0_aloha_towel/assets/trossen",
        default_prompt="fold the towel",
        delta_actions=True,
    ),
    NamedConfig(
        name="pi0_aloha_tupperware",
        family="pi0",
        model_config=Pi0Config(),
        embodiment="aloha",
        description="π0 that unpacks food from a tupperware on ALOHA",
        checkpoint=f"{CHECKPOINTS}/pi0_aloha_tupperware",
        norm_stats=f"{CHECKPOINTS}/pi0_aloha_tupperware/assets/trossen",
        default_prompt="open the tupperware and put the food on the plate",
        delta_actions=True,
    ),
    NamedConfig(
        name="pi0_aloha_pen_uncap",
        family="pi0",
        model_config=Pi0Config(),
        embodiment="aloha",
        description="π0 that uncaps a pen on ALOHA",
        checkpoint=f"{CHECKPOINTS}/pi0_aloha_pen_uncap",
        norm_stats=f"{CHECKPOINTS}/pi0_aloha_pen_uncap/assets/trossen",
        default_prompt="uncap the pen",
        delta_actions=True,
    ),
    NamedConfig(
        name="pi0_aloha_sim_small",
        family="pi0",
        model_config=SMALL_SIM_MODEL,
        embodiment="aloha",
        description="a small π0 trained from scratch on `pi data aloha-sim` transfer-cube demonstrations",
        checkpoint=SIM_CHECKPOINT,
        default_prompt="Transfer cube",
        tokenizer=SIM_TOKENIZER,
        extra_transforms=(SIM_CROP,),
    ),
)
