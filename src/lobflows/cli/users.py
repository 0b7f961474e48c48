"""``lobflows users``: Dashboard and API users, their roles and API tokens."""

from __future__ import annotations

import typer

users_app = typer.Typer(
    help="Dashboard and API users, their roles and API tokens.", no_args_is_help=True
)
