"""Run a simulator (any ASGI app) with uvicorn on a real loopback socket in a background thread.

::

    sim = GhlSimulator(seed)
    with SimulatorServer(sim) as server:       # or SimulatorServer(create_ghl_app(sim))
        httpx.get(f"{server.base_url}/calendars/events", ...)

The socket is bound before the thread starts (port 0 = a free port chosen by the OS), so
``base_url`` is known immediately; ``start()`` returns once uvicorn accepts connections (well
under a second). ``stop()`` ends injected stalls early, stops uvicorn and joins the thread.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from appt_pipeline.sandbox.base import SimulatorBase


class SimulatorServer:
    """A uvicorn server for one ASGI app on ``host:port`` (default 127.0.0.1, free port).

    ``target``: a simulator object (its ``create_app()`` is served and its injected delays are cut
    short on stop) or any ASGI app. ``base_url`` is ``http://127.0.0.1:<port>``.
    """

    def __init__(self, target: Any, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning"):
        self.simulator: SimulatorBase | None = target if isinstance(target, SimulatorBase) else None
        self.app = target.create_app() if self.simulator is not None else target
        self.host = host
        self.requested_port = port
        self.log_level = log_level
        self.port: int | None = None
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> SimulatorServer:
        if self.running:
            return self
        if self.simulator is not None:
            self.simulator.stopper.stopping.clear()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.requested_port))
        sock.listen(1024)
        sock.setblocking(False)
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level=self.log_level,
            access_log=False,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"simulator-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("simulator server failed to start")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("simulator server did not start in time")
            time.sleep(0.002)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.simulator is not None:
            self.simulator.stopper.stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
        self._thread = self._server = self._socket = None
        if self.simulator is not None:
            self.simulator.stopper.stopping.clear()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


__all__ = ["SimulatorServer"]
