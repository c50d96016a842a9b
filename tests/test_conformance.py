"""``pi conformance`` end to end: both backends agree, match openpi, and a perturbed
backend is caught with the failing check named."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

PERTURBED_PLUGIN = '''
import numpy as np
from openpi_core import hookimpl
from openpi_backend_torch.backend import TorchBackend


class PerturbedTorchBackend(TorchBackend):
    """A test-only copy of the torch backend with one bias nudged by 1e-3."""

    name = "torch_perturbed"

    def load_model(self, path_or_params, config=None):
        params = dict(path_or_params)
        params["action_out_proj.bias"] = params["action_out_proj.bias"] + np.float32(1e-3)
        return super().load_model(params, config)


@hookimpl
def openpi_register_backends(register):
    register(PerturbedTorchBackend())
'''


def run_pi(*args: str, plugins: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PI_")}
    environment["PI_LOAD_PLUGINS"] = plugins
    if pythonpath is not None:
        environment["PYTHONPATH"] = os.pathsep.join([str(pythonpath), environment.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "openpi_cli", *args], capture_output=True, text=True, env=environment, timeout=1200
    )


@pytest.mark.slow
def test_backends_agree_for_every_family_in_float32_and_bfloat16(tmp_path):
    junit = tmp_path / "conformance.xml"
    result = run_pi(
        "conformance",
        "--family",
        "pi0,pi05,pi0_fast",
        "--dtype",
        "float32,bfloat16",
        "--junit-xml",
        str(junit),
        plugins="conformance,jax,torch,aloha,droid,libero,ur5",
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    table = result.stdout
    for family in ("pi0", "pi05"):
        assert f"{family}/float32/jax-vs-torch/gradients" in table
        assert f"{family}/bfloat16/jax-vs-torch/actions" in table
        assert f"{family}/float32/jax-vs-torch/train_step/param_updates" in table
        assert f"{family}/float32/jax-vs-torch/rtc_actions" in table
        for backend in ("jax", "torch"):
            assert f"{family}/float32/{backend}/rtc_prefix_adherence" in table
            assert f"{family}/float32/{backend}/rtc_zero_guidance" in table
    for output in ("prefix_logits", "loss", "greedy_tokens", "gradients"):
        assert f"pi0_fast/float32/jax-vs-torch/{output}" in table
    assert "FAIL" not in table
    assert 'failures="0"' in junit.read_text() and "test_embodiment_contracts" in junit.read_text()


@pytest.mark.slow
def test_reference_parity_from_every_weight_form(reference_root):
    result = run_pi(
        "conformance",
        "--embodiments",
        "",
        "--reference",
        str(reference_root / "pi0"),
        "--reference",
        str(reference_root / "pi05"),
        "--reference",
        str(reference_root / "pi0_fast"),
        "--family",
        "none",
        plugins="conformance,jax,torch",
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    for backend in ("jax", "torch"):
        for form in ("openpi-jax-safetensors", "openpi-jax-orbax", "openpi-torch"):
            for family in ("pi0", "pi05"):
                assert f"{family}/{backend}/{form}/actions_10_steps" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith(("pi0/", "pi05/"))]
    assert len(rows) == 2 * 2 * 3 * 6 and all(row.endswith("pass") for row in rows)
    fast_rows = [line for line in result.stdout.splitlines() if line.startswith("pi0_fast/")]
    assert len(fast_rows) == 2 * 5 and all(row.endswith("pass") for row in fast_rows)
    assert "pi0_fast/jax/openpi-jax-safetensors/greedy_tokens" in result.stdout


@pytest.mark.slow
def test_a_perturbed_backend_fails_and_the_check_is_named(tmp_path):
    (tmp_path / "perturbed.py").write_text(PERTURBED_PLUGIN)
    info = tmp_path / "perturbed_backend-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: perturbed-backend\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[openpi]\nperturbed = perturbed\n")
    result = run_pi(
        "conformance",
        "--backends",
        "torch,torch_perturbed",
        "--family",
        "pi0",
        "--dtype",
        "float32",
        "--embodiments",
        "",
        plugins="conformance,torch,perturbed",
        pythonpath=tmp_path,
    )
    assert result.returncode != 0
    failing = [line for line in result.stdout.splitlines() if line.rstrip().endswith("FAIL") or " FAIL " in line]
    names = " ".join(failing)
    assert "pi0/float32/torch-vs-torch_perturbed/actions" in names
    assert "pi0/float32/torch-vs-torch_perturbed/prefix_embeddings" not in names
