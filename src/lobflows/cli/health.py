"""``lobflows health``: Health of every flow and connection."""

from __future__ import annotations

import typer

health_app = typer.Typer(
    help="Health of every flow and connection.", no_args_is_help=True
)
