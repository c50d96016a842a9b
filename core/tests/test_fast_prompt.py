"""openpi's π0-FAST token sequence, on a small SentencePiece model trained here.

The model mimics PaliGemma where it matters (:mod:`openpi_core.fast.testing`).
"""

import logging

import numpy as np
import pytest
import sentencepiece

from openpi_core.builtin_models import pi0_fast_model_transforms
from openpi_core.errors import InputError
from openpi_core.fast import FASTActionTokenizer, FASTPromptTokenizer
from openpi_core.fast.testing import fast_skip_tokens, train_fast_test_tokenizer
from openpi_core.models.config import Pi0FASTConfig
from openpi_core.plugins import get_model_spec
from openpi_core.tokenizers import PaligemmaTokenizer
from openpi_core.transforms.common import ResizeImages
from openpi_core.transforms.fast import ExtractFASTActions, TokenizeFASTInputs

pytest.importorskip("tokenizers")

LOCS = 320
HORIZON, DIM = 10, 3
CORPUS = [
    "Task: pick up the cube, State: 0 12 255 128 7 64;\n",
    "Task: fold the towel and place it in the bowl, State: 1 2 3 4 5 6 7 8 9 10;\n",
    "Action: |Action: |Action: |",
    "0 1 2 3 4 5 6 7 8 9 10 100 127 128 200 255",
] * 20


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return train_fast_test_tokenizer(tmp_path_factory.mktemp("spm"), CORPUS, locs=LOCS)


@pytest.fixture(scope="module")
def processor(model_file):
    return sentencepiece.SentencePieceProcessor(model_file=str(model_file))


@pytest.fixture(scope="module")
def action_tokenizer() -> FASTActionTokenizer:
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, HORIZON)[None, :, None]
    chunks = np.sin(2 * np.pi * rng.uniform(0.2, 1.0, (100, 1, DIM)) * t + rng.uniform(0, 6, (100, 1, DIM))) * 0.8
    tokenizer = FASTActionTokenizer.fit(list(chunks), vocab_size=300, time_horizon=HORIZON, action_dim=DIM)
    assert tokenizer.bpe.get_vocab_size() <= LOCS
    return tokenizer


@pytest.fixture(scope="module")
def skip(model_file) -> int:
    return fast_skip_tokens(model_file, LOCS)


@pytest.fixture
def tokenizer(model_file, action_tokenizer, skip) -> FASTPromptTokenizer:
    return FASTPromptTokenizer(64, PaligemmaTokenizer(64, model_file), action_tokenizer, fast_skip_tokens=skip)


STATE = np.array([-1.0, 0.0, 0.999, 0.5])
ACTIONS = np.array([[0.1 * i, -0.05 * i, 0.3] for i in range(HORIZON)])


def test_prefix_is_bos_task_and_binned_state(tokenizer, processor):
    tokens, mask, ar_mask, loss_mask = tokenizer.tokenize("  Pick_up the Cube ", STATE)
    expected = processor.encode("Task: pick up the cube, State: 0 128 255 192;\n", add_bos=True)
    n = len(expected)
    assert tokens.dtype == np.int32 and ar_mask.dtype == np.int32 and mask.dtype == bool and loss_mask.dtype == bool
    assert tokens.tolist() == expected + [0] * (64 - n)
    assert mask.tolist() == [True] * n + [False] * (64 - n)
    assert ar_mask.tolist() == [0] * 64
    assert loss_mask.tolist() == [False] * 64


def test_actions_follow_as_a_causal_postfix_with_the_loss(tokenizer, processor, action_tokenizer):
    tokens, mask, ar_mask, loss_mask = tokenizer.tokenize("pick up the cube", STATE, ACTIONS)
    prefix = processor.encode("Task: pick up the cube, State: 0 128 255 192;\n", add_bos=True)
    fast = action_tokenizer.encode(ACTIONS)
    locs = [processor.piece_to_id(f"<loc{LOCS - 1 - t:04d}>") for t in fast]
    postfix = processor.encode("Action: ") + locs + processor.encode("|") + [1]
    n, m = len(prefix), len(postfix)
    assert tokens.tolist() == prefix + postfix + [0] * (64 - n - m)
    assert mask.tolist() == [True] * (n + m) + [False] * (64 - n - m)
    assert ar_mask.tolist() == [0] * n + [1] * m + [0] * (64 - n - m)
    assert loss_mask.tolist() == [False] * n + [True] * m + [False] * (64 - n - m)


