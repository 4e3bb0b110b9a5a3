"""Progress a user can see in a log: a tqdm bar on a terminal, else plain lines.

:func:`progress` wraps an iterable (or is used with ``update``): on a terminal it is a ``tqdm`` bar;
when stderr is not a terminal (a cluster job's log, a Snakemake ``log:`` file) it writes one line
``[desc] k/n unit (p %), r unit/s, ETA m:ss, at HH:MM:SS`` (the time of day) at least every
:data:`EVERY_S` seconds or every 5 %,
and a last line with the total time. :func:`phase` writes ``[desc] phase NAME`` lines (named steps
of a long job, e.g. the NN and Oracle searches of ``tomo evaluate``). :func:`heartbeat` writes
``[desc] working, m:ss, at HH:MM:SS`` every :data:`EVERY_S` seconds while a single long call runs (a cube's
resampling, figures, an export), so that a log never stays silent for longer.
"""

from __future__ import annotations

import sys
import threading
import time

from tqdm import tqdm

__all__ = ["progress", "phase", "heartbeat", "LineProgress", "EVERY_S"]

EVERY_S = 30.0


def _fmt(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class LineProgress:
    """tqdm's ``update``/``close``/``set_postfix`` as log lines (see the module docstring)."""

    def __init__(
        self,
        iterable=None,
        *,
        total=None,
        desc="",
        unit="it",
        initial=0,
        every_s=EVERY_S,
        every_frac=0.05,
        file=None,
        **_,
    ):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.n, self.start_n = desc, unit, initial, initial
        self.every_s, self.every_frac = every_s, every_frac
        self.file = file or sys.stderr
        self.t0 = self.last_t = time.monotonic()
        self.first: tuple[float, int] | None = None  # (time, count) at the first update: the rate's origin
        self.last_frac = 0.0
        self.postfix = ""
        self.closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set_postfix(self, **kw):
        self.postfix = " ".join(f"{k}={v}" for k, v in kw.items())

    def _rate(self, now: float) -> float:
        """Units per second since the first update (start-up before it, e.g. a resumed run's loading or a
        kernel's compilation, would inflate the ETA), over the whole time until a second one."""
        if self.first is not None and self.n > self.first[1] and now > self.first[0]:
            return (self.n - self.first[1]) / (now - self.first[0])
        dt = now - self.t0
        return (self.n - self.start_n) / dt if dt > 0 else 0.0

    def _line(self, final: bool = False) -> str:
        now = time.monotonic()
        dt = now - self.t0
        rate = self._rate(now)
        if self.total:
            head = f"{self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f} %)"
            left = (self.total - self.n) / rate if rate > 0 else float("inf")
            eta = "" if final else f", ETA {_fmt(left) if left != float('inf') else '?'}"
        else:
            head, eta = f"{self.n} {self.unit}", ""
        tail = f", {_fmt(dt)} in all" if final else ""
        post = f" {self.postfix}" if self.postfix else ""
        return f"[{self.desc}] {head}, {rate:.3g} {self.unit}/s{eta}{tail}, at {time.strftime('%H:%M:%S')}{post}"

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.monotonic()
        if self.first is None:
            self.first = (now, self.n)
        frac = self.n / self.total if self.total else 0.0
        if now - self.last_t >= self.every_s or (self.total and frac - self.last_frac >= self.every_frac - 1e-9):
            print(self._line(), file=self.file, flush=True)
            self.last_t, self.last_frac = now, frac

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            print(self._line(final=True), file=self.file, flush=True)


def progress(iterable=None, *, enabled: bool = True, **kw):
    """A tqdm bar on a terminal, :class:`LineProgress` lines otherwise; ``enabled=False``: silent."""
    if not enabled:
        return tqdm(iterable, disable=True, **kw)
    if sys.stderr.isatty():
        return tqdm(iterable, **kw)
    return LineProgress(iterable, **kw)


def phase(desc: str, name: str, file=None) -> None:
    """One line naming a phase of a long job (with the time of day)."""
    print(f"[{desc}] {time.strftime('%H:%M:%S')} phase {name}", file=file or sys.stderr, flush=True)


class heartbeat:  # noqa: N801 - used as a context manager, like a function
    """While the block runs, a line ``[desc] working, m:ss`` every ``every_s`` seconds on stderr when
    it is not a terminal (a terminal shows the process's own output)."""

    def __init__(self, desc: str, every_s: float = EVERY_S, file=None, force: bool = False):
        self.desc, self.every_s, self.file = desc, every_s, file or sys.stderr
        self.enabled = force or not self.file.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(self.every_s):
            print(
                f"[{self.desc}] working, {_fmt(time.monotonic() - t0)}, at {time.strftime('%H:%M:%S')}",
                file=self.file,
                flush=True,
            )

    def __enter__(self):
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.enabled:
            self._thread.join(timeout=1.0)
