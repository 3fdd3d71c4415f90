"""Progress of long work, wherever the output goes.

On a terminal: a tqdm bar. When stderr is a file or a pipe (a cluster job's log, `nohup`,
`2> log`): a plain log line every ``interval`` seconds ("dense Q=256: 1200/50000 (2.4%),
45.1 it/s, ETA 18m02s") and one at the end, so a log never stays empty for minutes.
``enabled=False`` (``--no-progress``) turns both off.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("vgg.progress")

DEFAULT_INTERVAL = 30.0


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


class Progress:
    """``Progress(total, desc, unit)``; ``update(n)``, ``set_postfix(**kv)``, ``close()``;
    also a context manager. ``tty=None`` asks whether stderr is a terminal."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", *,
                 enabled: bool = True, initial: int = 0, tty: bool | None = None,
                 interval: float = DEFAULT_INTERVAL, leave: bool = False) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.enabled = enabled
        self.n = initial
        self._start_n = initial
        self._postfix: dict[str, Any] = {}
        self._bar = None
        self._t0 = self._last = time.monotonic()
        self.interval = interval
        if tty is None:
            tty = sys.stderr.isatty()
        if enabled and tty:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit,
                             dynamic_ncols=True, leave=leave)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def set_postfix(self, **kv: Any) -> None:
        self._postfix = kv
        if self._bar is not None:
            self._bar.set_postfix(**kv)

    def set_description(self, desc: str) -> None:
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description(desc)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and time.monotonic() - self._last >= self.interval:
            self._log()

    def line(self) -> str:
        """The plain progress line for the current state."""
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        rate = (self.n - self._start_n) / elapsed
        if self.total:
            text = f"{self.desc}: {self.n}/{self.total} ({100.0 * self.n / self.total:.1f}%)"
        else:
            text = f"{self.desc}: {self.n}"
        text += f", {rate:.1f} {self.unit}/s"
        if self.total and rate > 0 and self.n < self.total:
            text += f", ETA {_fmt_time((self.total - self.n) / rate)}"
        elif self.total and self.n >= self.total:
            text += f", {_fmt_time(elapsed)}"
        if self._postfix:
            text += "  " + " ".join(f"{k}={v}" for k, v in self._postfix.items())
        return text

    def _log(self) -> None:
        self._last = time.monotonic()
        log.info("%s", self.line())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self.n > self._start_n and \
                time.monotonic() - self._t0 >= self.interval:
            self._log()  # a last line for work long enough to have logged before
        self.enabled = False
