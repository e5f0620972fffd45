"""The guard of ``loader dev provision`` and ``loader dev produce``: only the dev stack's own services.

Creating topics, buckets and queues, and producing sample events, are for the
local services ``loader dev up`` started, never for configured infrastructure.
A target is the dev stack's when the effective settings (env and
``LOADER_CONFIG`` override the state file) point at the endpoint of a service
the recorded stack started and still owns. Those endpoints are built from the
recorded ports on 127.0.0.1 (never read back from the state file), so a
target that passes is always on loopback.
"""

from __future__ import annotations

from dataclasses import dataclass

from loader.config.settings import Settings, dev_state_path, load_settings
from loader.config.spec import EventSpec
from loader.devstack import kafka, moto
from loader.devstack.stack import DevStack, owns, running_stack
from loader.errors import ConfigError, DevStackError

__all__ = ["DevTargets"]


@dataclass(frozen=True)
class DevTargets:
    """The running dev stack, the effective settings, and which of their services are the stack's."""

    stack: DevStack
    settings: Settings

    @classmethod
    def running(cls) -> DevTargets:
        """The stack ``loader dev up`` started, or a DevStackError saying there is none."""
        stack = running_stack()
        if stack is None:
            raise DevStackError(
                f"no dev stack is running (none recorded in {dev_state_path()}): this command only "
                "creates topics, buckets and queues, or produces sample events, on the local services "
                "`loader dev up` starts, never on configured infrastructure; start them with `loader dev up`"
            )
        return cls(stack, load_settings())

    def _own_endpoint(self, name: str) -> str | None:
        service = self.stack.service(name)
        if service is None or not owns(service):
            return None
        return self.stack.endpoints[name]

    def kafka_refusal(self, spec: EventSpec) -> str | None:
        """Why ``spec``'s topic is not on the dev stack's Kafka, or None when it is."""
        own = self._own_endpoint(kafka.NAME)
        where = f"topic {spec.kafka.topic} of {spec.name}"
        if own is None:
            return f"{where}: the dev stack did not start Kafka (it is configured), so it is left alone"
        cluster = f"{where}: cluster {spec.kafka.cluster!r}"
        try:
            servers = self.settings.kafka.bootstrap_for(spec.kafka.cluster)
        except ConfigError:
            return f"{cluster} is not configured, so it is not the dev stack's Kafka"
        if servers != own:
            return f"{cluster} is configured at {servers}, not the dev stack's {own}"
        return None

    def aws_refusal(self) -> str | None:
        """Why S3 and SQS are not the dev stack's moto, or None when they are."""
        own = self._own_endpoint(moto.NAME)
        if own is None:
            return "S3/SQS: the dev stack did not start moto (AWS is configured), so it is left alone"
        configured = self.settings.aws.endpoint_url
        if configured != own:
            where = configured or "real AWS"
            return f"S3/SQS: the settings point at {where}, not the dev stack's moto at {own}"
        return None
