"""``cxrprune repro --ray``: the per-seed DVC stages as parallel Ray tasks, DVC keeping the record.

- :mod:`~cxrprune.scaleout.plan`: which stages are per-seed, grouped into chains, out of date;
- :mod:`~cxrprune.scaleout.resources`: what each task asks of the cluster;
- :mod:`~cxrprune.scaleout.worker`: what runs inside a task;
- :mod:`~cxrprune.scaleout.progress`: the live view and MLflow links;
- :mod:`~cxrprune.scaleout.session`: the driver (:func:`~cxrprune.scaleout.session.reproduce`).
"""
