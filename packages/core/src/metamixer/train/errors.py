"""User-facing errors and the console-script wrapper.

Every console script in the monorepo wraps its ``main(argv)`` with :func:`run_cli`, so that a bad config key,
a missing file or a wrong checkpoint produces exactly one readable line on stderr and exit code 2 — never a
Python traceback. Genuine bugs (any other exception) still raise with a full traceback, because hiding those
would make them impossible to report.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["FFNetError", "RunInterrupted", "SomeInputsFailed", "for_each_input", "run_cli", "EXIT_USER_ERROR", "EXIT_INTERRUPTED", "EXIT_TERMINATED"]

#: exit status for bad user input (same as argparse's usage errors)
EXIT_USER_ERROR = 2
#: conventional exit status for SIGINT (128 + 2)
EXIT_INTERRUPTED = 130
#: conventional exit status for SIGTERM (128 + 15)
EXIT_TERMINATED = 143


class FFNetError(Exception):
    """An error caused by user input (config, path, checkpoint, data), not by a bug.

    The message must name the offending file/field and say what was expected, because it is the only thing the
    user will see (:func:`run_cli` prints it without a traceback).
    """


class SomeInputsFailed(FFNetError):
    """A folder run finished, but some inputs could not be processed (each was already reported on its own line);
    the console script exits 1 (not 2: the command itself was right, and everything else was written)."""

    exit_code = 1


def for_each_input(paths: Sequence[Any], action: Callable[[Any], Any], what: str = "file") -> list[Any]:
    """Run ``action(path)`` for every input; a user error on one input (FFNetError, e.g. an unreadable image) is
    printed as one ``error:`` line and the run goes on. Returns the results of the inputs that worked; raises
    :class:`SomeInputsFailed` listing every failed input at the end if any failed."""
    results, failed = [], []
    for path in paths:
        try:
            results.append(action(path))
        except FFNetError as exc:
            _report(str(exc))
            failed.append(str(path))
    if failed:
        listed = ", ".join(failed[:20]) + (f" and {len(failed) - 20} more" if len(failed) > 20 else "")
        raise SomeInputsFailed(f"{len(failed)} of {len(paths)} {what}s failed: {listed}")
    return results


class RunInterrupted(Exception):
    """A training run stopped on SIGINT/SIGTERM after writing a resumable checkpoint; ``message`` says how to
    resume and ``exit_code`` is 130 or 143 (what a shell reports for those signals)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


_WORKER_TRACEBACK = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\s*Original Traceback.*?\n(?:\S*\.)?FFNetError: (.*)\Z", re.S)


def _one_line(msg: str) -> str:
    """Collapse a message onto one line so the CLI contract (exactly one line on stderr) holds. An FFNetError
    raised in a DataLoader worker reaches the main process wrapped in the worker's traceback text: only its
    own message is kept."""
    found = _WORKER_TRACEBACK.search(str(msg))
    return " ".join((found.group(1) if found else str(msg)).split())


def _close_progress_bars() -> None:
    """Close any open tqdm bar so the ``error:`` line starts on its own line instead of sharing the bar's.

    tqdm is only looked up if it is already imported (the apps import it through the run logger)."""
    std = sys.modules.get("tqdm.std")
    if std is None:
        return
    for bar in list(getattr(std.tqdm, "_instances", ())):
        bar.close()


def _report(message: str) -> None:
    _close_progress_bars()
    print(f"error: {_one_line(message)}", file=sys.stderr)


def report_input_error(message: str) -> None:
    """One ``error:`` line on stderr for one bad input of a run that goes on (the line :func:`for_each_input`
    prints, for inputs that fail where it cannot run, e.g. inside data-loader workers)."""
    _report(message)


def _os_error_message(exc: OSError) -> str:
    """Describe a FileNotFoundError/PermissionError with the path, without the errno noise."""
    what = "file or folder not found" if isinstance(exc, FileNotFoundError) else "permission denied"
    path = exc.filename if exc.filename is not None else ""
    return f"{what}: {path}" if path else f"{what}: {exc}"


_CLEANUPS: list[Callable[[], None]] = []


def on_user_error(cleanup: Callable[[], None]) -> None:
    """Register ``cleanup`` to run when the current CLI command stops on a user error (before it exits 2), e.g.
    removing a run folder that holds nothing of value yet. Outside :func:`run_cli` nothing calls it."""
    _CLEANUPS.append(cleanup)


def _clean_up() -> None:
    while _CLEANUPS:
        with contextlib.suppress(Exception):
            _CLEANUPS.pop()()


def run_cli(main: Callable[[Sequence[str] | None], Any]) -> Callable[[Sequence[str] | None], int]:
    """Wrap a console-script ``main(argv)`` so user errors become one ``error: ...`` line and exit code 2.

    The returned function takes ``argv=None`` (meaning ``sys.argv[1:]``) and returns ``main``'s return value
    (0 when it returns None). On a user error it raises ``SystemExit(2)`` after printing one line, which is what
    both a console-script entry point and ``pytest.raises(SystemExit)`` expect. ``KeyboardInterrupt`` exits 130
    quietly. ``FileNotFoundError``/``PermissionError`` are treated as user errors because in a CLI they almost
    always come from a path the user typed.
    """

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        if "--debug" in (sys.argv[1:] if argv is None else argv):
            result = main(argv)  # no translation: the full traceback of any failure
            return 0 if result is None else result
        _CLEANUPS.clear()
        try:
            result = main(argv)
        except FFNetError as exc:
            _clean_up()
            _report(str(exc))
            raise SystemExit(getattr(exc, "exit_code", EXIT_USER_ERROR)) from None
        except (FileNotFoundError, PermissionError) as exc:
            _clean_up()
            _report(_os_error_message(exc))
            raise SystemExit(EXIT_USER_ERROR) from None
        except RunInterrupted as exc:
            _close_progress_bars()
            print(str(exc), file=sys.stderr)
            raise SystemExit(exc.exit_code) from None
        except KeyboardInterrupt:
            _report("interrupted")
            raise SystemExit(EXIT_INTERRUPTED) from None
        finally:
            _CLEANUPS.clear()
        return 0 if result is None else result

    return wrapper
