"""Progress of long loops: a tqdm bar on a terminal, plain lines in a log file.

Every Snakemake rule sends its job's stderr to ``logs/<profile>/...log`` (README "What the DAG builds"); a
carriage-return bar there turns into one unreadable line of redraws. So :func:`progress` draws tqdm only
when the stream is a terminal, and otherwise writes one plain line every ``every_pct`` percent or
``every_s`` seconds, whichever comes first, plus one at the end::

    cam full s0: step 60/120 (50%), 12.3 s, eta 12.3 s, loss 0.4321

``crucible --quiet`` (and each verb's own ``--quiet``) turns every report off through :func:`silenced`.
Both kinds of reporter, and the silent one, offer the same small interface: iterate, ``update(n)``,
``set_postfix(**values)``, ``close()``, and use as a context manager.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

__all__ = ["progress", "silenced", "PlainProgress"]

EVERY_PCT = 10  # a line per 10% of the work ...
EVERY_S = 10.0  # ... or per 10 s, whichever comes first: a slow step still shows the job is alive

_silenced = False  # set by `silenced()`: crucible --quiet


@contextmanager
def silenced(on: bool = True) -> Iterator[None]:
    """Within the block, every :func:`progress` is silent (when ``on``); the previous state comes back after."""
    global _silenced
    before, _silenced = _silenced, _silenced or on
    try:
        yield
    finally:
        _silenced = before


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", enabled: bool = True, *,
             initial: int = 0, unit: str = "step", stream: IO[str] | None = None, every_pct: int = EVERY_PCT,
             every_s: float = EVERY_S):
    """Report the progress of ``iterable`` (or of ``update`` calls when it is None) on ``stream`` (stderr).

    ``total`` defaults to ``len(iterable)``; ``initial`` is the count already done (a resumed run) and
    counts towards ``total``. Returns a tqdm bar when ``stream`` is a terminal, a :class:`PlainProgress`
    otherwise, and a silent reporter when ``enabled`` is false or inside :func:`silenced`.
    """
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = initial + len(iterable)
    if not enabled or _silenced:
        return _Silent(iterable)
    stream = sys.stderr if stream is None else stream  # looked up now: pytest and callers may swap stderr
    if _is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, initial=initial, unit=unit, file=stream, dynamic_ncols=True)
    return PlainProgress(iterable, total, desc, initial=initial, unit=unit, stream=stream, every_pct=every_pct,
                         every_s=every_s)


class _Silent:
    """The reporter interface, reporting nothing."""

    def __init__(self, iterable: Iterable | None = None):
        self.iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(self.iterable if self.iterable is not None else ())

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PlainProgress(_Silent):
    """Plain progress lines (no carriage returns) for log files; see the module docstring for the format.

    A line is written when the count enters a new ``every_pct`` band of ``total``, when ``every_s`` seconds
    passed since the last line, and at ``close`` unless the last line already showed the final count.
    Without a total only the time rule applies. ``clock`` returns seconds (injectable for tests).
    """

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str = "", *, initial: int = 0,
                 unit: str = "step", stream: IO[str] | None = None, every_pct: int = EVERY_PCT,
                 every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic):
        if every_pct <= 0 or every_s <= 0:
            raise ValueError(f"progress: every_pct ({every_pct}) and every_s ({every_s}) must be positive")
        super().__init__(iterable)
        self.total = total if total and total > 0 else None
        self.desc, self.unit, self.n, self.initial = desc, unit, initial, initial
        self.stream = sys.stderr if stream is None else stream
        self.every_pct, self.every_s, self.clock = every_pct, every_s, clock
        self.postfix = ""
        self.start = self.last_time = clock()
        self.last_n = initial  # count shown by the last line (the starting count needs no line)
        self.closed = False

    def __iter__(self) -> Iterator:
        for item in super().__iter__():
            yield item  # the count goes up once the caller's body for `item` is done, as tqdm's does
            self.update()
        self.close()

    def _band(self, n: int) -> int:
        return n * 100 // (self.total * self.every_pct)

    def update(self, n: int = 1) -> None:
        before, self.n = self.n, self.n + n
        now = self.clock()
        if (self.total is not None and (self._band(self.n) > self._band(before) or self.n >= self.total)) \
                or now - self.last_time >= self.every_s:
            self._write(now)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def line(self, now: float) -> str:
        elapsed = now - self.start
        head = f"{self.desc}: " if self.desc else ""
        if self.total is None:
            parts = [f"{head}{self.unit} {self.n}", f"{elapsed:.1f} s"]
        else:
            parts = [f"{head}{self.unit} {self.n}/{self.total} ({100 * self.n / self.total:.0f}%)",
                     f"{elapsed:.1f} s"]
            done = self.n - self.initial
            if 0 < done and self.n < self.total:
                parts.append(f"eta {elapsed / done * (self.total - self.n):.1f} s")
        return ", ".join(parts + ([self.postfix] if self.postfix else []))

    def _write(self, now: float) -> None:
        print(self.line(now), file=self.stream, flush=True)  # flushed: `tail -f logs/...` sees it at once
        self.last_time, self.last_n = now, self.n

    def close(self) -> None:
        if not self.closed and self.n != self.last_n:
            self._write(self.clock())
        self.closed = True
