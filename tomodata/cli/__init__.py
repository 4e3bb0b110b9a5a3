"""The dataset's commands of ``tomo`` (thin wrappers over the package's functions): :func:`register`
adds them to the ``tomo`` parser that :mod:`model.cli` builds (the model depends on the dataset,
never the reverse; the ``tomo`` entry point is :func:`model.cli.main`).

    tomo phantom OUT.npy --species 3            a procedural skull volume (+ previews)
    tomo render VOLUME.npy -o DIR --views 16    x-rays of a volume (+ PNG previews)
    tomo build-demo -o DIR                      a small dataset store of procedural species
    tomo validate STORE                         check a dataset store; exit 1 if it is not complete
    tomo demo-movies -o DIR                     procedural species as slice movies + manifest.tsv
    tomo manifest-folder DIR -o M.tsv ...       a manifest of every scan in a folder, seeded splits
    tomo fetch MANIFEST -d DEST                 download/copy the sources a manifest names
    tomo align SCAN -o OUT.nii.gz --reference R  rotate a scan into the canonical pose (+ record)
    tomo align-sheet A.nii.gz ... -o SHEET.png   projections of aligned volumes, one PNG
    tomo cube SCAN -o CUBE.npz --spacing z,y,x  read a scan, resample it to the 128³ cube
    tomo store-create STORE --manifest M --cubes C...   an empty store for these specimens
    tomo store-settings -o FILE.json --views N ...       the settings of a store, as JSON
    tomo render-species STORE --cube C          render one species into its own shards
    tomo previews STORE --species A -o DIR      a species' preview PNGs, from the store
    tomo finalize STORE                         validate all species, record completion
    tomo export STORE OUT                       publishable folder: card, Croissant, SHA256SUMS, recipe
    tomo cv-view STORE --folds K --fold k -o V  a read-only view with fold k's splits (cross-validation)
    tomo bench render|cube|rules                the renderer, the resampling, a workflow run's rules

Every subcommand has ``--help``. Progress bars appear only when stderr is a terminal.

Modules: :mod:`.parsers` and :mod:`.store_parsers` (the options, one ``_add_<command>`` each; option
types in :mod:`.options`), the commands by concern
(:mod:`.volumes`, :mod:`.scans`, :mod:`.stores`, :mod:`.benchmarks`). Each command imports only
what it runs (zarr, OpenCV, SimpleITK, ... cost seconds of start-up together); the numerics live in
the package's modules (e.g. :mod:`tomodata.previews`, :mod:`tomodata.render_jobs`,
:mod:`tomodata.species_table`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import signal
import sys
import threading
import warnings
from typing import NoReturn

from ..progress import heartbeat
from .parsers import non_negative_int, positive_float, positive_int, register

__all__ = ["register", "run", "positive_int", "non_negative_int", "positive_float"]

#: errno → what ``tomo`` says about an OSError (else its strerror)
_OS_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EACCES: "permission denied",
    errno.EROFS: "read-only file system",
    errno.EDQUOT: "disk quota exceeded",
}


def _warning_line(message, category, filename, lineno, line=None) -> str:
    """``warning: MESSAGE`` for the project's own warnings (UserWarning and its kinds); other kinds (a
    library's deprecation) keep their category and origin."""
    if issubclass(category, UserWarning):
        return f"warning: {message}\n"
    return f"warning ({category.__name__}, {filename}:{lineno}): {message}\n"


@contextlib.contextmanager
def _warnings_as_lines():
    """Warnings shown as one ``warning: ...`` line each while a command runs (not Python's
    ``file:line: UserWarning: ...`` and the source line that raised it)."""
    before = warnings.formatwarning
    warnings.formatwarning = _warning_line
    try:
        yield
    finally:
        warnings.formatwarning = before


