"""python3 -m evaluation (see evaluation/__init__.py)."""

from common.errors import run_cli
from evaluation.cli import main

if __name__ == "__main__":
    run_cli(main)
