"""The `ciklek` command (`ciklek = "connector.cli:main"`): see `app.py`."""

from connector.cli.app import main

__all__ = ["main"]
