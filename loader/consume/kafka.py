"""Kafka access: the batch consumer the worker reads with, and topic creation.

The hot path uses aiokafka's batch API (``getmany``): Faust's per-record
stream path measured about 50 times slower here. Offsets are never auto-committed;
the checkpoint module commits them once a file is durable in S3.

Every client the product builds (consumers, producers, admin clients) takes its
connection arguments from :func:`client_kwargs`, so TLS (``SSL``, ``SASL_SSL``)
and SASL reach all of them the same way.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from loader.config.settings import KafkaSettings
from loader.config.spec import EventSpec
from loader.consume import records
from loader.consume.errors import kafka_errors
from loader.errors import ConfigError, KafkaError, clip

__all__ = ["client_kwargs", "ensure_topic", "make_consumer", "make_producer", "ssl_context"]

_TLS_FILES = {
    "ssl_cafile": "LOADER_KAFKA__SSL_CAFILE",
    "ssl_certfile": "LOADER_KAFKA__SSL_CERTFILE",
    "ssl_keyfile": "LOADER_KAFKA__SSL_KEYFILE",
}


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    """The TLS context of every client (aiokafka's own helper: verified certificates,
    the CA file or the system's CAs, the client certificate if any); a ConfigError names
    the setting whose file is missing or unreadable."""
    for name, env in _TLS_FILES.items():
        path = getattr(settings, name)
        if path is not None and not path.is_file():
            raise ConfigError(f"{env}: no such file {clip(str(path), 200)}")
    password = settings.ssl_key_password.get_secret_value() if settings.ssl_key_password else None
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.ssl_cafile,
            certfile=settings.ssl_certfile,
            keyfile=settings.ssl_keyfile,
            password=password,
        )
    except (ssl.SSLError, OSError) as exc:  # never the password: only what the ssl module says
        named = ", ".join(env for name, env in _TLS_FILES.items() if getattr(settings, name))
        raise ConfigError(
            f"cannot load the Kafka TLS files ({named or 'system CAs'}): {exc}; they must be PEM, "
            "and an encrypted key needs its LOADER_KAFKA__SSL_KEY_PASSWORD"
        ) from None
    context.check_hostname = settings.ssl_check_hostname
    return context


def client_kwargs(spec: EventSpec, settings: KafkaSettings) -> dict[str, Any]:
    """Connection keyword arguments shared by consumers, producers and admin clients."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_for(spec.kafka.cluster),
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = ssl_context(settings)
    if settings.sasl_mechanism:
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        if settings.sasl_password is not None:
            kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return kwargs


def make_consumer(spec: EventSpec, settings: KafkaSettings, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer for the event's group with manual commits, reading committed data only.

    Its fetcher reads batches through :mod:`loader.consume.records`, so a header key that
    is not UTF-8 reaches the decoder (and becomes a dead letter) instead of stopping it."""
    records.install()
    options: dict[str, Any] = {
        "group_id": spec.consumer_group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "fetch_max_bytes": 64 * 1024 * 1024,
        "max_partition_fetch_bytes": 8 * 1024 * 1024,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "max_poll_interval_ms": 300_000,
    }
    options.update(overrides)
    return AIOKafkaConsumer(**client_kwargs(spec, settings), **options)


def make_producer(spec: EventSpec, settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """A producer for samples and replays (batching like the platform's REST proxy)."""
    options: dict[str, Any] = {
        "linger_ms": 50,
        "acks": 1,
        "max_batch_size": 256 * 1024,
        "compression_type": None,
    }
    options.update(overrides)
    return AIOKafkaProducer(**client_kwargs(spec, settings), **options)


async def ensure_topic(spec: EventSpec, settings: KafkaSettings, *, replication_factor: int = 1) -> bool:
    """Create the event's topic if it is missing; True if it was created."""
    admin = AIOKafkaAdminClient(**client_kwargs(spec, settings))
    try:
        with kafka_errors(f"cannot create topic {spec.kafka.topic}"):
            await admin.start()
            existing = await admin.list_topics()
            if spec.kafka.topic in existing:
                return False
            topic = NewTopic(spec.kafka.topic, spec.kafka.partitions, replication_factor)
            response = await admin.create_topics([topic])
    finally:
        await admin.close()
    # Errors come back per topic in the response rather than raised.
    for _name, code, *rest in response.topic_errors:
        if code == TopicAlreadyExistsError.errno:
            return False
        if code:
            raise KafkaError(
                f"cannot create topic {spec.kafka.topic}: error {code} {rest[-1] if rest else ''}"
            )
    return True
