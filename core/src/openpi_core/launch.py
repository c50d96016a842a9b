"""Load a policy from the options every command shares, and serve it on this computer.

``pi run serve``, a plugin's ``pi run eval <sim>`` and ``pi demo`` name the policy the
same way: the bundled demo checkpoint (``demo``), a preset (``config_name``, optionally
with its own ``checkpoint``), or a ``checkpoint`` with the ``embodiment`` it drives.
:func:`load_policy` turns those options into a :class:`~openpi_core.policy.Policy`;
:func:`serve_locally` serves one on a loopback port in this process and hands back a
connected websocket client, as a robot would see it.

The demo checkpoint (:data:`DEMO_CHECKPOINT`, see its README) is a tiny π0 with random
weights: it shows the serving path without a download, and its actions are meaningless.
"""

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from openpi_core.errors import InputError

logger = logging.getLogger(__name__)

DEMO_CHECKPOINT = Path(__file__).resolve().parent / "demo_checkpoint"
"""The bundled tiny π0 checkpoint in the native format (random weights)."""

DEMO_EMBODIMENT = "aloha"
"""The robot whose observations the demo checkpoint answers."""

DEMO_PROMPT = "Transfer cube"
"""What the demo policy uses when an observation has no prompt (openpi's ALOHA-sim client sends none)."""

DEMO_WARNING = "serving the demo checkpoint: RANDOM WEIGHTS, its actions are meaningless"
"""What :func:`load_policy` announces before it loads the demo checkpoint."""


class PolicySourceError(InputError):
    """The options name no policy, or ``demo`` comes with another source of weights."""


def demo_policy(
    backend: str | None = None, *, default_prompt: str | None = None, dtype: str | None = None, num_steps: int = 10
) -> Any:
    """The demo checkpoint as an ALOHA :class:`~openpi_core.policy.Policy`.

    ``default_prompt`` defaults to :data:`DEMO_PROMPT`, ``backend`` to
    :func:`openpi_core.policy.default_backend`, ``dtype`` to the checkpoint's float32.
    """
    from openpi_core.policy import create_policy

    return create_policy(
        checkpoint=DEMO_CHECKPOINT,
        embodiment=DEMO_EMBODIMENT,
        backend=backend,
        dtype=dtype,
        num_steps=num_steps,
        default_prompt=default_prompt or DEMO_PROMPT,
    )


def load_policy(
    *,
    config_name: str | None = None,
    checkpoint: str | None = None,
    embodiment: str | None = None,
    backend: str | None = None,
    dtype: str | None = None,
    num_steps: int | None = None,
    default_prompt: str | None = None,
    norm_stats: str | None = None,
    fast_tokenizer: str | None = None,
    demo: bool = False,
    announce: Callable[[str], object] | None = None,
) -> Any:
    """The policy these options name: ``demo``, a preset, or a checkpoint and its robot.

    The backend is looked up first, so a missing one is reported before anything is
    announced or read.

    Args:
        config_name, checkpoint, embodiment, backend, dtype, num_steps, default_prompt,
            norm_stats, fast_tokenizer: as :func:`openpi_core.policy.create_policy` takes them.
        demo: load :data:`DEMO_CHECKPOINT` with the ALOHA embodiment; no other source
            of weights may be given.
        announce: told :data:`DEMO_WARNING` before the demo checkpoint loads (default:
            a logged warning).

    Raises:
        PolicySourceError: the options name no policy, or ``demo`` comes with another source.
        UnknownNameError: the backend (or preset, embodiment) is not installed.
        OpenpiError: :func:`openpi_core.policy.create_policy` could not assemble the policy.
    """
    from openpi_core.plugins import get_backend
    from openpi_core.policy import create_policy, default_backend

    if demo:
        given = {
            "--config": config_name,
            "--checkpoint": checkpoint,
            "--embodiment": embodiment,
            "--norm-stats": norm_stats,
            "--fast-tokenizer": fast_tokenizer,
        }
        extra = [flag for flag, value in given.items() if value]
        if extra:
            raise PolicySourceError(f"--demo serves the bundled checkpoint; drop {', '.join(extra)}")
    elif config_name is None and (checkpoint is None or embodiment is None):
        raise PolicySourceError(
            "say what to serve: --config NAME [--checkpoint PATH], --checkpoint PATH --embodiment NAME, or --demo"
        )
    backend = get_backend(backend or default_backend()).name
    if demo:
        (announce or logger.warning)(DEMO_WARNING)
        return demo_policy(backend, default_prompt=default_prompt, dtype=dtype, num_steps=num_steps or 10)
    return create_policy(
        config_name,
        checkpoint=checkpoint,
        embodiment=embodiment,
        backend=backend,
        dtype=dtype,
        num_steps=num_steps,
        default_prompt=default_prompt,
        norm_stats=norm_stats,
        fast_tokenizer=fast_tokenizer,
    )


@contextlib.contextmanager
def serve_locally(policy: Any, *, wait_timeout_s: float = 60.0) -> Iterator[Any]:
    """Serve ``policy`` on a free loopback port in this process; yield a connected
    :class:`~openpi_core.client.WebsocketClientPolicy`.

    The server is warmed up before the client connects, and stopped gracefully when
    the ``with`` block ends. No API key is asked for: only this computer can connect.
    """
    from openpi_core.client.websocket_client import WebsocketClientPolicy
    from openpi_core.serving.server import BackgroundServer, ServerConfig

    with (
        BackgroundServer(policy, ServerConfig(host="127.0.0.1", port=0, api_key=None)) as background,
        WebsocketClientPolicy("127.0.0.1", background.server.port, wait_timeout_s=wait_timeout_s) as client,
    ):
        yield client
