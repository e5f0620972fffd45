"""The gateway supervisor's dealing of connections to its processes (loopback sockets only)."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from typing import Any

import pytest

from loader.gateway import handoff
from loader.gateway.handoff import Dealer, channel_pair, receive

pytestmark = pytest.mark.unit


def _listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def _local_ports(processes: list[list[socket.socket]]) -> list[list[int]]:
    """The client port of each connection each process took (the server side's peer)."""
    return [[conn.getpeername()[1] for conn in taken] for taken in processes]


async def _deal(
    clients: int, processes: int, ready: Callable[[int], bool], *, closed: int | None = None
) -> tuple[list[int], list[list[int]]]:
    """Connect ``clients`` one by one to a Dealer over ``processes`` channels (``closed``: the
    process whose end is closed); the clients' ports in order, and each process's takes."""
    listener = _listener()
    pairs = [channel_pair() for _ in range(processes)]
    taken: list[list[socket.socket]] = [[] for _ in range(processes)]
    stops = []
    for index, (_, process_end) in enumerate(pairs):
        if index == closed:
            process_end.close()
        else:
            stops.append(receive(process_end, taken[index].append))
    dealer = Dealer(listener, [d for d, _ in pairs], ready)
    dealer.start()
    loop = asyncio.get_running_loop()
    ports: list[int] = []
    client_socks = []
    try:
        for _ in range(clients):
            client = socket.create_connection(listener.getsockname())
            client_socks.append(client)
            ports.append(client.getsockname()[1])
            before = sum(map(len, taken))
            deadline = loop.time() + 5
            while sum(map(len, taken)) == before and loop.time() < deadline:
                await asyncio.sleep(0.005)
        return ports, _local_ports(taken)
    finally:
        dealer.stop()
        for stop in stops:
            stop()
        for sock in [*client_socks, *(c for t in taken for c in t)]:
            sock.close()


def test_connections_are_dealt_to_the_processes_in_turn() -> None:
    """Each new connection goes to the next process: six connections over three processes
    give each two, in order."""
    ports, taken = asyncio.run(_deal(6, 3, lambda _: True))
    assert taken == [[ports[0], ports[3]], [ports[1], ports[4]], [ports[2], ports[5]]]


def test_a_process_that_is_not_ready_is_passed_over() -> None:
    """While another process is ready, one that is not (its producer not connected) gets no
    new connection; with none ready, all are dealt to in turn."""
    ports, taken = asyncio.run(_deal(4, 2, lambda index: index == 1))
    assert taken == [[], ports]
    ports, taken = asyncio.run(_deal(4, 2, lambda _: False))
    assert taken == [[ports[0], ports[2]], [ports[1], ports[3]]]


def test_a_process_whose_channel_is_closed_is_passed_over() -> None:
    """A process that exited (its end of the channel closed) is skipped: no connection is
    sent where nobody takes it."""
    ports, taken = asyncio.run(_deal(4, 2, lambda _: True, closed=0))
    assert taken == [[], ports]


def test_a_connection_no_process_takes_is_closed() -> None:
    """With every channel closed, the connection is closed at once: the client sees the end,
    not a hang."""

    async def scenario() -> bytes:
        listener = _listener()
        dealer_end, process_end = channel_pair()
        process_end.close()
        dealer = Dealer(listener, [dealer_end], lambda _: True)
        dealer.start()
        try:
            reader, writer = await asyncio.open_connection(*listener.getsockname())
            try:
                return await asyncio.wait_for(reader.read(1), 5)
            finally:
                writer.close()
        finally:
            dealer.stop()

    assert asyncio.run(scenario()) == b""


def test_stopping_refuses_new_connections() -> None:
    """Once stopped, the port is closed: a client's connect is refused, not queued."""

    async def scenario() -> tuple[str, int]:
        listener = _listener()
        address: tuple[str, int] = listener.getsockname()
        dealer_end, process_end = channel_pair()
        dealer = Dealer(listener, [dealer_end], lambda _: True)
        dealer.start()
        dealer.stop()
        process_end.close()
        return address

    address = asyncio.run(scenario())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5)


class _FailingOnce(socket.socket):
    """A listening socket whose first accept fails as a process out of descriptors does."""

    failures = 0

    def accept(self) -> tuple[socket.socket, Any]:
        if not _FailingOnce.failures:
            _FailingOnce.failures += 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


def test_a_failed_accept_pauses_and_the_connection_is_still_dealt(monkeypatch: pytest.MonkeyPatch) -> None:
    """An accept that fails (out of descriptors) pauses accepting instead of spinning on the
    waiting connection, which is dealt once accepting resumes."""
    monkeypatch.setattr(handoff, "ACCEPT_PAUSE_S", 0.2)

    async def scenario() -> tuple[int, list[int], float]:
        listener = _FailingOnce(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        dealer_end, process_end = channel_pair()
        taken: list[socket.socket] = []
        stop = receive(process_end, taken.append)
        dealer = Dealer(listener, [dealer_end], lambda _: True)
        dealer.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        client = socket.create_connection(listener.getsockname())
        try:
            while not taken and loop.time() - started < 5:
                await asyncio.sleep(0.01)
            return client.getsockname()[1], [sock.getpeername()[1] for sock in taken], loop.time() - started
        finally:
            dealer.stop()
            stop()
            client.close()
            for sock in taken:
                sock.close()

    port, taken, waited = asyncio.run(scenario())
    assert _FailingOnce.failures == 1
    assert taken == [port]
    assert waited >= 0.2
