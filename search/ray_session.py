"""Start or join Ray for one search, and leave nothing behind."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator

from peftsearch.errors import UserError

__all__ = ["ray_session"]

# Ray puts Unix sockets at <temp>/session_<date>_<id>/sockets/plasma_store, and such a
# path may not exceed 107 bytes; this much of it is Ray's own.
_RAY_SOCKET_SUFFIX = 66
_SOCKET_PATH_MAX = 107


def _session_folder() -> str:
    """A fresh folder for Ray's session files: in the user's temp dir, or in /tmp when
    that path is too deep for Ray's sockets."""
    temp = tempfile.mkdtemp(prefix="psr-")
    if len(temp.encode()) + _RAY_SOCKET_SUFFIX > _SOCKET_PATH_MAX:
        os.rmdir(temp)
        temp = tempfile.mkdtemp(prefix="psr-", dir="/tmp")
    return temp


def _reload_auth_settings() -> None:
    """Ray reads RAY_AUTH_* when it is imported; make it read them again (Ray >= 2.50)."""
    try:
        from ray._raylet import (  # type: ignore[attr-defined]
            AuthenticationTokenLoader,
            Config,
        )
    except ImportError:
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def ray_session(address: str = "") -> Iterator[None]:
    """``""``/``"local"`` starts a private local Ray; anything else joins that cluster.

    A local Ray gets its session files in a fresh temp folder, removed afterwards, and
    token auth with a per-run token passed by environment, so nothing lands in
    ``~/.ray``. A Ray the caller already started (``ray.is_initialized()``) is reused
    and left running.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address in ("", "local"):
        temp = _session_folder()
        saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
        if saved["RAY_AUTH_MODE"] is None:
            os.environ["RAY_AUTH_MODE"] = "token"
            os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
            _reload_auth_settings()
        try:
            ray.init(include_dashboard=False, _temp_dir=temp, **quiet)  # type: ignore[arg-type]
            yield
        finally:
            ray.shutdown()
            shutil.rmtree(temp, ignore_errors=True)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            _reload_auth_settings()
        return
    try:
        ray.init(address=address, **quiet)  # type: ignore[arg-type]
    except Exception as error:
        raise UserError(
            f"cannot join the Ray cluster at {address!r}: {error}", where="resources.ray_address"
        ) from None
    try:
        yield
    finally:
        ray.shutdown()
