"""Kafka → S3 (Parquet) → Snowflake event loader.

The package is laid out along the data flow, one package per stage or concern:

- :mod:`loader.config`     specs (one per event type) and connection settings
- :mod:`loader.schema`     event schemas and their Arrow / Snowflake types
- :mod:`loader.consume`    Kafka consumption (aiokafka batch API), producers, topics
- :mod:`loader.encode`     JSON batches → Arrow → Parquet; dead-letter rows; headers
- :mod:`loader.store`      S3 object layout, uploads, data-file listing; AWS clients
- :mod:`loader.checkpoint` exactly-once offset commits
- :mod:`loader.worker`     the per-event stream worker tying those together
- :mod:`loader.notify`     S3 event notifications: queue, bucket rules, the SQS loop
- :mod:`loader.warehouse`  Snowflake DDL and COPY (the pipe manager and the SQS loader)
- :mod:`loader.gateway`    the event gateway: HTTP in, checked like the worker, Kafka out
- :mod:`loader.replay`     reloading files from S3, re-publishing records to Kafka
- :mod:`loader.ops`        status, freshness, plan, new-event, reconcile, dead letters
- :mod:`loader.deploy`     Helm values and manifests from the specs
- :mod:`loader.devstack`   local Kafka, moto, fakesnow, schema registry; provisioning, samples, demo
- :mod:`loader.runtime`    the long-running processes' event loop and collector settings
- :mod:`loader.cli`        the ``loader`` command

Beside them, only the modules every stage uses: :mod:`loader.errors`,
:mod:`loader.logs`, :mod:`loader.metrics` and :mod:`loader.retry`.
"""

from __future__ import annotations

import os

# Arrow picks its allocator once, when pyarrow is first imported: the system's (glibc) for
# every loader process. pyarrow's default, mimalloc, kept the freed pages of decoded batches:
# in side-by-side runs of bench/run's worker stage, its two processes peaked 85-115 MB higher
# (PSS), at the same speed. An operator's own ARROW_DEFAULT_MEMORY_POOL wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

__version__ = "0.1.0"
__all__ = ["__version__"]
