"""A scripted expert that solves both gym-aloha tasks through 14-dim joint-position actions.

Each arm plays a list of :class:`Segment`. A segment moves the arm's grasp point (a point
between the fingertips, fixed in the ``gripper_link`` frame) from where the arm was
commanded when the segment started to a goal pose, on a minimum-jerk time scaling, while
the gripper moves linearly to its target. Goals come from the objects' poses read from
the physics when the segment starts or, for the insertion, every step (closed loop on the
measured peg and socket poses, low-pass filtered). Three kinds of motion:

* ``JOINT``: free-space moves. The goal's joints are found by following the Cartesian path
  with inverse kinematics once, then the joints are interpolated, so a move that brings
  the wrist near its singularity stays smooth in joint space.
* ``CARTESIAN``: straight-line moves near objects (descend, lift, hand over).
* ``TRACK``: like ``CARTESIAN``, but the goal is recomputed every step.

Inverse kinematics is damped least squares on MuJoCo's Jacobian (``mj_jac`` on a scratch
``MjData``), warm-started from the previous command, so the joint trajectory is as smooth
as the Cartesian one. The damping's null space carries a weak pull toward gym-aloha's
start posture, which keeps the forearm roll and wrist rotate near 0 (away from the ±π
branch) where the wrist is near-singular.

Transfer-cube: the right arm grasps the cube from above, its approach tilted toward the
middle, and lifts it to a hand-over point in mid air; the left arm comes in horizontally
with its fingers vertical and grasps the cube's top and bottom faces; the right arm opens
and backs off, and the left arm keeps holding (reward 4 to the episode's end).

Insertion: the left arm grasps the socket near its left end and the right arm the peg
near its right end, both from above, and both lift to a meeting point in mid air, the
socket's mouth raised 25 degrees so that gravity helps the peg stay on the pin. The
right arm then aligns the peg's axis with the socket's measured axis a few centimetres
out, slides the peg in until it presses on the pin, and holds it there (reward 4 to the
episode's end).

Success (reward 4 at the last of gym-aloha's 300 steps), ``benchmarks/aloha_expert.py``
over seeds 0..499: transfer-cube 100 %, insertion about 99 %. The insertion's misses all
happen at the end: the peg is in and pressing on the pin, but gym-aloha's very stiff
contacts make the physics kick now and then, and a kick on the very last step lifts the
peg off the pin for that step.

An action is gym-aloha's: per arm 6 absolute joint targets (rad) and the gripper's
normalized finger-position target, 0 closed .. 1 open (``before_step`` in
``gym_aloha.tasks.sim`` maps it to metres).
"""

import enum
from collections.abc import Callable
from typing import Any, NamedTuple

import mujoco
import numpy as np
from gym_aloha.constants import START_ARM_POSE, normalize_puppet_gripper_position

from openpi_embodiment_aloha.sim.env import AlohaSimEnv

ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
ARM_DOF = len(ARM_JOINTS)
GRASP_POINT = np.array([0.125, 0.0, 0.0])
"""The grasp point in the ``gripper_link`` frame: between the fingers, 3 cm from their tips."""
REST_POSTURE = np.array(START_ARM_POSE[:ARM_DOF])
"""gym-aloha's start pose of each arm's joints, the IK's posture target."""
OPEN, CLOSED = 1.0, 0.0
ROTATION_WEIGHT = 0.2
"""Metres per radian when the IK weighs position and orientation errors together."""
DAMPING = 0.02
POSTURE_GAIN = 0.05
IK_ITERATIONS = 8
IK_TOLERANCE = 1e-5
PATH_PIECES = 20
"""IK solves along the Cartesian path that find a ``JOINT`` segment's goal joints."""
TRACK_GAIN = 0.1
"""Per-step low-pass gain of ``TRACK`` goals: the measured poses jitter in contact."""


class Pose(NamedTuple):
    """A grasp-point pose in world coordinates: ``pos`` [3] (m), ``quat`` [4] (w, x, y, z)."""

    pos: np.ndarray
    quat: np.ndarray


def quat_from_matrix(matrix: np.ndarray) -> np.ndarray:
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(matrix, dtype=np.float64).reshape(9))
    return quat


def matrix_from_quat(quat: np.ndarray) -> np.ndarray:
    matrix = np.empty(9)
    mujoco.mju_quat2Mat(matrix, quat)
    return matrix.reshape(3, 3)


