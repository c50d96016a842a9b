"""The reference sets hold the same weights three ways; every reader must agree bit-exactly,
and the exporters must reproduce openpi's own files."""

import attrs
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from openpi_core.checkpoints import load_checkpoint, save_checkpoint
from openpi_core.checkpoints.openpi_jax import openpi_jax_from_canonical
from openpi_core.checkpoints.openpi_torch import UNUSED_EXPERT_HEAD
from openpi_core.checkpoints.orbax import read_orbax_params, write_orbax_params
from openpi_core.errors import WeightsError
from openpi_core.models.pi0_weights import pi0_weight_schema
from openpi_core.reference import ReferenceSet, load_reference


@pytest.fixture(params=["pi0", "pi05"], scope="module")
def ref(request, reference_root) -> ReferenceSet:
    return load_reference(reference_root / request.param)


def assert_identical(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, array in expected.items():
        assert actual[name].dtype == array.dtype, name
        assert actual[name].shape == array.shape, name
        assert np.array_equal(actual[name].view(np.uint32), array.view(np.uint32)), name


def test_three_forms_give_identical_canonical_params(ref):
    _, from_safetensors = load_checkpoint(ref.openpi_params_path)
    _, from_orbax = load_checkpoint(ref.orbax_params_path)
    _, from_step_dir = load_checkpoint(ref.orbax_params_path.parent)
    _, from_torch = load_checkpoint(ref.torch_state_path, ref.config)
    _, from_torch_dir = load_checkpoint(ref.torch_state_path.parent, ref.config)
    assert len(from_safetensors) == len(pi0_weight_schema(ref.config))
    for other in (from_orbax, from_step_dir, from_torch, from_torch_dir):
        assert_identical(other, from_safetensors)


def test_inferred_config_matches_the_reference(ref):
    config, _ = load_checkpoint(ref.openpi_params_path)
    assert pi0_weight_schema(config) == pi0_weight_schema(ref.config)
    # Weights fix everything but the horizon and the token length.
    assert config == attrs.evolve(ref.config, action_horizon=50, max_token_len=config.max_token_len)
    assert config.pi05 is ref.config.pi05
    assert load_checkpoint(ref.orbax_params_path)[0] == config


def test_torch_weights_alone_cannot_name_the_tiny_vision_heads(ref):
    with pytest.raises(WeightsError, match="SigLIP attention heads"):
        load_checkpoint(ref.torch_state_path)


def test_orbax_read_equals_params_safetensors(ref):
    assert_identical(read_orbax_params(ref.orbax_params_path), load_file(str(ref.openpi_params_path)))


def test_torch_export_reproduces_the_reference_file(ref, tmp_path):
    config, params = load_checkpoint(ref.openpi_params_path, ref.config)
    save_checkpoint(tmp_path / "torch", config, params, to="openpi-torch")
    written = load_file(str(tmp_path / "torch" / "model.safetensors"))
    expected = load_file(str(ref.torch_state_path))
    # The unused expert head is random in openpi's file and zeros in ours.
    assert not written[UNUSED_EXPERT_HEAD].any()
    assert written[UNUSED_EXPERT_HEAD].shape == expected[UNUSED_EXPERT_HEAD].shape
    written[UNUSED_EXPERT_HEAD] = expected[UNUSED_EXPERT_HEAD]
    assert_identical(written, expected)
    with (
        safe_open(str(tmp_path / "torch" / "model.safetensors"), "np") as mine,
        safe_open(str(ref.torch_state_path), "np") as theirs,
    ):
        assert mine.metadata() == theirs.metadata()
    # The export records its config, so it reads back without one.
    reread_config, reread = load_checkpoint(tmp_path / "torch")
    assert reread_config == config
    assert_identical(reread, params)


def test_openpi_jax_export_restores_with_orbax_the_way_openpi_does(ref, tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    jax = pytest.importorskip("jax")
    config, params = load_checkpoint(ref.openpi_params_path, ref.config)
    save_checkpoint(tmp_path / "jax", config, params, to="openpi-jax")
    # As openpi's restore_params: metadata -> {"params": ...} item -> restore as numpy.
    with ocp.PyTreeCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(tmp_path / "jax" / "params")
        tree = metadata.item_metadata.tree if hasattr(metadata, "item_metadata") else metadata
        item = {"params": tree["params"]}
        restored = checkpointer.restore(
            tmp_path / "jax" / "params",
            ocp.args.PyTreeRestore(
                item=item,
                restore_args=jax.tree.map(lambda _: ocp.ArrayRestoreArgs(restore_type=np.ndarray), item),
            ),
        )["params"]
    flat = {"/".join(str(k.key) for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(restored)}
    assert_identical(flat, load_file(str(ref.openpi_params_path)))
    reread_config, reread = load_checkpoint(tmp_path / "jax")
    assert reread_config == config
    assert_identical(reread, params)


def test_value_suffix_of_training_checkpoints_is_stripped(ref, tmp_path):
    pytest.importorskip("orbax.checkpoint")
    _, params = load_checkpoint(ref.openpi_params_path, ref.config)
    named = openpi_jax_from_canonical(params)
    write_orbax_params(tmp_path / "params", {f"{name}/value": array for name, array in named.items()})
    assert_identical(read_orbax_params(tmp_path), named)
    _, loaded = load_checkpoint(tmp_path)
    assert_identical(loaded, params)
