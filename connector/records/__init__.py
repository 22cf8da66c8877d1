"""Records as the API sent them -> Arrow tables with declared types, and rejects (pure: no I/O)."""
