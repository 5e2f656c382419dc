"""`/readyz`'s reachability checks against real sockets of 127.0.0.1: a connection each time
the remembered outcome is stale, one for concurrent checks, and why a check failed."""

from __future__ import annotations

import asyncio
import socket

from gateway.reachability import Reachability
from tests.stack import FakeClock


async def test_checks_are_remembered_and_shared() -> None:
    accepted: asyncio.Queue[int] = asyncio.Queue()  # each connection's client port

    def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.put_nowait(writer.get_extra_info("peername")[1])
        writer.close()

    server = await asyncio.start_server(count, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clock = FakeClock()
    target = Reachability(f"wss://127.0.0.1:{port}/rtc", cache_s=10, clock=clock)
    try:
        first = await asyncio.gather(target.check(), target.check(), target.check())
        assert all(reach.ok for reach in first)
        clock.advance(9)
        assert (await target.check()).ok
        clock.advance(1)
        assert (await target.check()).ok
        # A connection of our own is accepted after every earlier one: count those before it.
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        ours = writer.get_extra_info("sockname")[1]
        writer.close()
        before = 0
        async with asyncio.timeout(5):
            while await accepted.get() != ours:
                before += 1
        assert before == 2  # the first check and the one after the cache ran out
    finally:
        server.close()
        await server.wait_closed()


async def test_a_closed_port_is_unreachable_and_says_where() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        reach = await Reachability(f"ws://127.0.0.1:{port}").check()
    assert not reach.ok
    assert reach.problem == f"127.0.0.1:{port}: connection refused"


def test_default_ports_follow_the_scheme() -> None:
    assert Reachability("wss://lk.example.com").target == "lk.example.com:443"
    assert Reachability("ws://lk.example.com/rtc").target == "lk.example.com:80"