def test_the_vocabulary_map_is_its_own_inverse(tokenizer):
    ids = np.array([0, 5, 299])
    assert tokenizer.to_paligemma(tokenizer.to_paligemma(ids)).tolist() == ids.tolist()


def test_long_sequences_are_truncated_with_a_warning(model_file, action_tokenizer, skip, caplog):
    short = FASTPromptTokenizer(12, PaligemmaTokenizer(12, model_file), action_tokenizer, fast_skip_tokens=skip)
    with caplog.at_level(logging.WARNING):
        tokens, mask, ar_mask, loss_mask = short.tokenize("pick up the cube", STATE, ACTIONS)
    assert "truncating" in caplog.text
    assert tokens.shape == mask.shape == ar_mask.shape == loss_mask.shape == (12,)
    assert mask.all()


def test_extract_actions_inverts_the_postfix(tokenizer, action_tokenizer):
    tokens, mask, ar_mask, _ = tokenizer.tokenize("pick up the cube", STATE, ACTIONS)
    generated = np.concatenate([tokens[mask & (ar_mask == 1)], np.zeros(5, np.int32)]).astype(np.float32)
    actions = tokenizer.extract_actions(generated, HORIZON, DIM)
    expected = action_tokenizer.decode([action_tokenizer.encode(ACTIONS)])[0]
    assert actions.shape == (HORIZON, DIM)
    np.testing.assert_array_equal(actions, expected)
    assert np.abs(actions - ACTIONS).max() < 0.1


def test_extract_actions_without_an_action_gives_zeros(tokenizer, processor, caplog):
    with caplog.at_level(logging.WARNING):
        actions = tokenizer.extract_actions(np.array(processor.encode("pick up the cube")), HORIZON, DIM)
    assert np.array_equal(actions, np.zeros((HORIZON, DIM), np.float32))
    assert "zero actions" in caplog.text


def test_the_action_tokenizer_loads_from_a_directory_on_first_use(model_file, action_tokenizer, skip, tmp_path):
    action_tokenizer.save(tmp_path / "fast")
    lazy = FASTPromptTokenizer(64, PaligemmaTokenizer(64, model_file), tmp_path / "fast", fast_skip_tokens=skip)
    eager = FASTPromptTokenizer(64, PaligemmaTokenizer(64, model_file), action_tokenizer, fast_skip_tokens=skip)
    for got, expected in zip(
        lazy.tokenize("fold", STATE, ACTIONS), eager.tokenize("fold", STATE, ACTIONS), strict=True
    ):
        np.testing.assert_array_equal(got, expected)


def test_transforms_tokenize_inputs_and_extract_actions(tokenizer):
    data = {"state": STATE, "actions": ACTIONS, "prompt": np.array("pick up the cube")}
    out = TokenizeFASTInputs(tokenizer)(data)
    assert "prompt" not in out and "prompt" in data
    for key in ("tokenized_prompt", "tokenized_prompt_mask", "token_ar_mask", "token_loss_mask"):
        assert out[key].shape == (64,), key
    generated = out["tokenized_prompt"][out["token_ar_mask"] == 1]
    result = ExtractFASTActions(tokenizer, HORIZON, DIM)({"state": STATE, "actions": generated})
    assert result["actions"].shape == (HORIZON, DIM)
    assert np.abs(result["actions"] - ACTIONS).max() < 0.1
    with pytest.raises(InputError, match="prompt"):
        TokenizeFASTInputs(tokenizer)({"state": STATE})


def test_pi0_fast_is_a_registered_model_family():
    config = Pi0FASTConfig.from_variants("dummy", max_token_len=48, action_horizon=10, action_dim=7)
    spec = get_model_spec("pi0_fast")
    assert spec.config_type is Pi0FASTConfig
    group = spec.model_transforms(config)
    assert [type(t) for t in group.inputs] == [ResizeImages, TokenizeFASTInputs]
    assert [type(t) for t in group.outputs] == [ExtractFASTActions]
    (extract,) = group.outputs
    assert (extract.action_horizon, extract.action_dim, extract.tokenizer.max_len) == (10, 7, 48)
    assert extract.tokenizer is group.inputs[1].tokenizer
    assert pi0_fast_model_transforms is spec.model_transforms
