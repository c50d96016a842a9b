"""The ALOHA embodiment: bimanual 14-dim joint state and actions, up to four cameras."""

from openpi_embodiment_aloha.aloha import AlohaEmbodiment

__all__ = ["AlohaEmbodiment"]