def slerp(start: np.ndarray, end: np.ndarray, fraction: float) -> np.ndarray:
    """Spherical interpolation between unit quaternions, along the shorter arc."""
    dot = float(start @ end)
    if dot < 0.0:
        end, dot = -end, -dot
    if dot > 0.9995:
        quat = start + fraction * (end - start)
        return quat / np.linalg.norm(quat)
    angle = np.arccos(dot)
    return (np.sin((1.0 - fraction) * angle) * start + np.sin(fraction * angle) * end) / np.sin(angle)


def interpolate(start: Pose, end: Pose, fraction: float) -> Pose:
    return Pose(start.pos + fraction * (end.pos - start.pos), slerp(start.quat, end.quat, fraction))


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """World-frame rotation vector that turns orientation ``current`` into ``target`` (quaternions)."""
    local = np.empty(3)
    mujoco.mju_subQuat(local, target, current)
    return matrix_from_quat(current) @ local


def min_jerk(fraction: float) -> float:
    """Minimum-jerk time scaling: 0 -> 0 and 1 -> 1 with zero velocity and acceleration at both ends."""
    fraction = min(max(fraction, 0.0), 1.0)
    return fraction**3 * (10.0 - 15.0 * fraction + 6.0 * fraction**2)


def gripper_frame(approach: np.ndarray, fingers: np.ndarray) -> np.ndarray:
    """Quaternion of a gripper pointing along ``approach`` whose fingers close along ``fingers``.

    The frame is ``gripper_link``'s: x along the approach, y along the finger slide
    (``fingers`` made orthogonal to x), z = x cross y.
    """
    x = approach / np.linalg.norm(approach)
    y = fingers - (fingers @ x) * x
    y /= np.linalg.norm(y)
    return quat_from_matrix(np.column_stack([x, y, np.cross(x, y)]))


class ArmKinematics:
    """Forward kinematics and damped-least-squares IK of one arm's grasp point.

    Works on its own scratch ``MjData``, so the simulation's state is never touched.
    """

    def __init__(self, model: mujoco.MjModel, side: str):
        self._model = model
        self._data = mujoco.MjData(model)
        joints = [model.joint(f"vx300s_{side}/{name}") for name in ARM_JOINTS]
        self.qpos_index = np.array([joint.qposadr[0] for joint in joints])
        self.gripper_qpos_index = model.joint(f"vx300s_{side}/left_finger").qposadr[0]
        self._dof_index = np.array([joint.dofadr[0] for joint in joints])
        self._limits = np.array([joint.range for joint in joints])
        self._body = model.body(f"vx300s_{side}/gripper_link").id
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def pose(self, q: np.ndarray) -> Pose:
        """Grasp-point pose for arm joints ``q`` [6]."""
        self._data.qpos[self.qpos_index] = q
        mujoco.mj_kinematics(self._model, self._data)
        return self._grasp_pose(self._data)

    def measured_pose(self, data: mujoco.MjData) -> Pose:
        """Grasp-point pose in the simulation's ``data``, as of its last physics step."""
        return self._grasp_pose(data)

    def solve(self, q: np.ndarray, target: Pose) -> np.ndarray:
        """Joints [6] that put the grasp point at ``target``, iterating from ``q``."""
        q = np.array(q, dtype=np.float64)
        weights = np.array([1.0, 1.0, 1.0, ROTATION_WEIGHT, ROTATION_WEIGHT, ROTATION_WEIGHT])
        for _ in range(IK_ITERATIONS):
            current = self.pose(q)
            error = weights * np.concatenate([target.pos - current.pos, rotation_error(target.quat, current.quat)])
            if error @ error < IK_TOLERANCE**2:
                break
            mujoco.mj_comPos(self._model, self._data)
            mujoco.mj_jac(self._model, self._data, self._jacp, self._jacr, current.pos, self._body)
            jacobian = weights[:, None] * np.vstack([self._jacp, self._jacr])[:, self._dof_index]
            normal = jacobian.T @ jacobian + DAMPING**2 * np.eye(ARM_DOF)
            step = np.linalg.solve(normal, jacobian.T @ error)
            # DAMPING**2 * normal^-1 projects onto the Jacobian's (near-)null space.
            step += DAMPING**2 * np.linalg.solve(normal, POSTURE_GAIN * (REST_POSTURE - q))
            q = np.clip(q + step, self._limits[:, 0], self._limits[:, 1])
        return q

    def _grasp_pose(self, data: mujoco.MjData) -> Pose:
        rotation = data.xmat[self._body].reshape(3, 3)
        return Pose(data.xpos[self._body] + rotation @ GRASP_POINT, quat_from_matrix(rotation))


class Motion(enum.Enum):
    JOINT = "joint"
    CARTESIAN = "cartesian"
    TRACK = "track"


Goal = Callable[[Any], Pose]
"""A goal pose computed from the dm_control Physics."""


