"""Policy assembly: prompt precedence, normalization in and out, batching, input errors.

A fake backend stands in for the model: it records what reaches the model and
returns actions the tests know, so every figure below is computed by hand from the
norm stats and the ALOHA conventions.
"""

import io
import types

import numpy as np
import pytest
import sentencepiece

from openpi_core import hookimpl
from openpi_core.checkpoints import save_checkpoint
from openpi_core.errors import InputError, NormStatsError
from openpi_core.models.config import GEMMA_VARIANTS, Pi0Config, SiglipConfig
from openpi_core.models.pi0_weights import pi0_weight_schema
from openpi_core.plugins import PluginManager, use_plugin_manager
from openpi_core.policy import Policy, create_policy
from openpi_core.specs import AbstractBackend, NamedConfig
from openpi_core.tokenizers import PaligemmaTokenizer
from openpi_core.transforms import NormStats, save_norm_stats

aloha = pytest.importorskip("openpi_embodiment_aloha.aloha")
aloha_plugin = pytest.importorskip("openpi_embodiment_aloha.plugin")

HORIZON, MODEL_DIM, ROBOT_DIM = 4, 32, 14
EPS = 1e-6


def tiny_config(pi05: bool = False, vocab_size: int = 128) -> Pi0Config:
    return Pi0Config(
        llm=GEMMA_VARIANTS["dummy"],
        action_expert=GEMMA_VARIANTS["dummy"],
        vision=SiglipConfig(width=16, depth=1, mlp_dim=32, num_heads=2),
        vocab_size=vocab_size,
        pi05=pi05,
        action_horizon=HORIZON,
        max_token_len=64,
        dtype="float32",
    )


# Normalized actions the fake model returns: row h, dim d holds 0.1 * (h + 1) * (d - 16) / 16.
KNOWN = (0.1 * np.arange(1, HORIZON + 1)[:, None] * (np.arange(MODEL_DIM) - 16) / 16).astype(np.float32)


class FakeModel:
    """Returns ``KNOWN`` plus, when asked, the noise and the normalized state."""

    def __init__(self, config: Pi0Config, echo: bool) -> None:
        self.config = config
        self.echo = echo
        self.calls = []

    def sample_actions(self, observation, noise=None, num_steps=10, seed=0):
        self.calls.append((observation, num_steps))
        actions = np.broadcast_to(KNOWN, (observation.batch_size, HORIZON, MODEL_DIM)).copy()
        if self.echo:
            actions += noise + observation.state[:, None, :]
        return actions


class FakeBackend(AbstractBackend):
    name = "fake"
    families = ("pi0", "pi05")

    def __init__(self) -> None:
        self.echo = False
        self.models = []

    def load_model(self, path_or_params, config=None):
        assert set(path_or_params) == set(pi0_weight_schema(config))
        self.models.append(FakeModel(config, self.echo))
        return self.models[-1]


@pytest.fixture
def backend():
    fake = FakeBackend()
    module = types.ModuleType("fakebackend")

    @hookimpl
    def openpi_register_backends(register):
        register(fake)

    module.openpi_register_backends = openpi_register_backends
    manager = PluginManager(entry_points=False, plugins=[("fakebackend", module), ("aloha", aloha_plugin)])
    with use_plugin_manager(manager):
        yield fake


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(["uncap the pen", "fold the towel", "Task: x, State: 0 12 255;\nAction: "] * 30),
        model_writer=model,
        vocab_size=40,
        hard_vocab_limit=False,
        user_defined_symbols=["\n"],
        remove_extra_whitespaces=False,
        minloglevel=2,
    )
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.model"
    path.write_bytes(model.getvalue())
    return path


STATE_STATS = NormStats(
    mean=np.linspace(-0.5, 0.5, ROBOT_DIM),
    std=np.linspace(0.5, 2.0, ROBOT_DIM),
    q01=np.full(ROBOT_DIM, -2.0),
    q99=np.linspace(1.0, 3.0, ROBOT_DIM),
)
ACTION_STATS = NormStats(
    mean=np.linspace(1.0, -1.0, ROBOT_DIM),
    std=np.full(ROBOT_DIM, 3.0),
    q01=np.full(ROBOT_DIM, -1.0),
    q99=np.full(ROBOT_DIM, 4.0),
)
STATS = {"state": STATE_STATS, "actions": ACTION_STATS}


@pytest.fixture
def checkpoint(tmp_path, tokenizer_file):
    """A native checkpoint (zero weights) shipping its tokenizer and its own norm stats."""

    def make(pi05: bool = False, vocab_size: int = 128, stats_at: str = ""):
        config = tiny_config(pi05, vocab_size)
        path = tmp_path / f"ckpt_{pi05}_{vocab_size}_{stats_at.replace('/', '_')}"
        params = {name: np.zeros(shape, np.float32) for name, shape in pi0_weight_schema(config).items()}
        save_checkpoint(path, config, params)
        (path / "assets").mkdir()
        (path / "assets" / "tokenizer.model").write_bytes(tokenizer_file.read_bytes())
        save_norm_stats(STATS, path / stats_at)
        return path

    return make


