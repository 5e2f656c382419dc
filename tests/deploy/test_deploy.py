"""The image and the Railway configuration, checked without a Docker engine: the Dockerfile
parsed by Docker's own parser (the `dockerfile` package), the entry point and health check
scripts run for real, railway.json validated field by field."""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import json
import os
import re
import stat
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from simulators.server import RunningServer
from tests.stack import gateway_env, served_gateway

REPO = Path(__file__).resolve().parents[2]


class _Command(Protocol):
    cmd: str
    flags: tuple[str, ...]
    value: tuple[str, ...]
    json: bool


@dataclass(frozen=True)
class Instruction:
    cmd: str
    flags: tuple[str, ...]
    value: tuple[str, ...]
    json: bool


def parse_dockerfile(path: Path) -> list[Instruction]:
    parser = importlib.import_module("dockerfile")  # a compiled wrapper of Docker's parser
    commands = cast(list[_Command], parser.parse_file(str(path)))
    return [Instruction(c.cmd.upper(), tuple(c.flags), tuple(c.value), c.json) for c in commands]


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    found: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.cmd == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def dockerignored() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    build, runtime = stages(parse_dockerfile(REPO / "Dockerfile"))
    assert build[0].value[0] == runtime[0].value[0] == "python:3.11-slim"
    assert build[0].value[1:] == ("AS", "build")

    # The runtime stage takes only the venv and the app from the build stage.
    copies = [i for i in runtime if i.cmd == "COPY"]
    assert copies and all("--from=build" in c.flags for c in copies)
    assert {c.value[0] for c in copies} == {"/opt/venv", "/app"}
    assert not any("build-essential" in " ".join(i.value) for i in runtime)

    users = [i for i in runtime if i.cmd == "USER"]
    assert users, "the runtime stage must switch to a non-root user"
    user = users[-1].value[0].split(":")[0]
    assert user not in ("root", "0")
    creates_user = " ".join(" ".join(i.value) for i in runtime if i.cmd == "RUN")
    assert "useradd --system --gid app" in creates_user and user == "app"
    assert runtime.index(users[-1]) > max(runtime.index(c) for c in copies)


def test_every_copied_path_exists_and_reaches_the_build_context() -> None:
    build = stages(parse_dockerfile(REPO / "Dockerfile"))[0]
    ignored = dockerignored()
    for copy in (i for i in build if i.cmd == "COPY" and not i.flags):
        for source in copy.value[:-1]:
            assert (REPO / source).exists(), source
            assert source not in ignored, f"{source} is excluded by .dockerignore"
    for secret_or_state in (".env", ".venv", ".git", "node_modules", "tests"):
        assert secret_or_state in ignored


def test_health_check_and_entry_point() -> None:
    runtime = stages(parse_dockerfile(REPO / "Dockerfile"))[-1]
    [health] = [i for i in runtime if i.cmd == "HEALTHCHECK"]
    assert health.value[0] == "CMD"
    # The slim image has no curl: the check is the standard-library script.
    assert health.value[1:] == ("python", "/app/deploy/healthcheck.py")
    flags = dict(f.lstrip("-").split("=", 1) for f in health.flags)
    assert {"interval", "timeout", "start-period", "retries"} <= set(flags)
    assert "/healthz" in (REPO / "deploy" / "healthcheck.py").read_text()

    [entry] = [i for i in runtime if i.cmd == "ENTRYPOINT"]
    assert entry.json and entry.value == ("/app/deploy/entrypoint.sh",)
    script = REPO / "deploy" / "entrypoint.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    env = {
        i.value[k]: i.value[k + 1]
        for i in runtime
        if i.cmd == "ENV"
        for k in range(0, len(i.value) - 1, 2)
    }
    assert env.get("SERVICE") == "gateway" and env.get("PORT") == "8080"
    # The SQLite history goes where the unprivileged user may write (/app is root's).
    assert env.get("VOICEGW_DATA_DIR") == "/home/app/data"
    assert "/opt/venv/bin" in env.get("PATH", "")


def test_dependencies_come_from_the_lock_in_a_layer_before_the_code() -> None:
    build = stages(parse_dockerfile(REPO / "Dockerfile"))[0]
    copies = [i for i in build if i.cmd == "COPY"]
    [install] = [i for i in build if i.cmd == "RUN" and "requirements.lock" in " ".join(i.value)]
    command = " ".join(install.value)
    assert "pip install --require-hashes -r requirements.lock" in command
    # Only the lock is in the build context before the dependencies are installed, so a code
    # change leaves that layer cached.
    before = [c for c in copies if build.index(c) < build.index(install)]
    assert [c.value for c in before] == [("requirements.lock", "./")]
    after = [i for i in build[build.index(install) + 1 :] if i.cmd == "RUN"]
    project = [i for i in after if "pip install" in " ".join(i.value)]
    assert project and all("--no-deps" in " ".join(i.value) for i in project)


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: int
    via: frozenset[str]


