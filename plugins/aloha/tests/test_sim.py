"""The headless ALOHA simulator (gym-aloha's tasks) and the scripted expert, with the real physics."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest
from gym_aloha.env import AlohaEnv
from gym_aloha.utils import sample_box_pose, sample_insertion_pose

from openpi_core.errors import InputError
from openpi_core.transforms import compose
from openpi_core.transforms.image import resize_with_pad
from openpi_embodiment_aloha import AlohaEmbodiment
from openpi_embodiment_aloha.sim.env import MAX_REWARD, TASKS, AlohaSimEnv, letterbox_size
from openpi_embodiment_aloha.sim.expert import ScriptedExpert

ARM_DIMS = [i for i in range(14) if i not in (6, 13)]
# A smooth trajectory's largest joint step, over 100 seeds per task, is about 0.06 rad per
# 20 ms step (3 rad/s, near the ViperX servos' top speed). Going through the wrist's
# singularity in Cartesian space instead gives 0.15-0.18 rad steps and second differences
# near 0.1, so these bounds catch a jump with margin on both sides.
MAX_JOINT_STEP = 0.1
MAX_JOINT_SECOND_DIFFERENCE = 0.05


@pytest.fixture(scope="module")
def fast_env():
    return AlohaSimEnv("transfer-cube", render="fast")


@pytest.fixture(scope="module", params=TASKS)
def blind_env(request):
    return AlohaSimEnv(request.param, render="none")


def run_expert(env, seed):
    """The expert's actions [steps, 14] and rewards [steps] for one episode of ``env``."""
    expert = ScriptedExpert(env)
    observation = env.reset(seed)
    expert.reset()
    actions, rewards = [], []
    for _ in range(env.max_steps):
        action = expert.act(observation)
        observation, reward = env.step(action)
        actions.append(action)
        rewards.append(reward)
    return np.array(actions), np.array(rewards)


def test_observation_is_what_the_aloha_embodiment_reads(fast_env):
    observation = fast_env.reset(0)
    assert set(observation) == {"state", "images"}
    assert set(observation["images"]) == {"cam_high"}
    assert observation["state"].shape == (14,)
    assert observation["state"].dtype == np.float32
    assert observation["images"]["cam_high"].shape == (224, 224, 3)
    assert observation["images"]["cam_high"].dtype == np.uint8
    # The start pose: joints of gym-aloha's START_ARM_POSE, grippers nearly closed (0.1).
    np.testing.assert_allclose(observation["state"][[1, 2, 8, 9]], [-0.96, 1.16, -0.96, 1.16], atol=0.01)
    np.testing.assert_allclose(observation["state"][[6, 13]], 0.1, atol=0.01)

    inputs = compose(AlohaEmbodiment().transforms("pi0").inputs)({**observation, "prompt": fast_env.prompt})
    assert inputs["image"]["base_0_rgb"].shape == (224, 224, 3)
    assert inputs["image_mask"]["base_0_rgb"]
    assert inputs["state"].shape == (14,)
    assert inputs["prompt"] == "Transfer cube"


def test_reset_places_objects_as_gym_aloha_samples_them():
    for task, expected in (
        ("transfer-cube", sample_box_pose(7)),
        ("insertion", np.concatenate(sample_insertion_pose(7))),
    ):
        env = AlohaSimEnv(task, render="none")
        env.reset(7)
        objects = env.physics.data.qpos[16:]
        np.testing.assert_allclose(objects[0::7], expected[0::7], atol=1e-6)  # the x of each object
        np.testing.assert_allclose(objects[1::7], expected[1::7], atol=1e-6)


def test_steps_physics_and_rewards_exactly_as_gym_aloha():
    ours = AlohaSimEnv("transfer-cube", render="none")
    theirs = AlohaEnv("transfer_cube", obs_type="pixels_agent_pos")
    expert = ScriptedExpert(ours)
    observation = ours.reset(3)
    their_observation, _ = theirs.reset(seed=3)
    expert.reset()
    for _ in range(8):
        np.testing.assert_array_equal(observation["state"], their_observation["agent_pos"].astype(np.float32))
        action = expert.act(observation)
        observation, reward = ours.step(action)
        their_observation, their_reward, *_ = theirs.step(action)
        assert reward == their_reward


