"""What kind of process this is, told from how it was started (no Django, no settings)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import PurePath


def runs_celery(argv: Sequence[str] | None = None) -> bool:
    """Whether this process is Celery's command line (a worker, beat, or another command).

    Started as the `celery` script, argv[0] is that script's path; started as
    `python -m celery` (as bench/ and the tests do, with the interpreter in hand), it is the
    path of celery/__main__.py.
    """
    argv = sys.argv if argv is None else argv
    if not argv:
        return False
    program = PurePath(argv[0])
    if program.name == "__main__.py":
        return program.parent.name == "celery"
    return program.name == "celery"
