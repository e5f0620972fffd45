"""Kafka → S3 (Parquet) → Snowflake event loader.

The package is laid out along the data flow:

- :mod:`loader.config`     specs (one per event type) and connection settings
- :mod:`loader.schema`     event schemas and their Arrow / Snowflake types
- :mod:`loader.consume`    Kafka consumption (aiokafka batch API)
- :mod:`loader.encode`     JSON batches → Arrow → Parquet
- :mod:`loader.store`      S3 object layout and uploads
- :mod:`loader.checkpoint` exactly-once offset commits
- :mod:`loader.worker`     the per-event stream worker tying those together
- :mod:`loader.notify`     S3 event notifications from SQS
- :mod:`loader.warehouse`  Snowflake DDL and COPY (the pipe manager and loader)
- :mod:`loader.devstack`   local Kafka, moto and fakesnow processes
- :mod:`loader.cli`        the ``loader`` command
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
