"""The FAST action tokenizer, fit here on smooth synthetic trajectories."""

import json
import logging

import numpy as np
import pytest

from openpi_core.errors import InputError
from openpi_core.fast import FASTActionTokenizer, dct_matrix

pytest.importorskip("tokenizers")

HORIZON, DIM, SCALE = 20, 7, 10.0
PUBLISHED_CONFIG_FIELDS = {
    "action_dim",
    "auto_map",
    "min_token",
    "processor_class",
    "scale",
    "time_horizon",
    "vocab_size",
}


def smooth_chunks(count: int, seed: int) -> np.ndarray:
    """``[count, H, A]`` sums of three low-frequency sines per dimension, within about ±0.9."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, HORIZON)[None, :, None, None]
    freq = rng.uniform(0.1, 1.5, (count, 1, DIM, 3))
    phase = rng.uniform(0.0, 2 * np.pi, (count, 1, DIM, 3))
    amplitude = rng.uniform(0.05, 0.3, (count, 1, DIM, 3))
    return (amplitude * np.sin(2 * np.pi * freq * t + phase)).sum(-1).astype(np.float32)


@pytest.fixture(scope="module")
def tokenizer() -> FASTActionTokenizer:
    return FASTActionTokenizer.fit(
        list(smooth_chunks(300, seed=0)), vocab_size=512, scale=SCALE, time_horizon=HORIZON, action_dim=DIM
    )


def test_dct_is_scipys_orthonormal_dct_ii():
    fft = pytest.importorskip("scipy.fft")
    x = np.random.default_rng(1).standard_normal((HORIZON, DIM))
    np.testing.assert_allclose(dct_matrix(HORIZON) @ x, fft.dct(x, axis=0, norm="ortho"), atol=1e-12)
    np.testing.assert_allclose(dct_matrix(HORIZON).T @ dct_matrix(HORIZON), np.eye(HORIZON), atol=1e-12)


def test_round_trip_error_is_within_the_rounding_bound(tokenizer):
    chunks = smooth_chunks(50, seed=1)
    decoded = tokenizer.decode(tokenizer.encode(chunks))
    assert decoded.shape == chunks.shape and decoded.dtype == np.float32
    # Rounding moves each DCT coefficient by at most 0.5/scale (plus float32 output rounding) ...
    matrix = dct_matrix(HORIZON)
    coefficient_error = np.einsum("kt,bta->bka", matrix, decoded.astype(np.float64) - chunks)
    assert np.abs(coefficient_error).max() <= 0.5 / SCALE + 1e-5
    # ... so each action moves by at most 0.5/scale times the column's sum of |DCT entries|.
    bound = 0.5 / SCALE * np.abs(matrix).sum(axis=0).max()
    assert np.abs(decoded - chunks).max() <= bound + 1e-5


def test_tokens_compress_the_chunk(tokenizer):
    tokens = tokenizer.encode(smooth_chunks(50, seed=2))
    assert all(0 <= t < tokenizer.bpe.get_vocab_size() for seq in tokens for t in seq)
    assert max(len(seq) for seq in tokens) < HORIZON * DIM


def test_one_chunk_encodes_to_one_list(tokenizer):
    chunk = smooth_chunks(1, seed=3)[0]
    tokens = tokenizer.encode(chunk)
    assert isinstance(tokens, list) and all(isinstance(t, int) for t in tokens)
    assert tokens == tokenizer.encode(chunk[None])[0]


@pytest.mark.parametrize("garbage", [[], [-5], [3, 3], [10**9], [7] * 500])
def test_tokens_that_are_not_a_chunk_decode_to_zeros_with_a_warning(tokenizer, garbage, caplog):
    good = tokenizer.encode(smooth_chunks(1, seed=4))[0]
    with caplog.at_level(logging.WARNING):
        decoded = tokenizer.decode([garbage, good])
    assert np.array_equal(decoded[0], np.zeros((HORIZON, DIM), np.float32))
    assert np.abs(decoded[1]).max() > 0
    assert "returning zero actions" in caplog.text


def test_decode_needs_a_chunk_shape():
    bare = FASTActionTokenizer.fit(list(smooth_chunks(20, seed=5)), vocab_size=300)
    with pytest.raises(InputError, match="time_horizon"):
        bare.decode([[1, 2]])
    assert bare.decode([[]], time_horizon=4, action_dim=2).shape == (1, 4, 2)


def test_bad_inputs_are_rejected(tokenizer):
    with pytest.raises(InputError, match=r"\[H, A\]"):
        tokenizer.encode(np.zeros(5))
    with pytest.raises(InputError, match="NaN"):
        tokenizer.encode(np.full((HORIZON, DIM), np.nan))
    with pytest.raises(InputError, match="vocab_size"):
        FASTActionTokenizer.fit([np.linspace(-100, 100, 40).reshape(20, 2)], vocab_size=300)


def test_save_and_load_round_trip_with_the_published_files(tokenizer, tmp_path):
    tokenizer.save(tmp_path / "fast")
    for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / "fast" / name).is_file(), name
    config = json.loads((tmp_path / "fast" / "processor_config.json").read_text())
    assert set(config) == PUBLISHED_CONFIG_FIELDS
    assert config["processor_class"] == "UniversalActionProcessor"
    assert (config["scale"], config["time_horizon"], config["action_dim"]) == (10, HORIZON, DIM)
    assert config["min_token"] == tokenizer.min_token

    loaded = FASTActionTokenizer.load(tmp_path / "fast")
    chunks = smooth_chunks(10, seed=6)
    tokens = tokenizer.encode(chunks)
    assert loaded.encode(chunks) == tokens
    np.testing.assert_array_equal(loaded.decode(tokens), tokenizer.decode(tokens))


def test_a_published_style_directory_without_a_chunk_shape_loads(tokenizer, tmp_path):
    tokenizer.save(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    config.update(time_horizon=None, action_dim=None)
    (tmp_path / "processor_config.json").write_text(json.dumps(config))
    loaded = FASTActionTokenizer.load(tmp_path)
    chunk = smooth_chunks(1, seed=7)
    np.testing.assert_array_equal(
        loaded.decode(loaded.encode(chunk), time_horizon=HORIZON, action_dim=DIM),
        tokenizer.decode(tokenizer.encode(chunk)),
    )


def test_loading_a_directory_without_the_files_names_them(tmp_path):
    with pytest.raises(InputError, match=r"processor_config\.json"):
        FASTActionTokenizer.load(tmp_path)
