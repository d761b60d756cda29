"""MLflow: the store (``store``: connection, retries, safe logging) and the run records of
every stage (``runs``: the per-seed training run, the per-(method, level) children, the
analysis and reader-study runs, and re-logging from DVC outputs), and each trained seed's
``run.json`` naming its run (``run_record``)."""
