#!/usr/bin/env node
// Drive an MCP server over Streamable HTTP with the official TypeScript SDK
// (@modelcontextprotocol/sdk, pinned in package.json). Same CLI and output as client.py:
//
//   node client.mjs --url URL [--scenario basic] [--protocol-version V] [--header K=V ...] [--timeout S]
//                   [--call NAME --args JSON] [--progress-call NAME --progress-args JSON]
//                   [--content] [--get-prompt NAME] [--read-resource URI]
//
// Prints ONE JSON object on stdout:
//   {"protocolVersion", "serverInfo", "tools": [names], "call": {isError, content} | null,
//    "progress": {"notifications": N, "result": {isError, content}} | null}
// Any failure exits non-zero with the reason on stderr and nothing on stdout.
//
// Protocol revisions (sdk 1.32.2, SUPPORTED_PROTOCOL_VERSIONS in dist/esm/types.js):
//   2025-11-25 (LATEST_PROTOCOL_VERSION, what it offers by default), 2025-06-18,
//   2025-03-26, 2024-11-05, 2024-10-07. All are initialize/session era; this SDK line
//   does not speak the stateless 2026-07-28 revision.
// --protocol-version:
//   auto (default)  the SDK's own behaviour: initialize offering 2025-11-25.
//   anything else   initialize offering exactly that string. Client.connect() reads the
//                   imported LATEST_PROTOCOL_VERSION binding, which an ES module cannot
//                   reassign, so a transport subclass rewrites the outgoing initialize
//                   instead. Everything after it (the MCP-Protocol-Version header, the
//                   check of the server's answer) is the SDK's own logic. Unknown strings
//                   are sent as-is, handy for testing a server's fallback; the SDK still
//                   rejects a reply outside SUPPORTED_PROTOCOL_VERSIONS.

import { parseArgs } from "node:util";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CallToolResultSchema } from "@modelcontextprotocol/sdk/types.js";

// Guards against a server (or gateway) that hands out cursors forever.
const MAX_PAGES = 1000;

function fail(message) {
  process.stderr.write(`client.mjs: ${message}\n`);
  process.exit(1);
}

function parseCli(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        url: { type: "string" },
        "protocol-version": { type: "string", default: "auto" },
        header: { type: "string", multiple: true, default: [] },
        scenario: { type: "string", default: "basic" },
        call: { type: "string" },
        args: { type: "string", default: "{}" },
        "progress-call": { type: "string" },
        // Defaults to --args when there is no --call, so `--progress-call N --args J` works.
        "progress-args": { type: "string" },
        timeout: { type: "string", default: "60" },
        // Also list prompts, resources and resource templates.
        content: { type: "boolean", default: false },
        "get-prompt": { type: "string" },
        "read-resource": { type: "string" },
      },
    }));
  } catch (err) {
    fail(err.message);
  }
  if (!values.url) fail("--url is required");
  if (values.scenario !== "basic") fail("--scenario must be 'basic'");

  const headers = {};
  for (const item of values.header) {
    const eq = item.indexOf("=");
    if (eq <= 0) fail(`--header expects K=V, got ${JSON.stringify(item)}`);
    headers[item.slice(0, eq)] = item.slice(eq + 1);
  }
  values["progress-args"] ??= values.call === undefined ? values.args : "{}";
  const json = (flag) => {
    let parsed;
    try {
      parsed = JSON.parse(values[flag]);
    } catch (err) {
      fail(`--${flag} is not valid JSON: ${err.message}`);
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      fail(`--${flag} must be a JSON object`);
    }
    return parsed;
  };
  const timeout = Number(values.timeout);
  if (!(timeout > 0)) fail("--timeout must be a positive number of seconds");

  return {
    url: values.url,
    protocolVersion: values["protocol-version"],
    headers,
    call: values.call,
    callArgs: json("args"),
    progressCall: values["progress-call"],
    progressArgs: json("progress-args"),
    content: values.content,
    getPrompt: values["get-prompt"],
    readResource: values["read-resource"],
    timeoutMs: timeout * 1000,
  };
}

