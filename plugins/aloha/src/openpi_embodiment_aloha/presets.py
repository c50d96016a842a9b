"""Named presets for the ALOHA robot: published openpi checkpoints and their norm stats."""

from openpi_core.models.config import Pi0Config
from openpi_core.specs import NamedConfig

CHECKPOINTS = "gs://openpi-assets/checkpoints"

PRESETS = (
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
    ),
)
