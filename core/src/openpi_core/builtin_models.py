"""Built-in plugin: the π0, π0.5 and π0-FAST model families, described without a framework."""

from openpi_core import hookimpl
from openpi_core.fast import FASTPromptTokenizer
from openpi_core.models.config import Pi0Config, Pi0FASTConfig
from openpi_core.models.pi0_weights import pi0_fast_weight_schema, pi0_weight_schema
from openpi_core.specs import ModelSpec
from openpi_core.tokenizers import PaligemmaTokenizer
from openpi_core.transforms import Group
from openpi_core.transforms.common import PadStatesAndActions, ResizeImages
from openpi_core.transforms.fast import ExtractFASTActions, TokenizeFASTInputs
from openpi_core.transforms.model import TokenizePrompt


def pi0_model_transforms(config: Pi0Config) -> Group:
    """Resize cameras to the vision tower's size (224x224 for published models), tokenize the prompt (π0.5: with the state), pad state and
    actions to the model's action dim."""
    return Group(
        inputs=[
            ResizeImages(*config.vision.image_size),
            TokenizePrompt(PaligemmaTokenizer(config.max_token_len), discrete_state_input=config.discrete_state_input),
            PadStatesAndActions(config.action_dim),
        ]
    )


def pi0_fast_model_transforms(config: Pi0FASTConfig) -> Group:
    """Resize cameras to the vision tower's size and build the FAST token sequence (prompt, binned state
    and, in training, the action tokens); turn generated tokens back into actions. The
    PaliGemma and FAST tokenizers are loaded on first use."""
    tokenizer = FASTPromptTokenizer(config.max_token_len, fast_skip_tokens=config.fast_skip_tokens)
    return Group(
        inputs=[ResizeImages(*config.vision.image_size), TokenizeFASTInputs(tokenizer)],
        outputs=[ExtractFASTActions(tokenizer, config.action_horizon, config.action_dim)],
    )


PI0 = ModelSpec("pi0", Pi0Config, pi0_weight_schema, pi0_model_transforms, "π0: flow matching with a state token")
PI05 = ModelSpec("pi05", Pi0Config, pi0_weight_schema, pi0_model_transforms, "π0.5: flow matching with adaptive norms")
PI0_FAST = ModelSpec(
    "pi0_fast",
    Pi0FASTConfig,
    pi0_fast_weight_schema,
    pi0_fast_model_transforms,
    "π0-FAST: autoregressive FAST action tokens",
)


@hookimpl
def openpi_register_models(register):
    register(PI0)
    register(PI05)
    register(PI0_FAST)
