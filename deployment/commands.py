"""What a command prints and records about itself: its settings, one line at the start, and the exact command
line (the model dir's command.txt, bundle.json, a benchmark's JSON), quoted so that it can be pasted back.

    from deployment.commands import command_line, print_settings
    print_settings(settings)                                   # settings: {"data": "...", ...}
    command = command_line("python -m training.train", argv)   # python -m training.train --data 'my data'

It lives in deployment/ beside cli_types (standard library only) so that every stage imports it from one place.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from typing import Sequence


def settings_dict(settings) -> dict:
    """A settings dataclass (or a dict) as a JSON-ready dict: paths and other objects as strings."""
    fields = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings)
    return json.loads(json.dumps(fields, default=str))


def print_settings(settings, file=None) -> None:
    """`settings: {...}` on stdout (or `file`), flushed: the first line of every command's output."""
    print("settings: " + json.dumps(settings_dict(settings)), file=file or sys.stdout, flush=True)


def command_line(prog: str, argv: Sequence[str] | None = None) -> str:
    """`prog` followed by `argv` (default: this process's arguments), each quoted for a POSIX shell."""
    return " ".join([prog, *(shlex.quote(str(a)) for a in (sys.argv[1:] if argv is None else argv))])
