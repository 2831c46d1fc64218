"""Start or join Ray for one search, and leave nothing behind."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

from peftsearch.errors import UserError

__all__ = ["RaySession", "ray_session"]

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


class _NotMainThreadNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "not the main thread" not in record.getMessage()


_NOT_MAIN_THREAD_NOTE = _NotMainThreadNote()


class RaySession:
    """Ray for one search. ``start`` brings it up in the background, so that a local Ray
    starts while the driver prepares the data; ``wait`` blocks until it is up (and raises
    what starting it raised); ``close`` shuts it down and removes what it left.

    ``""``/``"local"`` starts a private local Ray; anything else joins that cluster. A
    local Ray gets its session files in a fresh temp folder, removed afterwards, and
    token auth with a per-run token passed by environment, so nothing lands in
    ``~/.ray``. A Ray the caller already started (``ray.is_initialized()``) is reused
    and left running.

    The starting thread lives until ``close``: Ray's daemons get the signal to die when
    the thread that spawned them ends (``PR_SET_PDEATHSIG``).
    """

    def __init__(self, address: str = "") -> None:
        self.address = address
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._owned = False  # this session initialised Ray (and shuts it down)
        self._temp: str | None = None
        self._saved: dict[str, str | None] = {}
        # what ``start``'s ``warm`` returned (the trial workers it started), else None
        self.workers: list[Any] | None = None

    def start(self, warm: Callable[[], list[Any]] | None = None) -> RaySession:
        """Bring Ray up in the background; then ``warm()``, in the same thread, starts
        what should come up beside it (the trial workers: ``start_workers``). A failing
        ``warm`` only leaves ``workers`` None: the executor starts its own."""
        self._thread = threading.Thread(
            target=self._run, args=(warm,), name="ray-start", daemon=True
        )
        self._thread.start()
        return self

    def _run(self, warm: Callable[[], list[Any]] | None) -> None:
        try:
            self._init()
            if warm is not None:
                with contextlib.suppress(Exception):
                    self.workers = warm()
        except BaseException as error:  # handed to wait()
            self._error = error
        finally:
            self._ready.set()
        self._stop.wait()

    def _init(self) -> None:
        import ray

        if ray.is_initialized():
            return
        # Started off the main thread on purpose; the driver handles its own signals.
        logging.getLogger("ray._private.worker").addFilter(_NOT_MAIN_THREAD_NOTE)
        quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
        if self.address in ("", "local"):
            self._temp = _session_folder()
            self._saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
            if self._saved["RAY_AUTH_MODE"] is None:
                os.environ["RAY_AUTH_MODE"] = "token"
                os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
                _reload_auth_settings()
            self._owned = True
            ray.init(include_dashboard=False, _temp_dir=self._temp, **quiet)  # type: ignore[arg-type]
            return
        self._owned = True
        try:
            ray.init(address=self.address, **quiet)  # type: ignore[arg-type]
        except Exception as error:
            raise UserError(
                f"cannot join the Ray cluster at {self.address!r}: {error}",
                where="resources.ray_address",
            ) from None

    def wait(self) -> None:
        if self._thread is None:
            self.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Idempotent; also after a failed start."""
        if self._thread is None:
            return
        self._ready.wait()
        if self._owned:
            import ray

            ray.shutdown()
            self._owned = False
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None
        if self._saved:
            for key, value in self._saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self._saved = {}
            _reload_auth_settings()
        self._stop.set()
        self._thread.join()
        self._thread = None


@contextlib.contextmanager
def ray_session(address: str = "", session: RaySession | None = None) -> Iterator[None]:
    """Ray for the duration of the block (see ``RaySession``); ``session``: one started
    earlier, which this block then owns and closes."""
    session = session or RaySession(address)
    try:
        session.wait()
        yield
    finally:
        session.close()
