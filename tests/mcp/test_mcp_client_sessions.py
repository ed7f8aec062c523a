"""The MCP client keeps one session per external server: listing and calls reuse one stdio
process, a killed server is started again on the next call (which succeeds), and closing the
registry ends the process. The server is a real stdio MCP server (official SDK) that reports
its PID and records each start."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from jongleur.mcp.client import MCPToolRegistry
from jongleur.mcp.config import MCPServerConfig

PID_SERVER = """
import os, sys
from mcp.server import MCPServer

with open(sys.argv[1], "a") as starts:
    starts.write(f"{os.getpid()}\\n")
server = MCPServer("pid")


@server.tool(description="The process id of this server.")
def pid() -> str:
    return str(os.getpid())


server.run("stdio")
"""


def _gone(pid: int, within_s: float = 30.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


async def test_one_process_reused_and_restarted_after_a_kill(tmp_path: Path) -> None:
    script, starts = tmp_path / "pid_server.py", tmp_path / "starts.txt"
    script.write_text(PID_SERVER)
    config = MCPServerConfig(name="proc", command=[sys.executable, str(script), str(starts)], timeout_s=60)
    registry = MCPToolRegistry([config], tmp_path / "approvals.json")
    try:
        tool = (await registry.tools())["proc.pid"]
        await registry.approve(tool.id, tool.sha256)
        first, _ = await registry.call(tool, {})
        second, _ = await registry.call(tool, {})
        together = await asyncio.gather(*(registry.call(tool, {}) for _ in range(3)))  # concurrent, one session
        assert first == second and {text for text, _ in together} == {first}
        assert starts.read_text().split() == [first]  # the listing and five calls: one process
        assert registry.connections["proc"].opened == 1

        os.kill(int(first), signal.SIGKILL)
        assert _gone(int(first))
        third, is_error = await registry.call(tool, {})  # the dead session is noticed before the call is sent
        assert not is_error and third != first and starts.read_text().split() == [first, third]
        assert (await registry.call(tool, {}))[0] == third and registry.connections["proc"].opened == 2
    finally:
        await registry.aclose()
    assert _gone(int(third)), "closing the registry ends the stdio server"
