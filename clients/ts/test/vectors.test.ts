/**
 * The TypeScript client against the real Rust runtime over its gRPC Unix socket: the version
 * handshake, every shared vector (contract/vectors/boundary.json), one InvokeStream with
 * progress events delivered one by one, CloseSession, and the gRPC status of a contract fault.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";

import * as grpc from "@grpc/grpc-js";

import {
  checkContract,
  ContractVersionError,
  HttpMethod,
  ServingStatus,
} from "../src/client.js";
import { authOf, check, loadVectors, send, type Sessions } from "../src/vectors.js";
import { ROOT, startStack, type Stack } from "./harness.js";

const file = loadVectors(join(ROOT, "contract", "vectors", "boundary.json"));
let stack: Stack;
let sessions: Sessions;

async function initialize(serverId: string): Promise<string> {
  const envelope = (body: object, sessionId = "") => ({
    method: HttpMethod.POST,
    headers: { sessionId, accept: file.default_accept, contentType: "application/json" },
    serverId,
    auth: authOf(file.auth),
    body: Buffer.from(JSON.stringify(body)),
  });
  const init = await stack.client.invoke({
    envelope: envelope({
      jsonrpc: "2.0",
      id: 0,
      method: "initialize",
      params: {
        protocolVersion: "2025-11-25",
        capabilities: {},
        clientInfo: { name: "ts-vectors", version: "1" },
      },
    }),
  });
  assert.equal(init.head?.httpStatus, 200);
  const sid = init.head?.headers.find((h) => h.name === "mcp-session-id")?.value;
  assert.ok(sid, "initialize returned no mcp-session-id");
  const note = await stack.client.invoke({
    envelope: envelope({ jsonrpc: "2.0", method: "notifications/initialized" }, sid),
  });
  assert.equal(note.head?.httpStatus, 202);
  return sid;
}

before(async () => {
  stack = await startStack();
  sessions = { live: await initialize(""), scoped: await initialize("echo-only") };
});

after(async () => {
  await stack?.stop();
});

test("HealthCheck: serving, contract major 1", async () => {
  const h = await stack.client.healthCheck({ deadlineMs: 5_000 });
  assert.equal(h.status, ServingStatus.SERVING);
  assert.match(h.contractVersion, /^1\.\d+$/);
  assert.equal(h.contractVersion, file.contract_version);
  checkContract(h.contractVersion);
  assert.ok(h.features.includes("grpc-uds"));
});

for (const v of file.cases) {
  test(`vector: ${v.name}`, async () => {
    const reply = await send(stack.client, file, v, sessions);
    check(v, reply);
    if (v.expect.sse) {
      // Head, then each progress notification and the result as separate stream messages.
      assert.ok(reply.parts >= v.expect.sse.progress + 1, `${reply.parts} stream messages`);
    }
  });
}

test("InvokeStream delivers progress events one by one, before the result", async () => {
  const body = {
    jsonrpc: "2.0",
    id: 77,
    method: "tools/call",
    params: {
      name: "progress",
      arguments: { steps: 3, interval_ms: 50 },
      _meta: { progressToken: "ts-1" },
    },
  };
  const kinds: string[] = [];
  for await (const m of stack.client.invokeStream({
    envelope: {
      method: HttpMethod.POST,
      headers: { sessionId: sessions.live, accept: file.default_accept },
      auth: authOf(file.auth),
      body: Buffer.from(JSON.stringify(body)),
    },
  })) {
    if (m.part.case === "head") {
      assert.equal(m.part.value.httpStatus, 200);
      kinds.push("head");
    } else if (m.part.case === "event") {
      const data = JSON.parse(m.part.value.data) as { method?: string; id?: number };
      kinds.push(data.method ?? `result ${data.id}`);
    }
  }
  assert.equal(kinds[0], "head");
  assert.equal(kinds.at(-1), "result 77");
  assert.equal(kinds.filter((k) => k === "notifications/progress").length, 3, kinds.join(", "));
});

test("a GET sent to Invoke is INVALID_ARGUMENT (a contract fault, not an MCP outcome)", async () => {
  await assert.rejects(
    stack.client.invoke({
      envelope: {
        method: HttpMethod.GET,
        headers: { sessionId: sessions.live, accept: "text/event-stream" },
        auth: authOf(file.auth),
      },
    }),
    (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT,
  );
});

test("CloseSession ends the session; a second close is 404 / -32001", async () => {
  const close = () =>
    stack.client.closeSession({
      envelope: {
        method: HttpMethod.DELETE,
        headers: { sessionId: sessions.live },
        auth: authOf(file.auth),
      },
    });
  const first = await close();
  assert.equal(first.head?.httpStatus, 200);
  const second = await close();
  assert.equal(second.head?.httpStatus, 404);
  const err = JSON.parse(Buffer.from(second.body).toString("utf8")) as { error: { code: number } };
  assert.equal(err.error.code, -32001);
});

test("the handshake refuses a runtime of another major", async () => {
  const other = await startStack({ MCP_RUNTIME_TEST_CONTRACT_VERSION: "2.0" });
  try {
    const h = await other.client.healthCheck({ deadlineMs: 5_000 });
    assert.equal(h.contractVersion, "2.0");
    assert.throws(() => checkContract(h.contractVersion), ContractVersionError);
  } finally {
    await other.stop();
  }
});
