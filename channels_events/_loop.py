"""The hub's event loop: the ASGI server's, or a thread of its own, and running code there.

Every piece of the hub that touches the channel layer runs on one loop per
process. In an ASGI server that is the server's loop (bound on first use);
elsewhere (a management command, a task worker) it is a daemon thread with a
loop of its own. :class:`LoopRunner` owns that choice and is the one place
that answers "am I on the hub's loop?" and "run this there".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LoopRunner", "running_loop", "wait_set"]

T = TypeVar("T")


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; return whether it was set.

    Unlike ``asyncio.wait_for`` on Python 3.11, a cancellation that lands as
    the event is set is never swallowed, so a loop built on this stops when
    its task is cancelled.
    """
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _pending = await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
    return bool(done)


def running_loop() -> asyncio.AbstractEventLoop | None:
    """Return the event loop running on this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class LoopRunner:
    """Own the loop the hub runs on and run callables and coroutines on it from anywhere.

    ``on_bind`` is called on the loop each time a new loop is bound, so that
    its owner can start its tasks there.
    """

    def __init__(self, on_bind: Callable[[], None], name: str = "channels-events-hub") -> None:
        self._on_bind = on_bind
        self._name = name
        self._lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        #: The thread of a loop of our own, or None when the loop is a server's.
        self.thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        """Return whether a loop is bound and not closed."""
        loop = self.loop
        return loop is not None and not loop.is_closed()

    def is_current(self) -> bool:
        """Return whether the caller runs on the hub's loop."""
        loop = self.loop
        return loop is not None and running_loop() is loop

    def bind_running(self) -> None:
        """Bind the running loop (an ASGI server's) unless a live loop is bound already."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.alive:
                return
            self.loop = loop
            self.thread = None
        self._on_bind()

    def start_thread(self) -> None:
        """Run a loop on a thread of its own, unless a live loop is bound; return once it runs."""
        with self._lock:
            if self.alive:
                return
            ready = threading.Event()
            loop = asyncio.new_event_loop()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                try:
                    loop.run_forever()
                finally:
                    loop.close()

            thread = threading.Thread(target=run, name=self._name, daemon=True)
            thread.start()
            ready.wait()
            self.loop = loop
            self.thread = thread
            loop.call_soon_threadsafe(self._on_bind)

    def call_soon(self, func: Callable[..., Any], *args: Any) -> bool:
        """Schedule ``func(*args)`` on the hub's loop from any thread; return whether it was.

        On the hub's loop itself the call is scheduled, not made, as
        ``call_soon`` would.
        """
        loop = self.loop
        if loop is None or loop.is_closed():
            return False
        if running_loop() is loop:
            loop.call_soon(func, *args)
            return True
        try:
            loop.call_soon_threadsafe(func, *args)
        except RuntimeError:  # closed meanwhile
            return False
        return True

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T] | None:
        """Run ``coroutine`` on the hub's loop from another thread; None if there is no loop."""
        loop = self.loop
        if loop is None or loop.is_closed():
            coroutine.close()
            return None
        try:
            return asyncio.run_coroutine_threadsafe(coroutine, loop)
        except RuntimeError:
            coroutine.close()
            return None

    async def run(self, make: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Await ``make()`` on the hub's loop, from that loop or from any other loop."""
        if self.is_current():
            return await asyncio.wait_for(make(), timeout)

        async def there() -> T:
            return await make()

        future = self.submit(there())
        if future is None:
            raise RuntimeError("The hub's event loop is not running.")
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    async def stop_thread(self, timeout: float) -> None:
        """End the hub's own thread, if it has one, and forget the loop."""
        loop, thread = self.loop, self.thread
        if thread is not None and loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
            await asyncio.get_running_loop().run_in_executor(None, thread.join, timeout)
        with self._lock:
            self.loop = None
            self.thread = None

    def forget(self) -> None:
        """Forget the loop and thread without touching them (a forked child has neither)."""
        self._lock = threading.Lock()
        self.loop = None
        self.thread = None
