#!/usr/bin/env python3
"""Drive an MCP server over Streamable HTTP with the official Python SDK (mcp, pinned in requirements.txt).

Usage:
  client.py --url URL [--scenario basic] [--protocol-version V] [--header K=V ...] [--timeout S]
            [--call NAME --args JSON] [--progress-call NAME --progress-args JSON]

Scenario "basic": connect, list every tool (following nextCursor), optionally
call one tool, optionally call one tool with a progress callback. Prints ONE
JSON object on stdout:

  {"protocolVersion": "...", "serverInfo": {...} | null, "tools": ["..."],
   "call": {"isError": bool, "content": [...]} | null,
   "progress": {"notifications": N, "result": {"isError": bool, "content": [...]}} | null}

Any failure exits non-zero with the reason on stderr and nothing on stdout.

Protocol revisions (mcp 2.3.0, see mcp_types.version):
  handshake era (initialize + Mcp-Session-Id): 2024-11-05, 2025-03-26, 2025-06-18, 2025-11-25
  stateless era (server/discover + per-request _meta):  2026-07-28
--protocol-version selects how the client connects:
  auto (default)   what mcp.client.Client does by default: probe server/discover at
                   2026-07-28, fall back to initialize at 2025-11-25.
  2026-07-28       server/discover only; fails if the server is session-era only.
  anything else    initialize offering exactly that string. The SDK has no knob for
                   this, so we rebind the module constant ClientSession.initialize reads.
                   Unknown strings are sent as-is, which is handy for testing a server's
                   fallback; the SDK still rejects a reply outside the handshake list.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio
import mcp.client.session as client_session
from mcp.client._probe import negotiate_auto
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import PaginatedRequestParams
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

# Guards against a server (or gateway) that hands out cursors forever.
MAX_PAGES = 1000


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Official Python SDK interop client for Writ tests.")
    parser.add_argument("--url", required=True)
    parser.add_argument("--protocol-version", default="auto", help="auto (default), 2026-07-28, or a handshake revision")
    parser.add_argument("--header", action="append", default=[], metavar="K=V", help="extra HTTP header (repeatable)")
    parser.add_argument("--scenario", default="basic", choices=["basic"], help="only basic for now (default)")
    parser.add_argument("--call", metavar="NAME")
    parser.add_argument("--args", default="{}", metavar="JSON", help="arguments for --call")
    parser.add_argument("--progress-call", metavar="NAME")
    parser.add_argument(
        "--progress-args", metavar="JSON", help="arguments for --progress-call (default: --args when there is no --call)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="whole-run deadline in seconds")
    args = parser.parse_args(argv)

    headers: dict[str, str] = {}
    for item in args.header:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--header expects K=V, got {item!r}")
        headers[key] = value
    args.headers = headers
    if args.progress_args is None:
        args.progress_args = args.args if args.call is None else "{}"
    for flag in ("args", "progress_args"):
        try:
            value = json.loads(getattr(args, flag))
        except json.JSONDecodeError as exc:
            parser.error(f"--{flag.replace('_', '-')} is not valid JSON: {exc}")
        if not isinstance(value, dict):
            parser.error(f"--{flag.replace('_', '-')} must be a JSON object")
        setattr(args, flag, value)
    return args


def dump(model: Any) -> Any:
    """Wire-shaped JSON (camelCase, no nulls) for SDK pydantic models."""
    if model is None:
        return None
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


def tool_result(result: Any) -> dict[str, Any]:
    return {
        "isError": bool(getattr(result, "is_error", False)),
        "content": [dump(block) for block in getattr(result, "content", [])],
    }


async def connect(session: ClientSession, version: str) -> None:
    if version == "auto":
        await negotiate_auto(session)
    elif version in MODERN_PROTOCOL_VERSIONS:
        client_session.LATEST_MODERN_VERSION = version
        await session.discover()
    else:
        client_session.LATEST_HANDSHAKE_VERSION = version
        await session.initialize()


async def list_all_tools(session: ClientSession) -> list[str]:
    names: list[str] = []
    cursor: str | None = None
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        params = PaginatedRequestParams(cursor=cursor) if cursor is not None else None
        page = await session.list_tools(params=params)
        names.extend(tool.name for tool in page.tools)
        cursor = page.next_cursor
        if cursor is None:
            return names
        if cursor in seen:
            raise RuntimeError(f"tools/list pagination loops (cursor {cursor!r} repeated)")
        seen.add(cursor)
    raise RuntimeError(f"tools/list did not finish within {MAX_PAGES} pages")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"protocolVersion": None, "serverInfo": None, "tools": [], "call": None, "progress": None}
    with anyio.fail_after(args.timeout):
        async with create_mcp_http_client(headers=args.headers) as http:
            async with streamable_http_client(args.url, http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    await connect(session, args.protocol_version)
                    out["protocolVersion"] = session.protocol_version
                    out["serverInfo"] = dump(session.server_info)
                    out["tools"] = await list_all_tools(session)

                    if args.call:
                        result = await session.call_tool(args.call, args.args)
                        out["call"] = tool_result(result)

                    if args.progress_call:
                        received = 0

                        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                            nonlocal received
                            received += 1

                        result = await session.call_tool(
                            args.progress_call, args.progress_args, progress_callback=on_progress
                        )
                        out["progress"] = {"notifications": received, "result": tool_result(result)}
    return out


def describe(exc: BaseException) -> str:
    """Flatten anyio's exception groups so stderr names the real cause."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in exc.exceptions)
    if isinstance(exc, TimeoutError):
        return "timed out"
    # Some transport errors (httpx2.ReadError on a dropped connection) have empty text.
    return f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)


def main() -> int:
    args = parse_args(sys.argv[1:])
    try:
        out = anyio.run(run, args)
    except BaseException as exc:  # noqa: BLE001 - report everything, exit non-zero
        if isinstance(exc, KeyboardInterrupt):
            raise
        print(f"client.py: {describe(exc)}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
