"""A WSGI app served for real on 127.0.0.1 (OS-assigned port) in a thread, for socket-level tests."""
from __future__ import annotations

import threading
from contextlib import contextmanager

from werkzeug.serving import make_server


@contextmanager
def serve(app):
    """Yields the base URL; shuts the server down on exit."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server started in another process)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(base: str, proc, log, within_s: float = 120) -> None:
    """Poll `base`/healthz until it answers 200; AssertionError with the server's log if `proc` exits or time runs out."""
    import time

    import requests

    deadline = time.monotonic() + within_s
    while True:
        try:
            if requests.get(base + "/healthz", timeout=5).ok:
                return
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            raise AssertionError(f"the server at {base} did not come up:\n{log.read()[-3000:]}")
        time.sleep(0.3)
