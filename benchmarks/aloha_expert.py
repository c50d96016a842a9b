"""Measure the scripted ALOHA expert's success rate and the simulator's cost per step.

(a) Success: the expert plays ``--episodes`` episodes per task (seeds ``--first-seed``
    onward, ``render="none"``) of gym-aloha's length; an episode succeeds when the reward
    of its last step is 4. Also printed: seconds per episode (expert and physics) and the
    largest change of any arm joint between two consecutive actions.
(b) Rendering: ``--render-steps`` steps of the expert per render mode of ``AlohaSimEnv``
    (``none``, ``fast``, ``faithful``), ms per ``env.step`` (physics, reward and the
    observation with its image), and for ``faithful`` also what the policy side then
    spends on ``resize_with_pad`` to 224x224.

    python benchmarks/aloha_expert.py --task transfer-cube --episodes 100
    python benchmarks/aloha_expert.py --task all --episodes 100 --render-steps 100

Needs the ``sim`` extra of openpi-embodiment-aloha; on a headless Linux machine MuJoCo
renders through EGL (``MUJOCO_GL=egl``, the package's default there). Prints markdown tables.
"""

import argparse
import time

import numpy as np

from openpi_core.transforms.image import resize_with_pad
from openpi_embodiment_aloha.sim.env import MAX_REWARD, RENDER_MODES, TASKS, AlohaSimEnv
from openpi_embodiment_aloha.sim.expert import ScriptedExpert

GRIPPER_DIMS = (6, 13)


def success_rate(task: str, episodes: int, first_seed: int) -> dict:
    """Play ``episodes`` expert episodes of ``task``; returns the figures of one table row."""
    env = AlohaSimEnv(task, render="none")
    expert = ScriptedExpert(env)
    arm_dims = [i for i in range(14) if i not in GRIPPER_DIMS]
    successes, failed, max_delta = 0, [], 0.0
    start = time.perf_counter()
    for seed in range(first_seed, first_seed + episodes):
        observation = env.reset(seed)
        expert.reset()
        previous = observation["state"][arm_dims].astype(np.float64)
        reward = 0.0
        for _ in range(env.max_steps):
            action = expert.act(observation)
            max_delta = max(max_delta, float(np.abs(action[arm_dims] - previous).max()))
            previous = action[arm_dims]
            observation, reward = env.step(action)
        if reward == MAX_REWARD:
            successes += 1
        else:
            failed.append(seed)
    seconds = time.perf_counter() - start
    return {
        "task": task,
        "success": successes / episodes,
        "episodes": episodes,
        "s_per_episode": seconds / episodes,
        "max_joint_delta": max_delta,
        "failed_seeds": failed,
    }


def render_cost(task: str, steps: int) -> list[tuple[str, float]]:
    """``(what, ms per step)`` for each render mode, over ``steps`` expert steps."""
    rows = []
    for mode in RENDER_MODES:
        env = AlohaSimEnv(task, render=mode)
        expert = ScriptedExpert(env)
        observation = env.reset(0)
        expert.reset()
        images, elapsed = [], 0.0
        for _ in range(steps):
            action = expert.act(observation)
            start = time.perf_counter()
            observation, _ = env.step(action)
            elapsed += time.perf_counter() - start
            if mode == "faithful":
                images.append(observation["images"]["cam_high"])
        rows.append((f"env.step, render={mode!r}", elapsed / steps * 1e3))
        if images:
            start = time.perf_counter()
            for image in images:
                resize_with_pad(image, 224, 224)
            rows.append(("resize_with_pad 480x640 -> 224x224", (time.perf_counter() - start) / len(images) * 1e3))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=(*TASKS, "all"), default="all")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--render-steps", type=int, default=50, help="0 skips the render timing")
    args = parser.parse_args()
    tasks = TASKS if args.task == "all" else (args.task,)

    print("| task | success (final reward 4) | episodes | s/episode | max joint step (rad) | failed seeds |")
    print("|---|---|---|---|---|---|")
    for task in tasks:
        row = success_rate(task, args.episodes, args.first_seed)
        print(
            f"| {task} | {row['success']:.1%} | {row['episodes']} | {row['s_per_episode']:.2f} "
            f"| {row['max_joint_delta']:.3f} | {row['failed_seeds']} |"
        )
    if args.render_steps > 0:
        print()
        print(f"| task | what | ms/step (mean of {args.render_steps}) |")
        print("|---|---|---|")
        for task in tasks:
            for what, ms in render_cost(task, args.render_steps):
                print(f"| {task} | {what} | {ms:.1f} |")


if __name__ == "__main__":
    main()
