"""User-facing errors: a mistake in the user's input becomes one line on stderr, not a traceback."""

import argparse
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem with the user's input (a path, a flag, a file). The message says what to do."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a bad flag is one line (argparse's own adds the usage block)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def run_cli(main: Callable[[], int | None]) -> None:
    """Run a CLI `main()`: UserError -> `error: ...` and exit 2; Ctrl-C -> exit 130."""
    try:
        code = main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