def observation(prompt: str | None = None, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    state = rng.uniform(-1, 1, ROBOT_DIM)
    state[[6, 13]] = rng.uniform(0, 1, 2)
    obs = {"images": {"cam_high": rng.integers(0, 256, (3, 224, 224), dtype=np.uint8)}, "state": state}
    if prompt is not None:
        obs["prompt"] = prompt
    return obs


def pi_state(obs: dict) -> np.ndarray:
    """The state in the model's (π runtime) convention, before normalization."""
    return aloha.AlohaInputs()(obs)["state"].astype(np.float64)


def aloha_out(actions: np.ndarray) -> np.ndarray:
    """π-convention actions [H, 14] -> standard ALOHA commands, by hand."""
    out = aloha.JOINT_SIGNS * actions
    out[:, [6, 13]] = aloha.gripper_pi_to_aloha_joint(out[:, [6, 13]])
    return out


def test_z_score_for_pi0_is_applied_on_the_way_in_and_inverted_on_the_way_out(backend, checkpoint):
    policy = create_policy(checkpoint=checkpoint(), embodiment="aloha", backend="fake", default_prompt="x")
    obs = observation()
    result = policy.infer(obs)

    seen, num_steps = backend.models[0].calls[0]
    expected_state = np.zeros(MODEL_DIM)
    expected_state[:ROBOT_DIM] = (pi_state(obs) - STATE_STATS.mean) / (STATE_STATS.std + EPS)
    np.testing.assert_allclose(seen.state[0], expected_state, rtol=1e-6, atol=1e-6)
    assert num_steps == 10 and seen.images["base_0_rgb"].shape == (1, 224, 224, 3)
    assert seen.image_masks["left_wrist_0_rgb"].tolist() == [False]

    unnormalized = KNOWN[:, :ROBOT_DIM] * (ACTION_STATS.std + EPS) + ACTION_STATS.mean
    assert result["actions"].shape == (HORIZON, ROBOT_DIM) and result["actions"].dtype == np.float32
    np.testing.assert_allclose(result["actions"], aloha_out(unnormalized), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result["state"][:ROBOT_DIM], pi_state(obs), rtol=1e-5, atol=1e-5)
    assert result["policy_timing"]["infer_ms"] >= 0


def test_quantiles_for_pi05(backend, checkpoint):
    policy = create_policy(checkpoint=checkpoint(pi05=True), embodiment="aloha", backend="fake", default_prompt="x")
    obs = observation()
    result = policy.infer(obs)
    seen, _ = backend.models[0].calls[0]
    expected = (pi_state(obs) - STATE_STATS.q01) / (STATE_STATS.q99 - STATE_STATS.q01 + EPS) * 2 - 1
    np.testing.assert_allclose(seen.state[0, :ROBOT_DIM], expected, rtol=1e-6, atol=1e-6)
    unnormalized = (KNOWN[:, :ROBOT_DIM] + 1) / 2 * (ACTION_STATS.q99 - ACTION_STATS.q01 + EPS) + ACTION_STATS.q01
    np.testing.assert_allclose(result["actions"], aloha_out(unnormalized), rtol=1e-5, atol=1e-5)


def test_prompt_precedence_observation_then_default_prompt_then_preset(backend, checkpoint, tokenizer_file):
    path = checkpoint(stats_at="assets/trossen")
    preset = NamedConfig(
        name="test_preset",
        family="pi0",
        model_config=tiny_config(),
        embodiment="aloha",
        checkpoint=str(path),
        norm_stats=f"{path}/assets/trossen",
        default_prompt="fold the towel",
    )
    tokenizer = PaligemmaTokenizer(64, tokenizer_file)

    def prompt_seen(policy, obs):
        policy.infer(obs)
        seen, _ = policy.model.calls[-1]
        return seen.tokenized_prompt[0].tolist()

    with_default = create_policy(preset, backend="fake", default_prompt="uncap the pen")
    without_default = create_policy(preset, backend="fake")
    assert prompt_seen(with_default, observation("fold the pen")) == tokenizer.tokenize("fold the pen")[0].tolist()
    assert prompt_seen(with_default, observation()) == tokenizer.tokenize("uncap the pen")[0].tolist()
    assert prompt_seen(without_default, observation()) == tokenizer.tokenize("fold the towel")[0].tolist()

    bare = create_policy(checkpoint=path, embodiment="aloha", backend="fake", norm_stats=path / "assets" / "trossen")
    with pytest.raises(InputError, match="a prompt is required"):
        bare.infer(observation())


def test_preset_norm_stats_come_from_the_checkpoints_asset_folder(backend, checkpoint):
    path = checkpoint(stats_at="assets/trossen")
    preset = NamedConfig(
        name="p", family="pi0", model_config=tiny_config(), embodiment="aloha",
        checkpoint="gs://not-fetched/ckpt", norm_stats="gs://not-fetched/ckpt/assets/trossen",
    )  # fmt: skip
    assert preset.asset_id == "trossen"
    policy = create_policy(preset, checkpoint=path, backend="fake", default_prompt="x")
    assert policy.metadata["config"] == "p"


def test_missing_norm_stats_name_the_places_looked_at(backend, checkpoint):
    path = checkpoint(stats_at="elsewhere")
    with pytest.raises(NormStatsError, match=r"no norm stats found; looked for .*norm_stats\.json"):
        create_policy(checkpoint=path, embodiment="aloha", backend="fake")


def test_delta_actions_preset_adds_the_state_back_to_the_joints(backend, checkpoint):
    path = checkpoint()
    preset = NamedConfig(
        name="delta", family="pi0", model_config=tiny_config(), embodiment="aloha",
        checkpoint=str(path), default_prompt="x", delta_actions=True,
    )  # fmt: skip
    obs = observation()
    result = create_policy(preset, backend="fake").infer(obs)
    absolute = KNOWN[:, :ROBOT_DIM] * (ACTION_STATS.std + EPS) + ACTION_STATS.mean
    absolute += np.where(aloha.AlohaEmbodiment.delta_action_mask, pi_state(obs), 0.0)
    np.testing.assert_allclose(result["actions"], aloha_out(absolute), rtol=1e-5, atol=1e-5)


def test_batched_run_equals_single_calls(backend, checkpoint):
    backend.echo = True
    path = checkpoint()
    batched = create_policy(checkpoint=path, embodiment="aloha", backend="fake", default_prompt="x", seed=7)
    single = create_policy(checkpoint=path, embodiment="aloha", backend="fake", default_prompt="x", seed=7)
    observations = [observation(prompt, seed) for seed, prompt in enumerate(["uncap the pen", None, "fold the towel"])]
    prepared = [batched.prepare(obs) for obs in observations]
    assert len({batched.batch_key(item) for item in prepared}) == 1
    together = batched.run(prepared)
    assert backend.models[0].calls[0][0].batch_size == 3
    for obs, result in zip(observations, together, strict=True):
        alone = single.infer(obs)
        np.testing.assert_array_equal(result["actions"], alone["actions"])
        np.testing.assert_array_equal(result["state"], alone["state"])
    assert [call[0].batch_size for call in backend.models[1].calls] == [1, 1, 1]
    assert batched.run([]) == []


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda obs: obs["state"].__setitem__(3, np.nan), r"\['state'\] should be finite, got nan at index \[3\]"),
        (lambda obs: obs.__setitem__("state", np.zeros(7)), r"\['state'\] should have shape \[14\] .*, got \[7\]"),
        (lambda obs: obs["images"].pop("cam_high"), r"missing \['images/cam_high'\]"),
        (
            lambda obs: obs["images"].__setitem__("cam_top", obs["images"]["cam_high"]),
            r"unknown cameras \['images/cam_top'\]",
        ),
        (lambda obs: obs.__setitem__("prompt", 3), r"\['prompt'\] should be a string, got int"),
    ],
)
def test_bad_input_is_an_input_error_naming_what_was_expected(backend, checkpoint, mutate, message):
    policy = create_policy(checkpoint=checkpoint(), embodiment="aloha", backend="fake", default_prompt="x")
    obs = observation()
    mutate(obs)
    with pytest.raises(InputError, match=message):
        policy.prepare(obs)


