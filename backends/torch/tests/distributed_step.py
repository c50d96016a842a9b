"""Two training steps of a tiny π0 on a batch of 4, for ``torchrun`` (see test_training.py).

Usage: ``torchrun --nproc_per_node N distributed_step.py OUT.npz FSDP_DEVICES``. Every
rank passes the whole batch; rank 0 writes the final ``state_dict()`` and the metrics.
"""

import sys

import numpy as np
import torch
import torch.distributed as dist

from openpi_backend_torch import TorchBackend
from openpi_conformance.fixtures import seeded_actions, seeded_observation, seeded_params, tiny_pi0_config
from openpi_core.models.api import draw_noise, draw_time
from openpi_core.training.config import TrainConfig

BATCH = 4


def run(out: str | None, fsdp_devices: int) -> dict[str, np.ndarray]:
    """Train two steps and return (on rank 0, also write to ``out``) the state and metrics."""
    torch.set_num_threads(1)
    config = tiny_pi0_config("pi0")
    train = TrainConfig(exp_name="ddp", precision="float32", fsdp_devices=fsdp_devices)
    trainer = TorchBackend().create_trainer(config, train, seeded_params(config))
    observation = seeded_observation(config, BATCH)
    actions = seeded_actions(config, BATCH)
    result = {}
    for step in range(2):
        noise = draw_noise(step, actions.shape)
        metrics = trainer.step(observation, actions, noise, draw_time(step, BATCH), lr=1e-3)
        result.update({f"metrics/{step}/{key}": np.asarray(value) for key, value in metrics.items()})
    result.update(trainer.state_dict())
    if out is not None and trainer.is_main:
        np.savez(out, **result)
    return result


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]))
    if dist.is_initialized():
        dist.destroy_process_group()