// Offers a chosen protocol revision in initialize; see the header comment for why this
// lives in the transport rather than the Client.
class VersionPinnedTransport extends StreamableHTTPClientTransport {
  constructor(url, opts, offeredVersion) {
    super(url, opts);
    this.offeredVersion = offeredVersion;
  }

  send(message, options) {
    if (message.method === "initialize") {
      message = { ...message, params: { ...message.params, protocolVersion: this.offeredVersion } };
    }
    return super.send(message, options);
  }
}

const toolResult = (result) => ({ isError: result.isError === true, content: result.content ?? [] });

async function listAllTools(client) {
  const names = [];
  const seen = new Set();
  let cursor;
  for (let page = 0; page < MAX_PAGES; page++) {
    const result = await client.listTools(cursor === undefined ? undefined : { cursor });
    names.push(...result.tools.map((tool) => tool.name));
    cursor = result.nextCursor;
    if (cursor === undefined) return names;
    if (seen.has(cursor)) throw new Error(`tools/list pagination loops (cursor ${JSON.stringify(cursor)} repeated)`);
    seen.add(cursor);
  }
  throw new Error(`tools/list did not finish within ${MAX_PAGES} pages`);
}

async function run(opts) {
  const transportOpts = { requestInit: { headers: opts.headers } };
  const transport =
    opts.protocolVersion === "auto"
      ? new StreamableHTTPClientTransport(new URL(opts.url), transportOpts)
      : new VersionPinnedTransport(new URL(opts.url), transportOpts, opts.protocolVersion);
  const client = new Client({ name: "writ-interop-ts", version: "1.0.0" });
  // Per-request timeouts follow the whole-run deadline so a slow tool is not cut off at
  // the SDK's 60 s default before the caller's own limit.
  const requestOptions = { timeout: opts.timeoutMs };

  const out = { protocolVersion: null, serverInfo: null, tools: [], call: null, progress: null };
  await client.connect(transport, requestOptions);
  out.protocolVersion = transport.protocolVersion ?? null;
  out.serverInfo = client.getServerVersion() ?? null;
  out.tools = await listAllTools(client);

  if (opts.call) {
    const result = await client.callTool({ name: opts.call, arguments: opts.callArgs }, CallToolResultSchema, requestOptions);
    out.call = toolResult(result);
  }

  if (opts.content) {
    out.prompts = (await client.listPrompts(undefined, requestOptions)).prompts.map((p) => p.name);
    out.resources = (await client.listResources(undefined, requestOptions)).resources.map((r) => r.uri);
    out.resourceTemplates = (await client.listResourceTemplates(undefined, requestOptions)).resourceTemplates.map(
      (t) => t.uriTemplate,
    );
  }
  if (opts.getPrompt) {
    out.prompt = await client.getPrompt({ name: opts.getPrompt }, requestOptions);
  }
  if (opts.readResource) {
    out.resource = await client.readResource({ uri: opts.readResource }, requestOptions);
  }

  if (opts.progressCall) {
    let notifications = 0;
    const result = await client.callTool({ name: opts.progressCall, arguments: opts.progressArgs }, CallToolResultSchema, {
      ...requestOptions,
      onprogress: () => {
        notifications += 1;
      },
    });
    out.progress = { notifications, result: toolResult(result) };
  }

  // End the session explicitly (DELETE), as the Python SDK does on exit. A server or
  // gateway that refuses is worth a warning, not a failed run.
  try {
    await transport.terminateSession();
  } catch (err) {
    process.stderr.write(`client.mjs: warning: session termination failed: ${err.message}\n`);
  }
  await client.close();
  return out;
}

const opts = parseCli(process.argv.slice(2));
const deadline = setTimeout(() => fail("timed out"), opts.timeoutMs);
try {
  const out = await run(opts);
  clearTimeout(deadline);
  process.stdout.write(JSON.stringify(out) + "\n");
  process.exit(0);
} catch (err) {
  fail(err?.message ?? String(err));
}
