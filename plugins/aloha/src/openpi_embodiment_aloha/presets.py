"""Named presets for the ALOHA robot: published openpi checkpoints and their norm stats.

The real-robot presets predict joint deltas from the current state (openpi's
``use_delta_joint_actions``, on by default); the simulator preset does not. Every real-robot
preset uses openpi's ``trossen`` norm stats.
"""

from openpi_core.models.config import Pi0Config
from openpi_core.specs import NamedConfig

CHECKPOINTS = "gs://openpi-assets/checkpoints"

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
)
