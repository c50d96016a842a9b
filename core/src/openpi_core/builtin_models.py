"""Built-in plugin: the π0 and π0.5 model families, described without a framework."""

from openpi_core import hookimpl
from openpi_core.models.config import Pi0Config
from openpi_core.models.pi0_weights import pi0_weight_schema
from openpi_core.observation import IMAGE_RESOLUTION
from openpi_core.specs import ModelSpec
from openpi_core.tokenizers import PaligemmaTokenizer
from openpi_core.transforms import Group
from openpi_core.transforms.common import PadStatesAndActions, ResizeImages
from openpi_core.transforms.model import TokenizePrompt


def pi0_model_transforms(config: Pi0Config) -> Group:
    """Resize cameras to 224x224, tokenize the prompt (π0.5: with the state), pad state and
    actions to the model's action dim."""
    return Group(
        inputs=[
            ResizeImages(*IMAGE_RESOLUTION),
            TokenizePrompt(PaligemmaTokenizer(config.max_token_len), discrete_state_input=config.discrete_state_input),
            PadStatesAndActions(config.action_dim),
        ]
    )


PI0 = ModelSpec("pi0", Pi0Config, pi0_weight_schema, pi0_model_transforms, "π0: flow matching with a state token")
PI05 = ModelSpec("pi05", Pi0Config, pi0_weight_schema, pi0_model_transforms, "π0.5: flow matching with adaptive norms")


@hookimpl
def openpi_register_models(register):
    register(PI0)
    register(PI05)
