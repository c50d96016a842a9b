"""Named presets for the DROID robot: published openpi checkpoints and their norm stats."""

from openpi_core.models.config import Pi0Config, Pi0FASTConfig
from openpi_core.specs import NamedConfig

CHECKPOINTS = "gs://openpi-assets/checkpoints"

PRESETS = (
    NamedConfig(
        name="pi0_droid",
        family="pi0",
        model_config=Pi0Config(action_horizon=10),
        embodiment="droid",
        description="π0 fine-tuned on DROID",
        checkpoint=f"{CHECKPOINTS}/pi0_droid",
        norm_stats=f"{CHECKPOINTS}/pi0_droid/assets/droid",
    ),
    NamedConfig(
        name="pi05_droid",
        family="pi05",
        model_config=Pi0Config(pi05=True, action_horizon=15),
        embodiment="droid",
        description="π0.5 fine-tuned on DROID with knowledge insulation",
        checkpoint=f"{CHECKPOINTS}/pi05_droid",
        norm_stats=f"{CHECKPOINTS}/pi05_droid/assets/droid",
    ),
    NamedConfig(
        name="pi0_fast_droid",
        family="pi0_fast",
        model_config=Pi0FASTConfig(action_dim=8, action_horizon=10),
        embodiment="droid",
        description="π0-FAST fine-tuned on DROID (autoregressive FAST action tokens)",
        checkpoint=f"{CHECKPOINTS}/pi0_fast_droid",
        norm_stats=f"{CHECKPOINTS}/pi0_fast_droid/assets/droid",
    ),
)
