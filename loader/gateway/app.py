"""The gateway's HTTP API (Starlette): ``POST /v1/events/{event}`` and ``POST /topics/{topic}``.

A request is authenticated (:mod:`loader.gateway.auth`), its body read within the limits
(:mod:`loader.gateway.body`), its events made into records and checked with the worker's
rules (:mod:`loader.gateway.events`), and the accepted records handed to the
:class:`~loader.gateway.outbound.Delivery` given (the Kafka producers; an in-memory fake in
unit tests). Every record gets an answer by its index: produced (where), rejected (why), or
not delivered (retry it).

``/topics/{topic}`` speaks Confluent's REST Proxy v2 produce API (embedded JSON records),
so existing REST Proxy clients work unchanged; records carry full envelopes as their values.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from loader import metrics
from loader.config.settings import GatewaySettings
from loader.config.spec import EventSpec
from loader.gateway.auth import Caller, KeyRing
from loader.gateway.body import BodyError, Element, TooLargeError, decompress, elements, read_limited
from loader.gateway.events import EventRoute, Posted, RefusedError, Rejection
from loader.gateway.outbound import Delivery, OutboundRecord, Outcome

__all__ = ["REST_PROXY_TYPES", "create_app"]

Api = Literal["events", "rest_proxy"]
REST_PROXY_TYPES = frozenset(
    ("application/vnd.kafka.json.v2+json", "application/vnd.kafka.v2+json", "application/json")
)
"""Content types of a REST Proxy v2 produce request with embedded JSON records."""
_EVENT_TYPES = frozenset(("", "application/json", "application/x-ndjson", "application/jsonl", "text/plain"))
_RETRY_AFTER_S = "1"


def create_app(
    specs: Sequence[EventSpec],
    settings: GatewaySettings,
    delivery: Delivery,
    keys: KeyRing,
    *,
    lifespan: Callable[[], AbstractAsyncContextManager[None]] | None = None,
) -> Starlette:
    """The gateway's ASGI app for ``specs``; ``lifespan`` starts and stops the delivery."""
    gateway = _Gateway(specs, settings, delivery, keys)

    @asynccontextmanager
    async def running(_app: Starlette) -> AsyncIterator[None]:
        if lifespan is None:
            yield
            return
        async with lifespan():
            yield

    middleware = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["POST"],
                allow_headers=["Authorization", "X-API-Key", "Content-Type", "Content-Encoding"],
                max_age=600,
            )
        )
    return Starlette(
        routes=[
            Route("/v1/events/{event}", gateway.post_events, methods=["POST"]),
            Route("/topics/{topic}", gateway.post_topic, methods=["POST"]),
        ],
        middleware=middleware,
        lifespan=running,
    )


