"""The engine, on the far side of the channel: caches, leases, asks the sources, merges, persists.

:mod:`.serve` is its one loop (in a worker process or a thread), :mod:`.flusher`
batches and times the work, :mod:`.steps` holds the enrichment steps themselves.
"""
