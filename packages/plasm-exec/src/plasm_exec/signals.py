"""SIGINT and SIGTERM for the plasm-exec commands: stop the guest, never raise inside wasmtime.

Python runs signal handlers in the main thread, between bytecodes. While a guest
runs, that Python may be a callback wasmtime calls through ctypes (a host
function), where an exception cannot unwind and is lost, or the loop polling the
guest's call future, where a ``KeyboardInterrupt`` raised half-way through a
wasmtime-py call can corrupt its bookkeeping. So the handler installed here
never raises while wasmtime is in use:

- inside a ``critical()`` section (compiling, running a guest) it only records
  the signal, sets ``event`` (which every run polls at each yield, every tick or
  fuel slice, and then stops with ``interrupted``) and calls the registered wake-ups (the stdin pump
  closes the guest's stdin, so a guest blocked reading it sees EOF);
- when the section is left, ``Stop`` is raised from plain Python code;
- outside a section it raises ``Stop`` at once.

``Stop`` is a ``KeyboardInterrupt`` carrying the signal; ``cli.main`` turns it
into exit status 128 + signal (130 for SIGINT, 143 for SIGTERM). A second signal
ends the process at once with that status, as does a guest that has not
stopped ``GRACE_S`` seconds after the first (a last resort: a guest asleep in
``poll_oneoff`` is woken by ``event``, see ``pollfence``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")  # for annotations only

SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_S = 2.0
_POLL_S = 0.05


class Stop(KeyboardInterrupt):
    """A signal asked plasm-exec to stop; the guest (if any) has been stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class SignalGuard:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self.at = 0.0
        self._depth = 0
        self._wakeups: list[Callable[[], None]] = []
        self._old: dict[int, Any] = {}

    def install(self) -> SignalGuard:
        """Take over SIGINT/SIGTERM (only possible from the main thread)."""
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()

    def wake_on_signal(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` (from the handler: keep it tiny) when the first signal arrives."""
        self._wakeups.append(fn)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None:
            hard_exit(self.signum, "a second signal")
        self.signum, self.at = signum, time.monotonic()
        self.event.set()
        for fn in self._wakeups:
            with contextlib.suppress(Exception):
                fn()
        if self._depth == 0:
            raise Stop(signum)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A section that calls into wasmtime: signals are deferred to its end."""
        self._depth += 1
        try:
            yield
        except BaseException as e:
            self._depth -= 1
            if self._depth == 0 and self.signum is not None and not isinstance(e, Stop):
                raise Stop(self.signum) from e
            raise
        self._depth -= 1
        if self._depth == 0 and self.signum is not None:
            raise Stop(self.signum)

    def in_worker(self, fn: Callable[[], T], name: str = "plasm-guest") -> T:
        """Run ``fn`` in a thread that never receives the signals; wait for it here.

        Threads it starts (wasmtime's own included) inherit the blocked mask, so
        the signals reach only this (main) thread, which is never inside wasmtime.
        """
        box: dict[str, Any] = {}
        done = threading.Event()

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as e:  # handed to the waiting thread
                box["error"] = e
            finally:
                done.set()

        with self.critical():
            old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
            try:
                t = threading.Thread(target=target, name=name, daemon=True)
                t.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
            while not done.wait(_POLL_S):
                if self.signum is not None and time.monotonic() - self.at > GRACE_S:
                    hard_exit(self.signum, f"the guest did not stop within {GRACE_S} s")
            t.join()
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]


def hard_exit(signum: int, why: str) -> None:
    """Leave now with 128 + signum, after one log line (no receipt, no cleanup)."""
    from phase_core import log
    with contextlib.suppress(Exception):
        log.get().warning("plasm.interrupted", signal=signal.Signals(signum).name,
                          message=f"stopping at once: {why}")
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os._exit(128 + signum)
