"""What the service binds to an event loop, and when it may follow a new one.

An asyncio lock, queue or task belongs to one loop. The service is usually driven from one
(uvicorn's, or a `with TestClient(app)`'s), but a TestClient used without `with` runs each
request in a loop of its own, and an object bound to the first answered every later
request 500. Each such object is made again for the running loop once its own loop has
ended, or has stopped with nothing left in it; two loops at once are refused instead.
"""

from __future__ import annotations

import asyncio


def needs_new_loop(bound: asyncio.AbstractEventLoop | None, idle: bool, what: str) -> bool:
    """Whether `what`, bound to the loop `bound` (None: to none yet), must be made again for
    the running loop: when it is bound to none, or to a loop that has closed, or that has
    stopped while `what` is `idle` (a stopped loop that still holds it may resume).

    Two loops that run at once (two threads each driving the app) would each need their
    own, and then nothing excludes the other's writers: that is a RuntimeError, which the
    service answers 500 and logs, never two locks that each look held."""
    running = asyncio.get_running_loop()
    if bound is running:
        return False
    if bound is None or bound.is_closed() or (idle and not bound.is_running()):
        return True
    raise RuntimeError(f"{what} is in use by another event loop that is still running: drive one app "
                       "from one event loop at a time (e.g. one TestClient, or one server)")
