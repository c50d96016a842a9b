"""Training data: LeRobot datasets (read and write), the batch loader, norm stats,
image augmentation and converters from raw recordings.

Importing this package needs numpy only; pyarrow and PyAV (``pip install
'openpi-core[data]'``) are imported when a dataset is first read or written.

>>> ds = LeRobotDataset(root, action_horizon=50)            # doctest: +SKIP
>>> loader = create_data_loader(ds, transforms, batch_size=32, seed=0)  # doctest: +SKIP
>>> batch = next(iter(loader))                              # doctest: +SKIP
"""

from openpi_core.data.augment import augment_batch, augment_images
from openpi_core.data.lerobot import EpisodeInfo, LeRobotDataset
from openpi_core.data.loader import DataLoader, collate, create_data_loader
from openpi_core.data.norm_stats import compute_norm_stats
from openpi_core.data.oversample import EpisodeStartOversampling
from openpi_core.data.writer import LeRobotWriter, VideoSettings

__all__ = [
    "DataLoader",
    "EpisodeInfo",
    "EpisodeStartOversampling",
    "LeRobotDataset",
    "LeRobotWriter",
    "VideoSettings",
    "augment_batch",
    "augment_images",
    "collate",
    "compute_norm_stats",
    "create_data_loader",
]
