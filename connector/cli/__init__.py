"""The `ciklek` command (`ciklek = "connector.cli:console"`, which runs `main`): see `app.py`."""

from connector.cli.app import console, main

__all__ = ["console", "main"]
