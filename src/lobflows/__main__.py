"""``python -m lobflows`` runs the command line."""

from __future__ import annotations

from lobflows.cli.main import main

main()
