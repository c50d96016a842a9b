"""Open-loop check of an ALOHA sim policy on recorded demonstrations: does it read the image?

For every ``--every``-th episode of a ``pi data aloha-sim`` dataset and each step ``t`` of
``--times``, the policy gets the recorded observation (camera, state, prompt) and predicts
an action chunk. Printed per ``t``, in radians over the six joints of ``--arm`` and the
whole chunk:

* ``policy``: mean absolute error of the predicted chunk against the recorded one;
* ``mean of episodes``: the same error for the chunk averaged over the episodes at that
  ``t``, which is what a policy that ignores everything telling episodes apart scores.

In transfer-cube every episode starts from the same posture, so at ``t = 0`` only the
image (where the cube is) tells episodes apart. A ``policy`` error at or above the
baseline there means the policy has not learned to find the cube; later in the episode
the arm's own motion gives the target away, so the errors there say little about vision.

Use a recording the policy did not train on to see whether it finds cubes it has not
seen (``pi data aloha-sim --episodes 20 --seed 5000 --out ./heldout``):

    python benchmarks/aloha_sim_open_loop.py --dataset ./heldout --every 1 --config pi0_aloha_sim_small \\
        --checkpoint checkpoints/pi0_aloha_sim_small/small/15000/model --backend jax

Needs the ``sim`` extra of openpi-embodiment-aloha (for the preset's plugin) and a backend.
"""

import argparse

import numpy as np

from openpi_core.data.lerobot import LeRobotDataset
from openpi_core.launch import load_policy
from openpi_embodiment_aloha.sim.record import dataset_keys

ARM_JOINTS = {"left": slice(0, 6), "right": slice(7, 13)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a `pi data aloha-sim` dataset (LeRobot v3.0)")
    parser.add_argument("--config", default="pi0_aloha_sim_small", help="preset")
    parser.add_argument("--checkpoint", help="checkpoint (default: the preset's)")
    parser.add_argument("--backend", default="jax")
    parser.add_argument("--times", default="0,10,20,40,80", help="steps of the episodes to check")
    parser.add_argument("--every", type=int, default=5, help="check every N-th episode")
    parser.add_argument("--arm", choices=sorted(ARM_JOINTS), default="right", help="the arm that reaches first")
    args = parser.parse_args()

    policy = load_policy(
        config_name=args.config, checkpoint=args.checkpoint, embodiment=None, backend=args.backend, num_steps=None
    )
    horizon = int(policy.metadata["action_horizon"])
    dataset = LeRobotDataset(args.dataset, action_horizon=horizon)
    camera, state, action = dataset_keys()
    joints = ARM_JOINTS[args.arm]
    episodes = range(0, dataset.num_episodes, args.every)
    print(f"{len(episodes)} episodes, chunks of {horizon}, {args.arm} arm joints (rad)\n")
    print("| t | policy | mean of episodes |\n|---|---|---|")
    for t in (int(value) for value in args.times.split(",")):
        predicted, recorded = [], []
        for episode in episodes:
            start, end = dataset.episode_bounds(episode)
            if start + t >= end:
                continue
            item = dataset[start + t]
            observation = {
                "state": item[state],
                "images": {"cam_high": item[camera]},
                "prompt": item["task"],
            }
            predicted.append(policy.infer(observation)["actions"][:horizon, joints])
            recorded.append(item[action][:, joints])
        recorded_chunks = np.stack(recorded)
        policy_error = np.abs(np.stack(predicted) - recorded_chunks).mean()
        baseline_error = np.abs(recorded_chunks.mean(0) - recorded_chunks).mean()
        print(f"| {t} | {policy_error:.4f} | {baseline_error:.4f} |")


if __name__ == "__main__":
    main()