class Segment(NamedTuple):
    """``steps`` control steps toward ``goal`` (None: stay) while the gripper goes to ``gripper``."""

    steps: int
    goal: Goal | None
    gripper: float
    motion: Motion = Motion.CARTESIAN


class Arm:
    """One arm: its kinematics, its last command, and the segments it plays."""

    def __init__(self, model: mujoco.MjModel, side: str):
        self.kinematics = ArmKinematics(model, side)
        self.q = REST_POSTURE.copy()
        self._gripper = 0.0
        self._segments: list[Segment] = []
        self._index = 0
        self._elapsed = 0
        self._start = self._goal = Pose(np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0]))
        self._start_q = self._goal_q = self.q
        self._start_gripper = 0.0

    def play(self, physics: Any, segments: list[Segment]) -> None:
        """Start ``segments`` from the arm's current state in ``physics``."""
        qpos = physics.data.ptr.qpos
        self.q = qpos[self.kinematics.qpos_index].copy()
        self._gripper = float(normalize_puppet_gripper_position(qpos[self.kinematics.gripper_qpos_index]))
        self._segments = segments
        self._index = -1
        self._elapsed = 0

    def commanded_pose(self) -> Pose:
        """Grasp-point pose of the last commanded joints."""
        return self.kinematics.pose(self.q)

    def measured_pose(self, physics: Any) -> Pose:
        return self.kinematics.measured_pose(physics.data.ptr)

    def act(self, physics: Any) -> np.ndarray:
        """The arm's action [7] for the next step: 6 joint targets and the gripper target."""
        if self._index < 0 or (
            self._elapsed >= self._segments[self._index].steps and self._index + 1 < len(self._segments)
        ):
            self._begin(physics, self._index + 1)
        segment = self._segments[self._index]
        if segment.motion is Motion.TRACK and segment.goal is not None and self._elapsed > 0:
            self._goal = interpolate(self._goal, segment.goal(physics), TRACK_GAIN)
        self._elapsed = min(self._elapsed + 1, segment.steps)
        fraction = self._elapsed / segment.steps
        if segment.motion is Motion.JOINT:
            self.q = self._start_q + min_jerk(fraction) * (self._goal_q - self._start_q)
        else:
            self.q = self.kinematics.solve(self.q, interpolate(self._start, self._goal, min_jerk(fraction)))
        self._gripper = self._start_gripper + fraction * (segment.gripper - self._start_gripper)
        return np.concatenate([self.q, [self._gripper]])

    def _begin(self, physics: Any, index: int) -> None:
        self._index, self._elapsed = index, 0
        segment = self._segments[index]
        self._start, self._start_q, self._start_gripper = self.commanded_pose(), self.q, self._gripper
        self._goal = segment.goal(physics) if segment.goal is not None else self._start
        if segment.motion is Motion.JOINT:
            # Follow the Cartesian path in small pieces to stay on the IK branch the arm is on.
            q = self.q
            for piece in range(1, PATH_PIECES + 1):
                q = self.kinematics.solve(q, interpolate(self._start, self._goal, piece / PATH_PIECES))
            self._goal_q = q


# --- Task geometry ---------------------------------------------------------------------------

TILT = np.deg2rad(60.0)
"""How far below horizontal the grippers point when they pick objects from the table."""
APPROACH_DISTANCE = 0.06
"""How far back along its approach axis a gripper waits before it descends onto an object."""


def _body(physics: Any, name: str) -> Pose:
    data, body = physics.data.ptr, physics.model.ptr.body(name).id
    return Pose(data.xpos[body].copy(), data.xquat[body].copy())


def _on_body(physics: Any, name: str, offset: np.ndarray) -> np.ndarray:
    """A point given in body ``name``'s frame, in world coordinates."""
    body = _body(physics, name)
    return body.pos + matrix_from_quat(body.quat) @ offset


def _pick_pose(physics: Any, side: str, point: np.ndarray) -> Pose:
    """Grasp point at ``point``, pointing down at ``TILT`` away from its own arm's base, fingers horizontal."""
    heading = point[:2] - _body(physics, f"vx300s_{side}").pos[:2]
    heading /= np.linalg.norm(heading)
    approach = np.array([heading[0] * np.cos(TILT), heading[1] * np.cos(TILT), -np.sin(TILT)])
    fingers = np.array([-heading[1], heading[0], 0.0])
    return Pose(point, gripper_frame(approach, fingers))


def _backed_off(pose: Pose, distance: float = APPROACH_DISTANCE) -> Pose:
    """``pose`` moved back along its own approach axis by ``distance``."""
    return Pose(pose.pos - distance * matrix_from_quat(pose.quat)[:, 0], pose.quat)