class OneLineErrors(argparse.ArgumentParser):
    """argparse whose bad options are one line ``error: tomo CMD: ...`` with exit status 2, as every other
    bad input (argparse prints the whole usage first); ``--help`` still shows it."""

    _argv: list[str] = []  # the arguments being parsed (class-wide: subcommands' parsers report errors)

    def error(self, message: str, prog: str | None = None) -> NoReturn:
        prog = prog or self.prog
        if m := re.fullmatch(r"argument (\S+): expected one argument", message):
            names, argv = m[1].split("/"), self._argv
            after = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in names]
            if any(v.startswith("-") and len(v) > 1 for v in after):  # argparse took the value for an option
                message += f"; a value that starts with '-' goes after '=': {names[-1]}={after[-1]}"
        self.exit(2, f"error: {prog}: {message} (usage: {prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but unknown options are blamed on the command they were given to."""
        OneLineErrors._argv = list(sys.argv[1:] if args is None else args)
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            cmd = getattr(ns, "command", None)
            self.error(f"unrecognized arguments: {' '.join(extras)}", f"{self.prog} {cmd}" if cmd else None)
        return ns


class Terminated(BaseException):
    """SIGTERM arrived: raised in the main thread, as SIGINT raises KeyboardInterrupt, so that cleanup
    (``finally``, ``except BaseException``: staging folders, temporary copies, partial exports) runs
    before the command ends by the signal."""


@contextlib.contextmanager
def _termination_noted(command: str):
    """While ``command`` runs, a SIGTERM (a cluster's time limit, a stopped workflow) raises
    :class:`Terminated`: the command's cleanup runs, then :func:`run` writes one line saying so (a log
    that just stops says nothing) and ends it by the signal's default action, as before. A second
    SIGTERM during the cleanup ends it at once. Commands with their own handler (``tomo train`` stops
    after its step) replace it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def note(signum, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated("SIGTERM")

    old = signal.signal(signal.SIGTERM, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _end_by(sig: signal.Signals, command: str, what: str) -> None:
    """One line ``tomo COMMAND: stopped by WHAT before it finished``, then end by ``sig``'s default action
    (as an uncaught KeyboardInterrupt does for SIGINT: exit status 130 in a shell), no traceback. Off
    the main thread (a caller's own use) it only writes the line."""
    print(f"tomo {command}: stopped by {what} before it finished", file=sys.stderr, flush=True)
    if threading.current_thread() is threading.main_thread():
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command: a heartbeat line every 30 s while it runs; exit status 2 with
    ``error: ...`` for bad input (a folder where a file goes included), 3 for a full or unwritable disk
    (no traceback)."""
    args = parser.parse_args(argv)
    try:
        with heartbeat(f"tomo {args.command}"), _warnings_as_lines(), _termination_noted(args.command):
            return args.func(args)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGINT from a stopped workflow: one line, not a traceback
        _end_by(signal.SIGINT, args.command, str(e) or "SIGINT")
        raise
    except Terminated:  # SIGTERM, after the command's cleanup ran
        _end_by(signal.SIGTERM, args.command, "SIGTERM")
        raise
    except FileNotFoundError as e:  # the OS's "[Errno 2] No such file or directory: 'P'" names P plainly
        if e.filename2:  # a rename or copy: which of the two is gone is not said
            print(f"error: {e.strerror}: {e.filename} -> {e.filename2}", file=sys.stderr)
        else:
            print(f"error: {e.filename} does not exist" if e.filename else f"error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileExistsError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except MemoryError as e:  # numpy's allocation failure names the size it asked for
        print(f"error: not enough memory for this command's settings ({e}); choose smaller sizes", file=sys.stderr)
        return 2
    except IsADirectoryError as e:  # a path of the wrong kind is bad input, not a disk problem
        path = e.filename2 or e.filename or e  # a rename onto a folder: filename2 is the folder
        print(f"error: {path} is a folder; a file is needed there: choose another path", file=sys.stderr)
        return 2
    except NotADirectoryError as e:
        print(f"error: {e.filename or e}: a part of this path is a file, not a folder", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only or unreadable path: say which, no traceback
        what = _OS_ERRORS.get(e.errno or 0, e.strerror or str(e))
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        print(
            f"error: {what}{where}: {e}. Work that was complete before is untouched; "
            + ("free space and run the command again." if full else "run the command again once the path is fixed."),
            file=sys.stderr,
        )
        return 3
