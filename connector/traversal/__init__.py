"""Walking an API list: the typed state and its transitions, ranges, the page loop and its
workers, the chunk gate, and what a run configures and reports (no dlt pipeline, no SQL)."""