def test_fast_render_is_letterboxed_like_resize_with_pad():
    assert letterbox_size(480, 640, 224) == (168, 224)
    fast = AlohaSimEnv("insertion", render="fast")
    faithful = AlohaSimEnv("insertion", render="faithful")
    fast_image = fast.reset(1)["images"]["cam_high"]
    faithful_image = faithful.reset(1)["images"]["cam_high"]
    assert faithful_image.shape == (480, 640, 3)
    assert faithful_image.dtype == np.uint8
    assert not fast_image[:28].any() and not fast_image[196:].any()  # black bars, 28 rows each
    assert fast_image[28:196].any()

    reference = resize_with_pad(faithful_image, 224, 224)
    difference = np.abs(fast_image.astype(np.int16) - reference.astype(np.int16))
    # No shadows and no multisampling: edges and the shadowed table differ, not the scene.
    # Measured about 2 grey levels on average; a shifted or rescaled image gives well over 10.
    assert difference.mean() < 6.0
    assert np.median(difference) <= 2


def test_image_size_sets_the_fast_image_side():
    env = AlohaSimEnv("transfer-cube", render="fast", image_size=96)
    image = env.reset(0)["images"]["cam_high"]
    assert image.shape == (96, 96, 3)
    height, _ = letterbox_size(480, 640, 96)
    top = (96 - height) // 2
    assert not image[:top].any() and not image[top + height :].any()


def test_render_none_has_no_images(blind_env):
    assert blind_env.reset(0)["images"] == {}


def test_bad_arguments_name_what_was_expected(blind_env):
    with pytest.raises(InputError, match=r"'transfer-cube', 'insertion'"):
        AlohaSimEnv("peg-in-hole")
    with pytest.raises(InputError, match="fast"):
        AlohaSimEnv("insertion", render="pretty")
    with pytest.raises(InputError, match="top"):
        AlohaSimEnv("insertion", camera="ceiling")
    blind_env.reset(0)
    with pytest.raises(InputError, match=r"\[14\], got \[7\]"):
        blind_env.step(np.zeros(7))
    with pytest.raises(InputError, match="finite"):
        blind_env.step(np.full(14, np.nan))


def test_expert_acts_only_after_reset(blind_env):
    with pytest.raises(RuntimeError, match="reset"):
        ScriptedExpert(blind_env).act()


# Measured over 500 seeds (benchmarks/aloha_expert.py): transfer-cube 100 %, insertion
# 98.8 %. Which insertion seeds fail moves with MuJoCo's and numpy's versions (the peg
# may slip for one step at the very end), so insertion is held to its rate, not to a seed.
EXPERT_SEEDS = range(10)
MIN_SUCCESSES = {"transfer-cube": 10, "insertion": 9}


def test_expert_ends_episodes_at_the_top_reward_and_holds_it(blind_env):
    successes = 0
    for seed in EXPERT_SEEDS:
        actions, rewards = run_expert(blind_env, seed)
        successes += rewards[-1] == MAX_REWARD
        # Every episode reaches the top and holds it: no success is a transient touch.
        assert (rewards[-20:] == MAX_REWARD).mean() >= 0.8, f"seed {seed}: {rewards[-20:]}"
        assert actions.shape == (blind_env.max_steps, 14)
        assert np.all((actions[:, [6, 13]] >= 0.0) & (actions[:, [6, 13]] <= 1.0))
    assert successes >= MIN_SUCCESSES[blind_env.task]


def test_expert_joint_trajectory_is_smooth(blind_env):
    actions, _ = run_expert(blind_env, 5)
    start = blind_env.reset(5)["state"].astype(np.float64)
    joints = np.concatenate([start[None, ARM_DIMS], actions[:, ARM_DIMS]])
    assert np.abs(np.diff(joints, axis=0)).max() < MAX_JOINT_STEP
    assert np.abs(np.diff(joints, n=2, axis=0)).max() < MAX_JOINT_SECOND_DIFFERENCE
    # Far from the ±π branch: the forearm rolls stay near 0 (at most about 0.8 over 100
    # seeds), the wrist rotates within the quarter turn that the vertical-finger grasp needs.
    assert np.abs(joints[:, [3, 9]]).max() < 1.2
    assert np.abs(joints[:, [5, 11]]).max() < 2.0
