"""Named presets for the LIBERO robot: published openpi checkpoints and their norm stats."""

from openpi_core.models.config import Pi0Config
from openpi_core.specs import NamedConfig

CHECKPOINTS = "gs://openpi-assets/checkpoints"

PRESETS = (
    NamedConfig(
        name="pi0_libero",
        family="pi0",
        model_config=Pi0Config(),
        embodiment="libero",
        description="π0 fine-tuned on LIBERO",
        checkpoint=f"{CHECKPOINTS}/pi0_libero",
        norm_stats=f"{CHECKPOINTS}/pi0_libero/assets/physical-intelligence/libero",
        delta_actions=True,
    ),
    NamedConfig(
        name="pi05_libero",
        family="pi05",
        model_config=Pi0Config(pi05=True, action_horizon=10, discrete_state_input=False),
        embodiment="libero",
        description="π0.5 fine-tuned on LIBERO",
        checkpoint=f"{CHECKPOINTS}/pi05_libero",
        norm_stats=f"{CHECKPOINTS}/pi05_libero/assets/physical-intelligence/libero",
    ),
)
