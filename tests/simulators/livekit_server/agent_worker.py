"""A minimal livekit-agents worker (the public `AgentServer` API of 1.8.9) for the stand-in's
tests: each job joins its room and says hello on the data channel with the job's metadata.

`python -m tests.simulators.livekit_server.agent_worker URL KEY SECRET`
"""

from __future__ import annotations

import asyncio
import json
import sys

from livekit.agents import AgentServer, JobContext

AGENT_NAME = "voice-agent"
HELLO_TOPIC = "agent.hello"


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    hello = {"job_id": ctx.job.id, "metadata": ctx.job.metadata, "room": ctx.room.name}
    await ctx.room.local_participant.publish_data(json.dumps(hello), topic=HELLO_TOPIC)


def main(url: str, key: str, secret: str) -> None:
    server = AgentServer(
        ws_url=url, api_key=key, api_secret=secret, host="127.0.0.1", num_idle_processes=1
    )
    server.rtc_session(entrypoint, agent_name=AGENT_NAME)
    asyncio.run(server.run(devmode=True))


if __name__ == "__main__":
    main(*sys.argv[1:4])
