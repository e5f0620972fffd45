"""Consuming from Kafka with aiokafka's batch API."""

from __future__ import annotations

from loader.consume.errors import kafka_errors
from loader.consume.kafka import client_kwargs, ensure_topic, make_consumer, make_producer

__all__ = ["client_kwargs", "ensure_topic", "kafka_errors", "make_consumer", "make_producer"]