PROJECT = "voice-gateway (pyproject.toml)"


def read_lock(path: Path) -> dict[str, Pin]:
    """`uv pip compile --generate-hashes --annotation-style line` output, by package name."""
    pins: dict[str, Pin] = {}
    text = path.read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2]):
        head = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", block)
        assert head, block[:80]
        via = re.search(r"# via (.+)", block)
        assert via, f"{head.group(1)}: no via"
        pins[canonicalize_name(head.group(1))] = Pin(
            head.group(2),
            block.count("--hash=sha256:"),
            frozenset(str(v if v == PROJECT else canonicalize_name(v)) for v in via[1].split(", ")),
        )
    return pins


def test_the_lock_is_in_sync_with_pyproject() -> None:
    """What `make lock` wrote still resolves pyproject.toml's dependencies: each direct one is
    pinned within its range, with its extras; nothing is pinned for the project that it no
    longer asks for; every pin is needed by something pinned; every pin has its hashes."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    direct = {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}
    pins = read_lock(REPO / "requirements.lock")
    for name, requirement in direct.items():
        assert name in pins, f"{name} is not in requirements.lock: run make lock"
        pin = pins[name]
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"{name}=={pin.version} is outside {requirement.specifier}: run make lock"
        )
        assert PROJECT in pin.via, f"{name} is not pinned for the project: run make lock"
        for extra in requirement.extras:  # the installed metadata is the pinned version's
            assert importlib.metadata.version(name) == pin.version
            for needed in map(Requirement, importlib.metadata.requires(name) or []):
                if needed.marker is not None and needed.marker.evaluate({"extra": extra}):
                    assert canonicalize_name(needed.name) in pins, f"{name}[{extra}]: run make lock"
    for pinned, pin in pins.items():
        assert pin.hashes > 0, f"{pinned} has no hash"
        assert (PROJECT in pin.via) == (pinned in direct), f"{pinned}: run make lock"
        assert pin.via - {PROJECT} <= set(pins), f"{pinned} is needed by what is not pinned"


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ("gateway", "serve --host 0.0.0.0 --port 4321"),
        ("agent", "agent start"),
    ],
)
async def test_entry_point_picks_the_process_from_service(
    tmp_path: Path, service: str, expected: str
) -> None:
    fake = tmp_path / "voicegw"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "SERVICE": service, "PORT": "4321"}
    code, out, err = await _run(str(REPO / "deploy" / "entrypoint.sh"), env=env)
    assert (code, out.strip()) == (0, expected), err


async def test_entry_point_refuses_an_unknown_service(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "SERVICE": "worker"}
    code, _, err = await _run(str(REPO / "deploy" / "entrypoint.sh"), env=env)
    assert code == 64
    assert "SERVICE must be 'gateway' or 'agent'" in err


async def test_health_check_script_against_the_gateway() -> None:
    script = str(REPO / "deploy" / "healthcheck.py")
    async with served_gateway(gateway_env()) as gw:
        ok = await _run(sys.executable, script, env=_port_env(gw.server))
        assert ok[0] == 0, ok[2]
    down = await _run(sys.executable, script, env=_port_env(gw.server))
    assert down[0] == 1


@pytest.mark.parametrize(
    ("path", "replicas"),
    [("railway.json", 2), ("deploy/railway.agent.json", 2)],
    ids=["gateway", "agent"],
)
def test_railway_json(path: str, replicas: int) -> None:
    """The gateway service's config (`railway.json`: two replicas sharing Railway's Redis) and
    the agent service's (its config path set to `deploy/railway.agent.json`)."""
    config: dict[str, Any] = json.loads((REPO / path).read_text())
    assert config["$schema"] == "https://railway.com/railway.schema.json"
    assert set(config) == {"$schema", "build", "deploy"}
    build, deploy = config["build"], config["deploy"]
    assert build == {"builder": "DOCKERFILE", "dockerfilePath": "Dockerfile"}
    assert (REPO / build["dockerfilePath"]).is_file()
    known = {
        "numReplicas",
        "sleepApplication",
        "restartPolicyType",
        "restartPolicyMaxRetries",
        "healthcheckPath",
        "healthcheckTimeout",
        "startCommand",
    }
    assert set(deploy) <= known, set(deploy) - known
    assert deploy["restartPolicyType"] == "ON_FAILURE"
    assert isinstance(deploy["restartPolicyMaxRetries"], int)
    assert deploy["restartPolicyMaxRetries"] > 0
    assert deploy["numReplicas"] == replicas and deploy["sleepApplication"] is False
    # Both services build the same image: `SERVICE` picks the process, and the image's entry
    # point and HEALTHCHECK decide how each starts and is checked.
    assert "startCommand" not in deploy and "healthcheckPath" not in deploy


def _port_env(server: RunningServer) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "SERVICE": "gateway", "PORT": str(server.port)}


async def _run(*argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
