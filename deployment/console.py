"""Progress and messages on the terminal never decide whether a command's results are kept.

A command piped into `head` (`python -m deployment.predict ... 2>&1 | head`) loses its stdout and stderr as soon
as `head` exits; Python then raises BrokenPipeError from whatever writes next: a progress bar, a log line, the
final summary, or the interpreter's last flush (exit status 120). None of that is the command's work. Inside
`unbreakable_output()` sys.stdout and sys.stderr are `SafeStream`s: the first write or flush that fails
(BrokenPipeError, any OSError, a closed file) points that stream's file descriptor at /dev/null (what Python's
documentation advises for SIGPIPE) and every later write to it is dropped, so the command completes its output
file and exits 0 when its work succeeded. Write errors on the command's own output files still fail the command.

    from deployment.console import unbreakable_output
    with unbreakable_output():
        ... tqdm(file=sys.stderr) ..., print(...) ...

Standard library only (the Space, which is the deployment/ folder alone, runs the batch CLI's code too).
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, TextIO


class SafeStream:
    """A text stream whose writes and flushes never raise: after the first failure it writes nothing more."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except (OSError, ValueError):   # ValueError: the stream was closed
                self._give_up()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._give_up()

    def _give_up(self) -> None:
        """Stop writing; send the descriptor to /dev/null so text still buffered in the stream (flushed when the
        interpreter exits) and C libraries writing to the descriptor directly go nowhere instead of failing."""
        self.broken = True
        try:
            fd = self._stream.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
        except (OSError, ValueError, AttributeError):   # no descriptor (a test's capture buffer): nothing to do
            return
        try:
            os.dup2(devnull, fd)
        except OSError:
            pass
        finally:
            os.close(devnull)

    def isatty(self) -> bool:
        try:
            return not self.broken and self._stream.isatty()
        except (OSError, ValueError):
            return False

    def __getattr__(self, name: str):   # encoding, fileno, ... as the wrapped stream has them
        return getattr(self._stream, name)


@contextlib.contextmanager
def unbreakable_output() -> Iterator[None]:
    """sys.stdout and sys.stderr as SafeStreams while the block runs (flushed before they are put back, so a
    broken pipe shows up here, not in the interpreter's final flush)."""
    saved = sys.stdout, sys.stderr
    safe = [SafeStream(s) if s is not None and not isinstance(s, SafeStream) else s for s in saved]
    sys.stdout, sys.stderr = safe
    try:
        yield
    finally:
        for stream in safe:
            if isinstance(stream, SafeStream):
                stream.flush()
        sys.stdout, sys.stderr = saved
