"""Run the API on a uvicorn server in a background thread (tests, benchmarks, embedding)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

__all__ = ["serve_in_thread"]


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, certfile: str | None = None,
                    keyfile: str | None = None, timeout: float = 10.0) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields the base URL (``http(s)://host:port``, port picked if 0)."""
    config = uvicorn.Config(app, host=host, port=port, ssl_certfile=certfile, ssl_keyfile=keyfile,
                            log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=lambda: loop.run_until_complete(server.serve()), name="pushwise-api",
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"{'https' if certfile else 'http'}://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        loop.close()
