"""The HTTP side: the client, what each response means, the rate limiter, bounded bodies and the
request ledger (the daily budget)."""