def test_an_observation_must_be_a_dict(backend, checkpoint):
    policy = create_policy(checkpoint=checkpoint(), embodiment="aloha", backend="fake", default_prompt="x")
    with pytest.raises(InputError, match="should be a dict of arrays, got list"):
        policy.prepare([1, 2])


def test_metadata_and_warmup(backend, checkpoint):
    policy = create_policy(checkpoint=checkpoint(), embodiment="aloha", backend="fake", num_steps=3, dtype="bfloat16")
    assert policy.metadata == {
        "config": None,
        "embodiment": "aloha",
        "family": "pi0",
        "backend": "fake",
        "dtype": "bfloat16",
        "action_horizon": HORIZON,
        "action_dim": ROBOT_DIM,
        "num_steps": 3,
        "real_time_chunking": False,
    }
    assert backend.models[0].config.dtype == "bfloat16"
    policy.warmup()
    assert backend.models[0].calls[0][1] == 3


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(backend, checkpoint):
    with pytest.raises(InputError, match=r"has \d+ pieces; the model's vocabulary holds vocab_size=8"):
        create_policy(checkpoint=checkpoint(vocab_size=8), embodiment="aloha", backend="fake")


def test_missing_parts_are_named(backend, checkpoint):
    with pytest.raises(InputError, match="needs a checkpoint"):
        create_policy(embodiment="aloha", backend="fake")
    with pytest.raises(InputError, match="needs an embodiment"):
        create_policy(checkpoint=checkpoint(), backend="fake")


def test_policy_rejects_zero_steps():
    model = FakeModel(tiny_config(), echo=False)
    with pytest.raises(InputError, match="num_steps should be >= 1, got 0"):
        Policy(model, embodiment=aloha.AlohaEmbodiment(), input_transforms=[], num_steps=0)
