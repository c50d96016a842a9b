"""PaliGemma prompt formats, checked with a small SentencePiece model trained here."""

import re

import numpy as np
import pytest
import sentencepiece

from openpi_core.builtin_models import pi0_model_transforms
from openpi_core.errors import InputError
from openpi_core.models.config import Pi0Config
from openpi_core.tokenizers import PaligemmaTokenizer, discretize_state
from openpi_core.transforms import compose
from openpi_core.transforms.model import TokenizePrompt

CORPUS = [
    "pick up the cube and place it in the bowl",
    "Task: transfer cube, State: 0 12 255 128;",
    "Action: open the drawer, fold the towel, uncap the pen",
    "0 1 2 3 4 5 6 7 8 9 10 100 127 128 200 255",
] * 20


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    directory = tmp_path_factory.mktemp("spm")
    (directory / "corpus.txt").write_text("\n".join(CORPUS))
    sentencepiece.SentencePieceTrainer.train(
        input=str(directory / "corpus.txt"),
        model_prefix=str(directory / "tiny"),
        vocab_size=50,
        user_defined_symbols=["\n"],
        remove_extra_whitespaces=False,
        minloglevel=2,
    )
    return directory / "tiny.model"


@pytest.fixture(scope="module")
def processor(model_file):
    return sentencepiece.SentencePieceProcessor(model_file=str(model_file))


def test_pi0_format_is_bos_prompt_then_newline(model_file, processor):
    ids, mask = PaligemmaTokenizer(32, model_file).tokenize(" pick_up the cube\n")
    expected = processor.encode("pick up the cube", add_bos=True) + processor.encode("\n")
    assert ids[: len(expected)].tolist() == expected
    assert mask.tolist() == [True] * len(expected) + [False] * (32 - len(expected))
    assert ids[len(expected) :].tolist() == [0] * (32 - len(expected))


def test_pi05_format_writes_the_binned_state_into_the_prompt(model_file, processor):
    ids, mask = PaligemmaTokenizer(64, model_file).tokenize("transfer cube", np.array([-1.0, 0.0, 0.999]))
    expected = processor.encode("Task: transfer cube, State: 0 128 255;\nAction: ", add_bos=True)
    assert ids[: mask.sum()].tolist() == expected


def test_state_bins_clip_at_the_ends():
    assert discretize_state(np.array([-5.0, -1.0, -0.99, 1.0, 7.0])).tolist() == [0, 0, 1, 255, 255]


def test_long_prompts_are_truncated_with_a_warning(model_file, caplog):
    ids, mask = PaligemmaTokenizer(4, model_file).tokenize("pick up the cube and place it in the bowl")
    assert mask.all() and ids.shape == (4,)
    assert "truncating" in caplog.text


def test_model_transforms_resize_tokenize_and_pad(model_file):
    config = Pi0Config.from_variants("dummy", "dummy", max_token_len=16)
    group = pi0_model_transforms(config)
    tokenize = next(t for t in group.inputs if isinstance(t, TokenizePrompt))
    transforms = [t if t is not tokenize else TokenizePrompt(PaligemmaTokenizer(16, model_file)) for t in group.inputs]
    data = {
        "image": {"base_0_rgb": np.zeros((48, 64, 3), np.uint8)},
        "image_mask": {"base_0_rgb": np.True_},
        "state": np.ones(14, np.float32),
        "prompt": "fold the towel",
    }
    out = compose(transforms)(data)
    assert out["image"]["base_0_rgb"].shape == (224, 224, 3)
    assert out["state"].shape == (32,) and out["state"][14:].tolist() == [0.0] * 18
    assert out["tokenized_prompt"].shape == (16,) and "prompt" not in out


def test_missing_prompt_is_a_clear_error(model_file):
    with pytest.raises(InputError, match="a prompt is required"):
        TokenizePrompt(PaligemmaTokenizer(8, model_file))({"state": np.zeros(3)})


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_tokenizer_model_is_an_error_naming_the_file(model_file, tmp_path, damage):
    broken = tmp_path / "tokenizer.model"
    data = model_file.read_bytes()
    broken.write_bytes({"truncated": data[: len(data) // 3], "garbage": b"\x07not a model" * 8, "empty": b""}[damage])
    with pytest.raises(InputError, match=rf"{re.escape(str(broken))} is not a valid SentencePiece tokenizer model"):
        PaligemmaTokenizer(8, broken).tokenize("pick up the cube")
