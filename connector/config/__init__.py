"""Settings, accounts, secrets redaction, the URL rule and the private state dir: what a run is
configured with, validated before any request (no HTTP, no dlt pipeline)."""
