"""Failing fast when pretrained weights cannot be downloaded.

huggingface_hub (timm's weight source) retries an unreachable host five times
with back-off, twice per model: almost a minute before the error. A quick DNS
probe decides instead; when the hub cannot be resolved, its offline mode is
switched on for the one call, so locally cached weights still load and
missing ones fail at once.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

__all__ = ["host_resolves", "hub_offline_if_unreachable"]

HUB_HOST = "huggingface.co"


def host_resolves(host: str = HUB_HOST, timeout: float = 3.0) -> bool:
    """Whether ``host`` resolves within ``timeout`` s (getaddrinfo has no timeout of its own)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.getaddrinfo(host, 443)
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


@contextlib.contextmanager
def hub_offline_if_unreachable() -> Iterator[None]:
    """Within the block, the Hugging Face hub is offline if its host does not resolve."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    if constants.HF_HUB_OFFLINE or host_resolves():
        yield
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False
