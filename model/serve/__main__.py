"""`python3 -m model.serve --checkpoint checkpoints/dpo`: see model/serve/cli.py."""

from common.errors import run_cli
from model.serve.cli import main

run_cli(main)
