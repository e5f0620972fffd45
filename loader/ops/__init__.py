"""Operating the pipelines: what operators and platform teams ask of them.

- :mod:`loader.ops.status`       ``loader status``: lag, files, loads, dead letters, freshness
- :mod:`loader.ops.pipe_status`  one pipe's loads and pending files, from the warehouse's records
- :mod:`loader.ops.freshness`    the newest ``_CREATED_AT`` in an event's S3 files
- :mod:`loader.ops.plan`         ``loader plan``: everything a spec implies, offline
- :mod:`loader.ops.new_event`    ``loader new-event``: a commented spec and an example schema
- :mod:`loader.ops.reconcile`    ``loader reconcile``: load the files the warehouse missed
- :mod:`loader.ops.dead_letters` ``loader dead-letters``: what was rejected and why

These sit above the stages and may use any of them; no stage imports them.
"""