class _Gateway:
    """The route handlers, with what they share."""

    def __init__(
        self, specs: Sequence[EventSpec], settings: GatewaySettings, delivery: Delivery, keys: KeyRing
    ) -> None:
        self.settings = settings
        self.delivery = delivery
        self.keys = keys
        self.routes = {spec.name: EventRoute(spec) for spec in specs}
        self.by_topic: dict[str, list[EventRoute]] = {}
        for route in self.routes.values():
            self.by_topic.setdefault(route.spec.kafka.topic, []).append(route)

    # -- POST /v1/events/{event} -------------------------------------------------------------------

    async def post_events(self, request: Request) -> Response:  # noqa: PLR0911 - one answer per status
        """Post a JSON array or NDJSON of events of one type (see the module docstring)."""
        caller = self.keys.caller(request.headers)
        if caller is None:
            return _unauthorized("events", {"error": _NO_KEY})
        name = request.path_params["event"]
        route = self.routes.get(name)
        if route is None:
            return _json("events", 404, {"error": f"unknown event {name[:80]!r}"})
        if not caller.may_post(name):
            return _json("events", 403, {"error": f"this API key may not post events of {name!r}"})
        if route.unsupported is not None:
            return _json("events", 415, {"error": route.unsupported})
        if _media(request) not in _EVENT_TYPES:
            return _json("events", 415, {"error": "post application/json (an array) or application/x-ndjson"})
        form = request.query_params.get("form", "envelope")
        if form not in ("envelope", "payload"):
            return _json("events", 400, {"error": "form is envelope (the default) or payload"})
        posted: Posted = "payload" if form == "payload" else "envelope"
        try:
            found = elements(
                await self._body(request), request.headers.get("content-type"), self._max_records
            )
        except TooLargeError as exc:
            return _json("events", 413, {"error": str(exc)})
        except BodyError as exc:
            return _json("events", 400, {"error": str(exc)})
        now = datetime.now(UTC)
        candidates, rejected = _records(found, route, posted, caller, now)
        checked = route.check(candidates)
        rejected += checked.rejected
        outcomes = await self._send(route.spec, checked.accepted)
        return self._events_answer(route.spec.name, outcomes, rejected)

    def _events_answer(
        self, event: str, outcomes: list[tuple[int, Outcome]], rejected: list[Rejection]
    ) -> Response:
        results: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for index, outcome in outcomes:
            if outcome.state == "failed" and not outcome.retryable:
                rejected.append(Rejection(index, outcome.error or "not delivered", "undelivered"))
            elif outcome.state == "failed":
                failed.append({"index": index, "reason": outcome.error or "not delivered", "retryable": True})
            else:
                results.append({"index": index, "partition": outcome.partition, "offset": outcome.offset})
        rejected.sort(key=lambda r: r.index)
        _count(event, len(results), rejected)
        body: dict[str, Any] = {
            "accepted": len(results),
            "rejected": [{"index": r.index, "reason": r.reason} for r in rejected],
        }
        if self.settings.mode == "sync":
            body["results"] = results
        if failed:
            body["failed"] = failed
            return _json("events", 503, body, {"Retry-After": _RETRY_AFTER_S})
        if not results:
            return _json("events", 400, body)
        return _json("events", 200 if self.settings.mode == "sync" else 202, body)

    # -- POST /topics/{topic}: REST Proxy v2 -------------------------------------------------------

    async def post_topic(self, request: Request) -> Response:  # noqa: PLR0911 - one answer per status
        """Produce embedded-JSON records to a topic, as Confluent's REST Proxy v2 does."""
        caller = self.keys.caller(request.headers)
        if caller is None:
            return _unauthorized("rest_proxy", _proxy_error(40101, _NO_KEY))
        topic = request.path_params["topic"]
        routes = self.by_topic.get(topic)
        if routes is None:
            return _json("rest_proxy", 404, _proxy_error(40401, "Topic not found"))
        if not any(caller.may_post(r.spec.name) for r in routes):
            return _json("rest_proxy", 403, _proxy_error(40301, f"this API key may not produce to {topic!r}"))
        unsupported = next((r.unsupported for r in routes if r.unsupported is not None), None)
        if unsupported is not None:
            return _json("rest_proxy", 415, _proxy_error(41501, unsupported))
        if _media(request) not in REST_PROXY_TYPES:
            return _json(
                "rest_proxy",
                415,
                _proxy_error(
                    41501, "HTTP 415 Unsupported Media Type: post application/vnd.kafka.json.v2+json"
                ),
            )
        try:
            records = _proxy_records(await self._body(request), self._max_records)
        except TooLargeError as exc:
            return _json("rest_proxy", 413, _proxy_error(41301, str(exc)))
        except BodyError as exc:
            return _json("rest_proxy", 422, _proxy_error(42201, str(exc)))
        now = datetime.now(UTC)
        assigned, rejected = _assign(records, routes, caller, now)
        outcomes: list[tuple[int, Outcome]] = []
        for route, candidates in assigned:
            checked = route.check(candidates)
            _count(route.spec.name, 0, checked.rejected)
            rejected += checked.rejected
            sent = await self._send(route.spec, checked.accepted)
            _count(route.spec.name, sum(1 for _, o in sent if o.state != "failed"), [])
            outcomes += sent
        offsets: list[dict[str, Any]] = [{}] * len(records)
        for rejection in rejected:
            offsets[rejection.index] = _offset(None, None, 1, rejection.reason)
        for index, outcome in outcomes:
            if outcome.state == "failed":
                code = 2 if outcome.retryable else 1
                offsets[index] = _offset(None, None, code, outcome.error or "not delivered")
            else:
                offsets[index] = _offset(outcome.partition, outcome.offset, None, None)
        return _json("rest_proxy", 200, {"key_schema_id": None, "value_schema_id": None, "offsets": offsets})

    # -- shared ------------------------------------------------------------------------------------

    @property
    def _max_records(self) -> int:
        return self.settings.max_batch_records

    async def _body(self, request: Request) -> bytes:
        """The request's body, decoded, within ``max_body_bytes`` before and after gzip."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise TooLargeError(f"body larger than {limit} bytes (gateway.max_body_bytes)")
        raw = await read_limited(request.stream(), limit)
        return decompress(raw, request.headers.get("content-encoding"), limit)

    async def _send(
        self, spec: EventSpec, accepted: list[tuple[int, OutboundRecord]]
    ) -> list[tuple[int, Outcome]]:
        if not accepted:
            return []
        outcomes = await self.delivery.send(spec, [record for _, record in accepted])
        return [(index, outcome) for (index, _), outcome in zip(accepted, outcomes, strict=True)]


_NO_KEY = "missing or unknown API key (Authorization: Bearer <key> or X-API-Key: <key>)"


def _records(
    found: list[Element], route: EventRoute, posted: Posted, caller: Caller, now: datetime
) -> tuple[list[tuple[int, OutboundRecord]], list[Rejection]]:
    candidates: list[tuple[int, OutboundRecord]] = []
    rejected: list[Rejection] = []
    for element in found:
        if element.value is None:
            rejected.append(Rejection(element.index, element.problem or "not a JSON object", "not_object"))
            continue
        try:
            record = route.outbound(element.value, posted=posted, source=caller.name, now=now)
        except RefusedError as exc:
            rejected.append(Rejection(element.index, str(exc), "envelope"))
        else:
            candidates.append((element.index, record))
    return candidates, rejected


def _proxy_records(body: bytes, max_records: int) -> list[Any]:
    """The ``records`` of a REST Proxy produce request (each checked later, by index)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(f"malformed JSON: {exc}") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("records"), list):
        raise BodyError('the body must be an object with "records": [{"value": ...}, ...]')
    records: list[Any] = parsed["records"]
    if not records:
        raise BodyError("no records")
    if len(records) > max_records:
        raise TooLargeError(
            f"{len(records)} records in one request; at most {max_records} (gateway.max_batch_records)"
        )
    return records


