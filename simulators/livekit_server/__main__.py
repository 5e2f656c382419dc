"""`python -m simulators.livekit_server [--host H] [--port P] [--keys key:secret]`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from .auth import KeyRing
from .server import LiveKitServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators.livekit_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7880)
    parser.add_argument("--keys", default="devkey:secret", help="key:secret[,key:secret]")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    try:
        keys = KeyRing.parse(args.keys)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    asyncio.run(_run(LiveKitServer(keys), args.host, args.port))


async def _run(server: LiveKitServer, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with server.serve(host, port):
        print(f"livekit stand-in listening on {server.ws_url}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    main()
