"""`lookalike` command line: one module per command group (index, similar, models, experiments, images),
one HTTP client (client.py) for the commands that take --url, and `main` (commands.py)."""

from app.cli.commands import main, parser

__all__ = ["main", "parser"]
