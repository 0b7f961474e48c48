"""``lobflows secrets``: Secrets in the encrypted vault: set, list, rotate, show where they are used."""

from __future__ import annotations

import typer

secrets_app = typer.Typer(
    help="Secrets in the encrypted vault: set, list, rotate, show where they are used.",
    no_args_is_help=True,
)
