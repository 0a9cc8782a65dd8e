#!/usr/bin/env python3
"""Drive an MCP server over Streamable HTTP with the official Python SDK (mcp, pinned in requirements.txt).

Usage:
  client.py --url URL [--scenario basic] [--protocol-version V] [--header K=V ...] [--timeout S]
            [--token WRIT [--dpop-key KEYFILE]]
            [--call NAME --args JSON] [--progress-call NAME --progress-args JSON]
            [--content] [--get-prompt NAME] [--read-resource URI]

Scenario "basic": connect, list every tool (following nextCursor), optionally
call one tool, optionally call one tool with a progress callback. Prints ONE
JSON object on stdout:

  {"protocolVersion": "...", "serverInfo": {...} | null, "tools": ["..."],
   "call": {"isError": bool, "content": [...]} | null,
   "progress": {"notifications": N, "result": {"isError": bool, "content": [...]}} | null}

Any failure exits non-zero with the reason on stderr and nothing on stdout. The SDK turns
an HTTP error answer into a JSON-RPC error and drops its status, so the reason ends with
every HTTP error status seen (and its WWW-Authenticate challenge), e.g. `[HTTP 403 on POST
(WWW-Authenticate: Bearer error="insufficient_scope", ...)]`.

Authorization (Writ's writs, through the SDK's own `auth=` parameter, an httpx2.Auth):
  --token WRIT                      `Authorization: Bearer WRIT` on every request.
  --token WRIT --dpop-key KEYFILE   `Authorization: DPoP WRIT` plus a fresh RFC 9449 proof in
                                    a `DPoP` header on every request, signed with the key in
                                    KEYFILE (`writ agent create --out`: {"agent_id",
                                    "algorithm": "EdDSA"|"ES256", "private_key": PKCS#8 PEM}).
                                    A 401 whose challenge says `use_dpop_nonce` is retried
                                    once with a new proof carrying the `DPoP-Nonce` it sent.

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
import base64
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Generator
from typing import Any

import anyio
import httpx2
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key
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
    parser.add_argument("--content", action="store_true", help="also list prompts, resources and resource templates")
    parser.add_argument("--get-prompt", metavar="NAME", help="get one prompt (no arguments)")
    parser.add_argument("--read-resource", metavar="URI", help="read one resource")
    parser.add_argument("--timeout", type=float, default=60.0, help="whole-run deadline in seconds")
    parser.add_argument("--token", metavar="WRIT", help="send `Authorization: Bearer WRIT` (DPoP with --dpop-key)")
    parser.add_argument(
        "--dpop-key", metavar="KEYFILE", help="with --token: DPoP-bound writ, proofs signed with this agent key file"
    )
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
    if args.dpop_key is not None and args.token is None:
        parser.error("--dpop-key needs --token")
    if args.token is not None:
        args.token = args.token.strip()
    try:
        args.auth = DPoPAuth(args.token, args.dpop_key) if args.dpop_key else WritAuth(args.token)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        parser.error(f"--dpop-key {args.dpop_key}: {exc}")
    return args


class WritAuth(httpx2.Auth):
    """`Authorization: Bearer <writ>` when there is a token; with or without one, notes every
    HTTP error answer, whose status the SDK would otherwise drop on its way to a JSON-RPC error."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self.http_errors: list[str] = []

    def authorize(self, request: httpx2.Request) -> None:
        if self.token is not None:
            request.headers["Authorization"] = f"Bearer {self.token}"

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        self.authorize(request)
        response = yield request
        self.note(response)

    def note(self, response: httpx2.Response) -> None:
        if response.status_code < 400:
            return
        text = f"HTTP {response.status_code} on {response.request.method}"
        challenge = response.headers.get("WWW-Authenticate")
        if challenge:
            text += f" (WWW-Authenticate: {challenge})"
        self.http_errors.append(text)


class DPoPAuth(WritAuth):
    """`Authorization: DPoP <writ>` and a fresh RFC 9449 proof for every request (Writ refuses
    a replayed proof), retried once when the server asks for its nonce."""

    def __init__(self, token: str, key_file: str) -> None:
        super().__init__(token)
        with open(key_file, encoding="utf-8") as f:
            key = json.load(f)
        self.algorithm: str = key["algorithm"]
        if self.algorithm not in ("EdDSA", "ES256"):
            raise ValueError(f"algorithm {self.algorithm!r} is neither EdDSA nor ES256")
        self.private_key = load_pem_private_key(key["private_key"].encode(), password=None)
        self.jwk = jwt.get_algorithm_by_name(self.algorithm).to_jwk(self.private_key.public_key(), as_dict=True)
        self.ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
        self.nonce: str | None = None

    def authorize(self, request: httpx2.Request) -> None:
        request.headers["Authorization"] = f"DPoP {self.token}"
        request.headers["DPoP"] = self.proof(request)

    def proof(self, request: httpx2.Request) -> str:
        claims: dict[str, Any] = {
            "jti": str(uuid.uuid4()),
            "htm": request.method,
            "htu": str(request.url.copy_with(query=None, fragment=None)),
            "iat": int(time.time()),
            "ath": self.ath,
        }
        if self.nonce is not None:
            claims["nonce"] = self.nonce
        headers = {"typ": "dpop+jwt", "jwk": self.jwk}
        return jwt.encode(claims, self.private_key, algorithm=self.algorithm, headers=headers)

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        self.authorize(request)
        response = yield request
        nonce = response.headers.get("DPoP-Nonce")
        if nonce is not None:
            # Kept for later requests too: a server may rotate its nonce on any answer.
            self.nonce = nonce
        wants_nonce = "use_dpop_nonce" in response.headers.get("WWW-Authenticate", "")
        if response.status_code == 401 and wants_nonce and nonce is not None:
            self.authorize(request)
            response = yield request
            self.nonce = response.headers.get("DPoP-Nonce", self.nonce)
        self.note(response)


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
        async with create_mcp_http_client(headers=args.headers, auth=args.auth) as http:
            async with streamable_http_client(args.url, http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    await connect(session, args.protocol_version)
                    out["protocolVersion"] = session.protocol_version
                    out["serverInfo"] = dump(session.server_info)
                    out["tools"] = await list_all_tools(session)

                    if args.call:
                        result = await session.call_tool(args.call, args.args)
                        out["call"] = tool_result(result)

                    if args.content:
                        out["prompts"] = [p.name for p in (await session.list_prompts()).prompts]
                        out["resources"] = [r.uri for r in (await session.list_resources()).resources]
                        templates = (await session.list_resource_templates()).resource_templates
                        out["resourceTemplates"] = [t.uri_template for t in templates]

                    if args.get_prompt:
                        out["prompt"] = dump(await session.get_prompt(args.get_prompt))

                    if args.read_resource:
                        out["resource"] = dump(await session.read_resource(args.read_resource))

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
        seen = f" [{'; '.join(args.auth.http_errors)}]" if args.auth.http_errors else ""
        print(f"client.py: {describe(exc)}{seen}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