def _shifted(pose: Pose, offset: np.ndarray) -> Pose:
    return Pose(pose.pos + offset, pose.quat)


# Transfer-cube
CUBE_GRASP = np.array([0.0, 0.0, 0.008])
"""Where the right grasp point goes in the cube's frame: slightly above its centre, to keep the fingertips off the table."""
HANDOVER = np.array([0.0, 0.5, 0.25])
"""Where the right arm holds the cube for the hand-over."""
LEFT_FINGERS_VERTICAL = gripper_frame(np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]))
LEFT_CUBE_GRASP = np.array([-0.008, 0.0, 0.0])
"""Where the left grasp point goes relative to the cube's centre: toward the left arm, clear of the right fingers."""


def transfer_cube_segments(left: Arm, right: Arm) -> tuple[list[Segment], list[Segment]]:
    """The left and right arms' segments for transfer-cube."""

    def right_pick(physics: Any) -> Pose:
        return _pick_pose(physics, "right", _on_body(physics, "box", CUBE_GRASP))

    def right_handover(physics: Any) -> Pose:
        return _pick_pose(physics, "right", HANDOVER)

    def left_ready(physics: Any) -> Pose:
        return Pose(HANDOVER + np.array([-0.12, 0.0, 0.0]), LEFT_FINGERS_VERTICAL)

    def left_grasp(physics: Any) -> Pose:
        return Pose(_body(physics, "box").pos + LEFT_CUBE_GRASP, LEFT_FINGERS_VERTICAL)

    right_segments = [
        Segment(50, lambda physics: _backed_off(right_pick(physics)), OPEN, Motion.JOINT),
        Segment(25, right_pick, OPEN),
        Segment(15, None, CLOSED),
        Segment(55, right_handover, CLOSED),
        Segment(50, None, CLOSED),  # the left arm comes in and closes
        Segment(15, None, OPEN),
        Segment(30, lambda physics: _shifted(right.measured_pose(physics), np.array([0.1, 0.0, 0.03])), OPEN),
        Segment(1, None, OPEN),
    ]
    left_segments = [
        Segment(100, left_ready, OPEN, Motion.JOINT),
        Segment(50, None, OPEN),  # the right arm brings the cube
        Segment(30, left_grasp, OPEN),
        Segment(30, None, CLOSED),
        Segment(30, lambda physics: _shifted(left.measured_pose(physics), np.array([-0.05, 0.0, 0.0])), CLOSED),
        Segment(1, None, CLOSED),
    ]
    return left_segments, right_segments


# Insertion
SOCKET_GRASP = np.array([-0.03, 0.0, 0.01])
"""Where the left grasp point goes in the socket's frame: its left half, a little above the axis."""
PEG_GRASP = np.array([0.015, 0.0, 0.02])
"""Where the right grasp point goes in the peg's frame: its right half, above the top face."""
SOCKET_MEET = np.array([-0.1, 0.5, 0.2])
"""Where the left arm holds the socket's centre for the insertion."""
SOCKET_TILT = np.deg2rad(25.0)
"""How far the left arm raises the socket's mouth above horizontal, so that gravity keeps the peg on the pin."""
PEG_HALF_LENGTH = 0.06
SOCKET_MOUTH = 0.06
"""Distance from the socket's centre to its open end along its x axis; the pin ends at 0.04."""
STANDOFF = 0.04
"""How far outside the mouth the peg's tip is brought before it is aligned."""
ENTRY = 0.01
"""How far outside the mouth the tip is aligned again before sliding in."""
INSERT_DEPTH = 0.03
"""How far past the mouth the tip is driven: 1 cm beyond the pin's face, so the peg keeps pressing on it."""


def _socket_meet_pose() -> Pose:
    """The socket's planned pose for the insertion: centre at SOCKET_MEET, mouth raised by SOCKET_TILT."""
    cos, sin = np.cos(SOCKET_TILT), np.sin(SOCKET_TILT)
    return Pose(SOCKET_MEET, quat_from_matrix(np.array([[cos, 0.0, -sin], [0.0, 1.0, 0.0], [sin, 0.0, cos]])))


def _carry(held: Pose, gripper: Pose, destination: Pose) -> Pose:
    """Gripper pose that brings an object from pose ``held`` to ``destination``, the grasp unchanged."""
    held_rotation, destination_rotation = matrix_from_quat(held.quat), matrix_from_quat(destination.quat)
    grasp_pos = held_rotation.T @ (gripper.pos - held.pos)
    grasp_rotation = held_rotation.T @ matrix_from_quat(gripper.quat)
    return Pose(
        destination.pos + destination_rotation @ grasp_pos, quat_from_matrix(destination_rotation @ grasp_rotation)
    )


