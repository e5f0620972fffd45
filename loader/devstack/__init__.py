"""Real local services for development and tests: Kafka, S3/SQS, Snowflake, a schema registry.

Apache Kafka, moto (S3/SQS), fakesnow (Snowflake) and Apicurio Registry (a
Confluent-compatible schema registry). Each service runs as its own process
bound to 127.0.0.1 on a free port. The same code serves the demo,
``loader dev up/down/status`` and the test fixtures:

    with DevStack.start() as stack:   # starts only what is not configured
        run(stack.settings)

Beside the services (:mod:`~loader.devstack.stack`, one module per service),
the package holds what only a local stack needs: the infrastructure the specs
imply (:mod:`~loader.devstack.provision`: topics, buckets, the notifications
queue), created by ``loader dev up``/``provision`` only on the stack's own
services (:mod:`~loader.devstack.targets`), realistic sample events
(:mod:`~loader.devstack.samples`, also used by tests, the benchmark and
``loader dev produce``) and ``loader demo`` (:mod:`~loader.devstack.demo`).
"""

from __future__ import annotations

from loader.devstack.process import Service, free_port
from loader.devstack.stack import (
    REAL_AWS_ENV,
    SERVICE_NAMES,
    DevStack,
    ServiceStatus,
    StopOutcome,
    default_work_dir,
    down,
    read_state,
    running_stack,
    services_to_start,
    status,
    up,
)

__all__ = [
    "REAL_AWS_ENV",
    "SERVICE_NAMES",
    "DevStack",
    "Service",
    "ServiceStatus",
    "StopOutcome",
    "default_work_dir",
    "down",
    "free_port",
    "read_state",
    "running_stack",
    "services_to_start",
    "status",
    "up",
]
