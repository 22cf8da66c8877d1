"""One run, put together: the dlt source, run_sync and its parts (options, result, the exit
decision, recovery, signals, the lock, status, events, progress), sweeps and freshness."""
