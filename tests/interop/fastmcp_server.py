#!/usr/bin/env python3
"""A small upstream MCP server for Writ's integration tests, built on the official Python SDK.

Usage: fastmcp_server.py --port P [--json-response] [--stateless]

Serves Streamable HTTP at http://127.0.0.1:P/mcp and prints exactly one line,
`READY http://127.0.0.1:P/mcp`, on stdout once the socket is accepting
connections.

The file keeps its historical name, but the pinned SDK is mcp 2.x, where
`mcp.server.fastmcp.FastMCP` became `mcp.server.mcpserver.MCPServer` (same
decorator API; importing the old path raises ModuleNotFoundError). The same
endpoint serves the session era (initialize + Mcp-Session-Id, revisions
2024-11-05 .. 2025-11-25) and the stateless 2026-07-28 era (server/discover,
per-request _meta); see README.md.

Tools (chosen to exercise Writ's failure handling, not MCP features):
  echo(text)            -> text
  add(a, b)             -> a + b
  slow_progress(steps)  -> "done", after one progress notification per step
  crash()               -> the process exits with status 3 mid-request
  hang()                -> never answers (sleeps an hour)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer(name="writ-interop-python", version="1.0.0", log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Return the given text unchanged."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def slow_progress(steps: int, ctx: Context) -> str:
    """Report progress once per step, 50 ms apart, then return "done"."""
    for step in range(1, steps + 1):
        await asyncio.sleep(0.05)
        await ctx.report_progress(step, steps, f"step {step}/{steps}")
    return "done"


@server.tool()
def crash() -> str:
    """Kill the server process without answering (simulates an upstream crash)."""
    # os._exit skips every cleanup path, so the in-flight request dies with its
    # TCP connection, exactly like a real crash.
    os._exit(3)


@server.tool()
async def hang() -> str:
    """Never answer in any reasonable time (simulates a stuck upstream)."""
    await asyncio.sleep(3600)
    return "woke up"


class _ReadyServer(uvicorn.Server):
    """uvicorn server that announces the bound URL once the socket is listening.

    Printing after startup() (rather than before run()) means a test can wait
    for the READY line instead of polling the port.
    """

    async def startup(self, sockets=None) -> None:  # type: ignore[override]
        await super().startup(sockets=sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1]
            print(f"READY http://127.0.0.1:{port}/mcp", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--json-response", action="store_true", help="answer POSTs with JSON instead of SSE")
    parser.add_argument("--stateless", action="store_true", help="no Mcp-Session-Id (stateless_http=True)")
    args = parser.parse_args()

    # host="127.0.0.1" also turns on the SDK's DNS-rebinding protection, which
    # only admits Host/Origin of 127.0.0.1:*, localhost:* and [::1]:*.
    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        json_response=args.json_response,
        stateless_http=args.stateless,
        host="127.0.0.1",
    )
    # Access logs would go to stdout and interleave with the READY line.
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    _ReadyServer(config).run()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