def _proxy_fields(record: Any) -> tuple[dict[str, Any], bytes | None, int | None, list[tuple[str, bytes]]]:
    """A REST Proxy record's value (an envelope), key bytes, partition and headers."""
    if not isinstance(record, dict):
        raise RefusedError("a record is an object with a value")
    unknown = sorted(set(record) - {"key", "value", "partition", "headers"})
    if unknown:
        raise RefusedError(f"unknown record field {unknown[0][:80]!r}")
    value = record.get("value")
    if not isinstance(value, dict):
        raise RefusedError("the value must be a JSON object: the event's envelope with its payload")
    key = record.get("key")
    partition = record.get("partition")
    if partition is not None and (
        not isinstance(partition, int) or isinstance(partition, bool) or partition < 0
    ):
        raise RefusedError("partition must be a non-negative integer")
    headers = record.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise RefusedError('headers must be an object of text values ({"name": "text"})')
    return (
        value,
        None if key is None else orjson.dumps(key),
        partition,
        [(name, text.encode("utf-8", "surrogatepass")) for name, text in headers.items()],
    )


def _assign(
    records: list[Any], routes: list[EventRoute], caller: Caller, now: datetime
) -> tuple[list[tuple[EventRoute, list[tuple[int, OutboundRecord]]]], list[Rejection]]:
    """Each record goes to the first spec on the topic whose match takes it (built as that
    spec writes its envelope); the rest are rejected with the reason."""
    rejected: list[Rejection] = []
    pending: dict[int, tuple[dict[str, Any], bytes | None, int | None, list[tuple[str, bytes]]]] = {}
    for index, record in enumerate(records):
        try:
            pending[index] = _proxy_fields(record)
        except RefusedError as exc:
            rejected.append(Rejection(index, str(exc), "envelope"))
    assigned: list[tuple[EventRoute, list[tuple[int, OutboundRecord]]]] = []
    problems: dict[int, str] = {}
    for route in routes:
        built: list[tuple[int, OutboundRecord]] = []
        for index, (value, key, partition, headers) in pending.items():
            try:
                built.append(
                    (
                        index,
                        route.outbound(
                            value,
                            posted="envelope",
                            source=caller.name,
                            now=now,
                            key=key,
                            headers=headers,
                            partition=partition,
                            default_event_name=len(routes) == 1,
                        ),
                    )
                )
            except RefusedError as exc:
                problems.setdefault(index, str(exc))
        takes = route.takes([record for _, record in built])
        mine = [pair for pair, taken in zip(built, takes, strict=True) if taken]
        for index, _ in mine:
            del pending[index]
        if not caller.may_post(route.spec.name):
            rejected += [
                Rejection(i, f"this API key may not post events of {route.spec.name!r}", "forbidden")
                for i, _ in mine
            ]
        elif mine:
            assigned.append((route, mine))
    for index in pending:
        reason = problems.get(index) or f"no event type on this topic takes the record ({_takes(routes)})"
        rejected.append(Rejection(index, reason, "envelope" if index in problems else "not_taken"))
    return assigned, rejected


def _takes(routes: list[EventRoute]) -> str:
    return "; ".join(f"{r.spec.name}: {r.spec.takes}" for r in routes)


def _count(event: str, accepted: int, rejected: list[Rejection]) -> None:
    if accepted:
        metrics.GATEWAY_RECORDS.labels(event, "accepted").inc(accepted)
    if rejected:
        metrics.GATEWAY_RECORDS.labels(event, "rejected").inc(len(rejected))
        for rejection in rejected:
            metrics.GATEWAY_REJECTED.labels(event, rejection.kind).inc()


def _offset(partition: int | None, offset: int | None, code: int | None, error: str | None) -> dict[str, Any]:
    return {"partition": partition, "offset": offset, "error_code": code, "error": error}


def _proxy_error(code: int, message: str) -> dict[str, Any]:
    return {"error_code": code, "message": message}


def _media(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _unauthorized(api: Api, body: dict[str, Any]) -> Response:
    return _json(api, 401, body, {"WWW-Authenticate": "Bearer"})


def _json(api: Api, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    metrics.GATEWAY_REQUESTS.labels(api, str(status)).inc()
    media = "application/vnd.kafka.v2+json" if api == "rest_proxy" else "application/json"
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type=media)
