"""Start-up time: process spawn → first 200 from /healthz, `voicegw serve` with no environment,
against a bare Starlette+uvicorn app started the same way (the floor of any Python gateway).

    .venv/bin/python bench/gateway_startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

import httpx

BARE_APP = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
async def ok(request): return JSONResponse({"status": "ok"})
uvicorn.run(Starlette(routes=[Route("/healthz", ok)]), host="127.0.0.1",
            port=int(sys.argv[1]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def time_to_healthy(command: list[str], port: int) -> float:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VOICE", "GATEWAY_", "LIVEKIT_", "OPENAI_"))
    }
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    rows: dict[str, list[float]] = {"bare starlette+uvicorn": [], "voicegw serve (no env)": []}
    for _ in range(runs):  # interleaved, so load on the machine hits both alike
        port = free_port()
        rows["bare starlette+uvicorn"].append(
            time_to_healthy([sys.executable, "-c", BARE_APP, str(port)], port)
        )
        port = free_port()
        rows["voicegw serve (no env)"].append(
            time_to_healthy([sys.executable, "-m", "voicegw", "serve", "--port", str(port)], port)
        )
    base_median, _ = summary(rows["bare starlette+uvicorn"])
    print(f"start-up to first /healthz 200, {runs} runs each")
    print(f"{'process':<26} {'median s':>9} {'p95 s':>7} {'x bare':>7}")
    for name, samples in rows.items():
        median, p95 = summary(samples)
        print(f"{name:<26} {median:>9.3f} {p95:>7.3f} {median / base_median:>7.2f}")


if __name__ == "__main__":
    main()
