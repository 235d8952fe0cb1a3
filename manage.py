#!/usr/bin/env python
from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inkwave.settings")
    from django.core.management import execute_from_command_line

    from inkwave import vardir

    # Before the settings are read: they find the var directory and the embedded key here.
    vardir.prepare()

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
