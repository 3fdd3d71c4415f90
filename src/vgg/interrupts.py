"""Ctrl-C that is never lost.

Python turns SIGINT into a ``KeyboardInterrupt`` raised wherever the main thread is. When
that is inside a ``__del__`` method or a weakref finaliser (a DataLoader iterator stopping
its worker processes, the finalisers of its queues) the exception is printed as
"Exception ignored" and dropped, and the command ran on to the end with exit status 0
(issue 24: once in five Ctrl-C during `vgg features --workers 2`). :class:`CtrlC` keeps
Python's behaviour (raise at once) and also remembers the signal, so that
:meth:`CtrlC.check`, called at safe points, raises it again if it was swallowed.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType


class CtrlC:
    """A context in which a SIGINT raises ``KeyboardInterrupt`` as usual and is also
    remembered (``hit``). Installed only on the main thread over Python's default
    handler; inside another :class:`CtrlC` it shares that one's memory; under any other
    handler (the trainer's graceful stop) it does nothing and never raises."""

    def __init__(self) -> None:
        self.hit = False
        self._owner: CtrlC | None = None
        self._installed = False

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is not threading.main_thread():
            return self
        current = signal.getsignal(signal.SIGINT)
        outer = getattr(current, "__self__", None)
        if isinstance(outer, CtrlC):
            self._owner = outer
        elif current is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.hit = True
        raise KeyboardInterrupt

    @property
    def interrupted(self) -> bool:
        """Whether a SIGINT arrived (here or in the enclosing CtrlC)."""
        return (self._owner or self).hit

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a SIGINT arrived, even one that was swallowed."""
        if self.interrupted:
            raise KeyboardInterrupt

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self._installed = False