def insertion_segments(left: Arm, right: Arm) -> tuple[list[Segment], list[Segment]]:
    """The left and right arms' segments for insertion."""

    def left_pick(physics: Any) -> Pose:
        return _pick_pose(physics, "left", _on_body(physics, "socket", SOCKET_GRASP))

    def right_pick(physics: Any) -> Pose:
        return _pick_pose(physics, "right", _on_body(physics, "peg", PEG_GRASP))

    def left_meet(physics: Any) -> Pose:
        return _carry(_body(physics, "socket"), left.measured_pose(physics), _socket_meet_pose())

    def peg_in_socket(depth: float, *, planned: bool = False) -> Goal:
        """Right grasp pose that puts the peg on the socket's axis with its tip ``depth`` past the mouth.

        The socket's pose is measured, or with ``planned`` taken from :func:`_socket_meet_pose`.
        """

        def goal(physics: Any) -> Pose:
            socket = _socket_meet_pose() if planned else _body(physics, "socket")
            socket_rotation = matrix_from_quat(socket.quat)
            peg_pos = socket.pos + socket_rotation @ np.array([SOCKET_MOUTH - depth + PEG_HALF_LENGTH, 0.0, 0.0])
            measured = right.measured_pose(physics)
            target = _carry(_body(physics, "peg"), measured, Pose(peg_pos, socket.quat))
            # Add the servos' steady error (command minus measurement) across the socket's axis,
            # not along it: there the pin stops the peg, and compensating would push ever harder.
            commanded = right.commanded_pose()
            axis = socket_rotation[:, 0]
            servo = commanded.pos - measured.pos
            servo -= (servo @ axis) * axis
            servo_rotation = matrix_from_quat(commanded.quat) @ matrix_from_quat(measured.quat).T
            return Pose(target.pos + servo, quat_from_matrix(servo_rotation @ matrix_from_quat(target.quat)))

        return goal

    left_segments = [
        Segment(50, lambda physics: _backed_off(left_pick(physics)), OPEN, Motion.JOINT),
        Segment(25, left_pick, OPEN),
        Segment(15, None, CLOSED),
        Segment(50, left_meet, CLOSED),
        Segment(1, None, CLOSED),
    ]
    right_segments = [
        Segment(50, lambda physics: _backed_off(right_pick(physics)), OPEN, Motion.JOINT),
        Segment(25, right_pick, OPEN),
        Segment(15, None, CLOSED),
        Segment(50, peg_in_socket(-STANDOFF, planned=True), CLOSED),
        Segment(40, peg_in_socket(-STANDOFF), CLOSED, Motion.TRACK),
        Segment(20, peg_in_socket(-ENTRY), CLOSED, Motion.TRACK),
        Segment(50, peg_in_socket(INSERT_DEPTH), CLOSED, Motion.TRACK),
        # Hold the last command: tracking in contact makes the peg chatter on the pin.
        Segment(1, None, CLOSED),
    ]
    return left_segments, right_segments


_SEGMENTS = {"transfer-cube": transfer_cube_segments, "insertion": insertion_segments}


class ScriptedExpert:
    """Scripted actions for an :class:`~openpi_embodiment_aloha.sim.env.AlohaSimEnv` episode.

    Call :meth:`reset` after each ``env.reset``. :meth:`act` reads the objects' poses from
    ``env.physics``; the observation is accepted for a policy's signature and not used.
    An action is float64 [14]: ``[left joints 6, left gripper, right joints 6, right
    gripper]``, joints in radians, grippers normalized 0 (closed) .. 1 (open). After its
    script ends (within 300 steps) the expert keeps holding the last command.
    """

    def __init__(self, env: AlohaSimEnv):
        self._env = env
        model = env.physics.model.ptr
        self._left = Arm(model, "left")
        self._right = Arm(model, "right")
        self._ready = False

    def reset(self) -> None:
        """Start the task's script from the arms' current (just reset) state."""
        physics = self._env.physics
        left_segments, right_segments = _SEGMENTS[self._env.task](self._left, self._right)
        self._left.play(physics, left_segments)
        self._right.play(physics, right_segments)
        self._ready = True

    def act(self, observation: Any = None) -> np.ndarray:
        """The action [14] for the next step."""
        if not self._ready:
            raise RuntimeError("ScriptedExpert.act was called before reset()")
        physics = self._env.physics
        return np.concatenate([self._left.act(physics), self._right.act(physics)])
