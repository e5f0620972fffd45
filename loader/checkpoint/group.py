"""The consumer group's coordinator as the committer needs it: the one place that uses
aiokafka's private API.

aiokafka's public ``commit()`` sends whatever generation the consumer holds when it sends.
The roll protocol must commit under the generation a partition was *assigned* under (see
:mod:`loader.checkpoint.committer`), and only an ``OffsetCommitRequest`` built by hand and
sent to the group's coordinator can do that. So this module reaches into aiokafka for:

- ``AIOKafkaConsumer._coordinator`` (private): the consumer's ``GroupCoordinator``, made
  by ``start()``; read on every call, never kept, since it does not exist before then.
- ``GroupCoordinator.generation`` and ``.member_id``: the generation to pin at assignment.
- ``GroupCoordinator.ensure_coordinator_known()``: look the coordinator up before sending.
- ``GroupCoordinator._send_req(request)`` (private): send a request to the coordinator.
- ``GroupCoordinator.request_rejoin()``: rejoin the group once a commit was fenced.
- ``GroupCoordinator.coordinator_dead()``: forget a coordinator that moved.

``tests/unit/test_group.py`` checks each of them on the installed aiokafka and fails
naming the one that changed; ``pyproject.toml`` pins aiokafka to the versions it passed on.
"""

from __future__ import annotations

from typing import Any

import aiokafka.errors as aiokafka_errors
from aiokafka import AIOKafkaConsumer
from aiokafka.protocol.commit import OffsetCommitRequest

__all__ = ["GroupCoordinator"]


class GroupCoordinator:
    """The group coordinator of one consumer, reached through aiokafka's private attribute."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    @property
    def _coordinator(self) -> Any:
        return self._consumer._coordinator

    def generation(self) -> tuple[int, str]:
        """The consumer's generation id and member id now."""
        coordinator = self._coordinator
        return coordinator.generation, coordinator.member_id

    async def commit(self, request: OffsetCommitRequest) -> type[aiokafka_errors.KafkaError]:
        """Send an offset commit for one partition to the coordinator: the class of the error it
        answers with (``NoError`` once accepted), or of a retriable error met on the way.
        A non-retriable error is raised."""
        coordinator = self._coordinator
        try:
            await coordinator.ensure_coordinator_known()
            response = await coordinator._send_req(request)
        except aiokafka_errors.KafkaError as exc:
            if not exc.retriable:
                raise
            return type(exc)
        error: type[aiokafka_errors.KafkaError] = aiokafka_errors.for_code(response.topics[0][1][0][1])
        return error

    def request_rejoin(self) -> None:
        """Rejoin the group: the generation the commit carried is gone."""
        self._coordinator.request_rejoin()

    def coordinator_dead(self) -> None:
        """Forget the coordinator, so that the next commit looks it up again."""
        self._coordinator.coordinator_dead()
