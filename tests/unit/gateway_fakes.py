"""The gateway's app over an in-memory Delivery, for unit tests."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from loader.config.settings import GatewayApiKey, GatewaySettings
from loader.config.spec import EventSpec, load_specs
from loader.gateway.app import create_app
from loader.gateway.auth import KeyRing
from loader.gateway.outbound import OutboundRecord, Outcome

REPO = Path(__file__).parents[2]
SPECS = {s.name: s for s in load_specs(REPO / "pipelines")}
ORDERS = SPECS["order_created"]
KEY = "test-key-order-writer-0123456789abcdef"
ALL_KEY = "test-key-all-events-0123456789abcdef"
KEYS = [
    GatewayApiKey(
        name="orders-app", sha256=hashlib.sha256(KEY.encode()).hexdigest(), events=["order_created"]
    ),
    GatewayApiKey(name="ops", sha256=hashlib.sha256(ALL_KEY.encode()).hexdigest(), events=["*"]),
]


class FakeDelivery:
    """Acknowledges every record at the next offset of partition 0, or fails the indexes
    ``fail`` (retryable) names; keeps what it was given."""

    def __init__(self, fail: Sequence[int] = (), state: str = "acknowledged") -> None:
        self.sent: list[tuple[str, OutboundRecord]] = []
        self.fail = set(fail)
        self.state = state

    async def send(self, spec: EventSpec, records: Sequence[OutboundRecord]) -> list[Outcome]:
        outcomes = []
        for position, record in enumerate(records):
            if position in self.fail:
                outcomes.append(Outcome("failed", error="not acknowledged in time", retryable=True))
                continue
            self.sent.append((spec.name, record))
            if self.state == "buffered":
                outcomes.append(Outcome("buffered"))
            else:
                outcomes.append(Outcome("acknowledged", partition=0, offset=len(self.sent) - 1))
        return outcomes

    def readiness(self) -> dict[str, str]:
        return {}


@contextmanager
def gateway(
    specs: Sequence[EventSpec] = (ORDERS,), delivery: FakeDelivery | None = None, **settings: Any
) -> Iterator[tuple[TestClient, FakeDelivery]]:
    """A test client of the app over ``specs`` and a fake delivery (made when not given)."""
    fake = delivery or FakeDelivery()
    gateway_settings = GatewaySettings(api_keys=KEYS, **settings)
    app = create_app(list(specs), gateway_settings, fake, KeyRing.from_settings(gateway_settings))
    with TestClient(app) as client:
        yield client, fake


def auth(key: str = KEY) -> dict[str, str]:
    """The header carrying ``key``."""
    return {"Authorization": f"Bearer {key}"}
