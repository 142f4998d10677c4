"""One property, one test: `check_each(cases, check)` runs `check` over every generated case inside a single test
and names the first case that fails (hundreds of parametrised items would check the same property)."""
from __future__ import annotations

from typing import Callable, Iterable, TypeVar

T = TypeVar("T")


def check_each(cases: Iterable[T], check: Callable[[T], None]) -> int:
    """`check(case)` for every case; an AssertionError is re-raised naming its case. Returns the cases checked."""
    n = 0
    for case in cases:
        try:
            check(case)
        except AssertionError as exc:
            raise AssertionError(f"case {case!r}: {exc}") from exc
        n += 1
    return n


def parser_refuses(main: Callable[[list], object], argv: list, message: str, capsys) -> None:
    """`main(argv)` (a command's in-process entry point) stops at its argparse parser: exit code 2 and `message` on
    stderr, before any work (cli_types' rules are tested in tests/test_cli_types.py; this checks the wiring)."""
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err, (argv, err[-500:])
