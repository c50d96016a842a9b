"""Visit the first frames of every episode more often than the rest.

In many tasks the start of an episode is where the policy must read the scene (where
the object lies) while the robot has not yet moved: nothing else tells episodes apart.
Those frames are few, so their share of the loss is small. :class:`EpisodeStartOversampling`
lists every frame once and the first ``frames`` of each episode ``repeats - 1`` more
times; the loader then shuffles that longer list like any dataset.
"""

from typing import Any, Protocol

import numpy as np

from openpi_core.errors import InputError


class EpisodicDataset(Protocol):
    """A dataset whose frames are stored episode after episode (``LeRobotDataset``)."""

    num_episodes: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...

    def episode_bounds(self, position: int) -> tuple[int, int]: ...


class EpisodeStartOversampling:
    """``dataset`` with the first ``frames`` frames of each episode listed ``repeats``
    times (every other frame once), in episode order.

    ``len()`` is the length of that list; item ``i`` is ``dataset[indices[i]]``.

    Raises:
        InputError: ``frames`` or ``repeats`` is not positive.
    """

    def __init__(self, dataset: EpisodicDataset, frames: int, repeats: int) -> None:
        if frames <= 0 or repeats <= 0:
            raise InputError(
                f"oversampling episode starts needs positive frames and repeats, got {frames} and {repeats}"
            )
        self.dataset = dataset
        pieces = []
        for episode in range(dataset.num_episodes):
            start, stop = dataset.episode_bounds(episode)
            head = np.arange(start, min(stop, start + frames))
            pieces += [head] * (repeats - 1) + [np.arange(start, stop)]
        self.indices = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.dataset[int(self.indices[index])]
