"""Uniform behaviour of the command-line entry points."""

import sys
from collections.abc import Callable

from elmbridge.allocator import keep_freed_memory
from elmbridge.errors import UserError


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run `main(argv)` and turn user errors into a one-line message and exit status 2.

    A `KeyboardInterrupt` exits with status 130 and a reminder that every long command of
    the toolkit resumes when it is run again with the same arguments. The process keeps
    freed memory for reuse (`elmbridge.allocator`): a command owns its process, and the
    page faults of memory handed back and taken again were a tenth of a training step.
    """
    keep_freed_memory()
    try:
        code = main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished work is saved; run the same command again to resume.",
            file=sys.stderr,
        )
        sys.exit(130)
    sys.exit(code or 0)
