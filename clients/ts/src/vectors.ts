/**
 * The shared boundary vectors (contract/vectors/boundary.json, format in
 * contract/vectors/README.md) read by the TypeScript client: each case becomes one
 * `RequestEnvelope`, is sent with the RPC a client would choose, and its answer is checked.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import type { MessageInitShape } from "@bufbuild/protobuf";

import {
  HttpMethod,
  TeamScope,
  type McpRuntimeClient,
  type RequestEnvelopeSchema,
  type ResponseHead,
} from "./client.js";

/** A JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** One pointer check of `expect.result`. */
export interface ResultCheck {
  pointer: string;
  equals?: Json;
  length?: number;
  array_length?: number;
  names_include?: string[];
}

/** One case of the file. */
export interface Vector {
  name: string;
  request: {
    method: "POST" | "GET" | "DELETE";
    session: string;
    server_id?: string;
    protocol_version?: string;
    accept?: string;
    body?: Json;
    body_text?: string;
    body_base64?: string;
    fill?: { pointer: string; char: string; count: number };
  };
  expect: {
    status: number;
    error_code: number | null;
    content_type?: string;
    empty_body?: boolean;
    result?: ResultCheck[];
    sse?: { progress: number; progress_token: string; final_id: number };
    min_max_message_bytes?: number;
  };
}

/** The whole file. */
export interface VectorFile {
  format: number;
  contract_version: string;
  auth: { email: string; is_admin: boolean; teams: string[] | null };
  default_accept: string;
  cases: Vector[];
}

/** Reads and parses the vectors file at `path`. */
export function loadVectors(path: string): VectorFile {
  return JSON.parse(readFileSync(path, "utf8")) as VectorFile;
}

/** The value at an RFC 6901 JSON pointer, `undefined` when absent. */
export function pointer(doc: Json, ptr: string): Json | undefined {
  if (ptr === "") return doc;
  let cur: Json | undefined = doc;
  for (const raw of ptr.slice(1).split("/")) {
    const key = raw.replaceAll("~1", "/").replaceAll("~0", "~");
    if (cur === null || typeof cur !== "object") return undefined;
    cur = Array.isArray(cur) ? cur[Number(key)] : cur[key];
  }
  return cur;
}

function setPointer(doc: Json, ptr: string, value: Json): void {
  const keys = ptr.slice(1).split("/");
  const last = keys.pop();
  const parent = pointer(doc, keys.length ? `/${keys.join("/")}` : "");
  assert.ok(parent && typeof parent === "object" && !Array.isArray(parent) && last, ptr);
  parent[last] = value;
}

/** The body bytes of a case (`body` compact JSON with `fill`, `body_text`, `body_base64`). */
export function bodyOf(req: Vector["request"]): Uint8Array {
  if (req.body !== undefined) {
    const body = structuredClone(req.body);
    if (req.fill) setPointer(body, req.fill.pointer, req.fill.char.repeat(req.fill.count));
    return Buffer.from(JSON.stringify(body));
  }
  if (req.body_text !== undefined) return Buffer.from(req.body_text, "utf8");
  if (req.body_base64 !== undefined) return Buffer.from(req.body_base64, "base64");
  return new Uint8Array();
}

/** The AuthContext of the file's caller (`teams`: null unrestricted, [] public only). */
export function authOf(auth: VectorFile["auth"]) {
  const teamScope =
    auth.teams === null
      ? TeamScope.UNRESTRICTED
      : auth.teams.length === 0
        ? TeamScope.PUBLIC_ONLY
        : TeamScope.TEAMS;
  return { subjectEmail: auth.email, isAdmin: auth.is_admin, teamScope, teams: auth.teams ?? [] };
}

const METHODS = { POST: HttpMethod.POST, GET: HttpMethod.GET, DELETE: HttpMethod.DELETE };

/** Sessions the cases refer to by name. */
export interface Sessions {
  live: string;
  scoped: string;
}

/** The envelope of a case. */
export function envelopeOf(
  file: VectorFile,
  v: Vector,
  sessions: Sessions,
): MessageInitShape<typeof RequestEnvelopeSchema> {
  const r = v.request;
  const named: Record<string, string> = { live: sessions.live, scoped: sessions.scoped, none: "" };
  const sent: [string, string | undefined][] = [
    ["mcp-session-id", r.session === "none" ? undefined : (named[r.session] ?? r.session)],
    ["mcp-protocol-version", r.protocol_version],
    ["accept", r.accept ?? file.default_accept],
  ];
  return {
    method: METHODS[r.method],
    headers: {
      sessionId: named[r.session] ?? r.session,
      protocolVersion: r.protocol_version ?? "",
      accept: r.accept ?? file.default_accept,
      contentType: r.method === "POST" ? "application/json" : "",
      // A header the case sends empty is named here (contract 1.1); an empty field alone
      // means the header was not sent.
      emptyHeaders: sent.filter(([, value]) => value === "").map(([name]) => name),
    },
    serverId: r.server_id ?? "",
    requestId: `ts-${v.name}`,
    auth: authOf(file.auth),
    body: bodyOf(r),
  };
}

/** One HTTP response as the client would relay it. */
export interface Reply {
  status: number;
  headers: Map<string, string>;
  body: Buffer;
  /** Stream messages after the head (InvokeStream only). */
  parts: number;
}

function headOf(head: ResponseHead | undefined): Pick<Reply, "status" | "headers"> {
  assert.ok(head, "response without a head");
  return { status: head.httpStatus, headers: new Map(head.headers.map((h) => [h.name, h.value])) };
}

/** An SSE event encoded as a relay writes it (docs/contract.md, `SseEvent`). */
export function encodeEvent(e: { id: string; event: string; data: string }): string {
  let out = "";
  if (e.id) out += `id: ${e.id}\n`;
  if (e.event) out += `event: ${e.event}\n`;
  for (const line of e.data.split("\n")) out += `data: ${line}\n`;
  return `${out}\n`;
}

/** Whether a client picks `InvokeStream` for the case (GET, or a POST asking for progress). */
export function wantsStream(v: Vector, body: Uint8Array): boolean {
  return v.request.method === "GET" || Buffer.from(body).includes('"progressToken"');
}

/**
 * Sends a case: `InvokeStream` for a GET or a POST with a progress token, `CloseSession` for a
 * DELETE, `Invoke` otherwise.
 */
export async function send(
  client: McpRuntimeClient,
  file: VectorFile,
  v: Vector,
  sessions: Sessions,
): Promise<Reply> {
  const envelope = envelopeOf(file, v, sessions);
  if (v.request.method === "DELETE") {
    const r = await client.closeSession({ envelope }, { deadlineMs: 30_000 });
    return { ...headOf(r.head), body: Buffer.from(r.body), parts: 0 };
  }
  if (!wantsStream(v, envelope.body as Uint8Array)) {
    const r = await client.invoke({ envelope }, { deadlineMs: 60_000 });
    return { ...headOf(r.head), body: Buffer.from(r.body), parts: 0 };
  }
  let head: Pick<Reply, "status" | "headers"> | undefined;
  const chunks: Buffer[] = [];
  let parts = 0;
  for await (const m of client.invokeStream({ envelope })) {
    switch (m.part.case) {
      case "head":
        assert.equal(head, undefined, "a second head");
        head = headOf(m.part.value);
        break;
      case "event":
        parts += 1;
        chunks.push(Buffer.from(encodeEvent(m.part.value)));
        break;
      case "bodyChunk":
        parts += 1;
        chunks.push(Buffer.from(m.part.value));
        break;
      default:
        assert.fail("a stream message without a part");
    }
  }
  assert.ok(head, "InvokeStream ended without a head");
  return { ...head, body: Buffer.concat(chunks), parts };
}

function json(r: Reply): Json {
  return JSON.parse(r.body.toString("utf8")) as Json;
}

/** The `data:` of each SSE event, parsed. */
export function sseEvents(r: Reply): Json[] {
  return r.body
    .toString("utf8")
    .split("\n")
    .filter((l) => l.startsWith("data: "))
    .map((l) => JSON.parse(l.slice(6)) as Json);
}

/** Checks a reply against the case's `expect` (contract/vectors/README.md). */
export function check(v: Vector, r: Reply): void {
  const e = v.expect;
  const what = `${v.name}: body ${r.body.subarray(0, 300).toString("utf8")}`;
  assert.equal(r.status, e.status, `${what}: status`);
  if (e.error_code !== null) {
    assert.equal(pointer(json(r), "/error/code"), e.error_code, `${what}: error code`);
  } else if (r.body.length > 0 && !r.headers.get("content-type")?.startsWith("text/event-stream")) {
    assert.equal(pointer(json(r), "/error"), undefined, `${what}: unexpected error`);
  }
  if (e.content_type !== undefined) {
    assert.equal(r.headers.get("content-type"), e.content_type, `${what}: content type`);
  }
  if (e.empty_body) assert.equal(r.body.length, 0, `${what}: body not empty`);
  for (const c of e.result ?? []) {
    const at = pointer(json(r), c.pointer);
    if (c.equals !== undefined) assert.deepEqual(at, c.equals, `${v.name}: ${c.pointer}`);
    if (c.length !== undefined) {
      assert.equal(typeof at === "string" ? Buffer.byteLength(at) : 0, c.length, c.pointer);
    }
    if (c.array_length !== undefined) {
      assert.equal(Array.isArray(at) ? at.length : 0, c.array_length, c.pointer);
    }
    for (const name of c.names_include ?? []) {
      const names = Array.isArray(at) ? at.map((t) => pointer(t, "/name")) : [];
      assert.ok(names.includes(name), `${v.name}: ${name} missing from ${JSON.stringify(names)}`);
    }
  }
  if (e.sse) {
    const events = sseEvents(r);
    const progress = events.filter((x) => pointer(x, "/method") === "notifications/progress");
    assert.equal(progress.length, e.sse.progress, what);
    for (const p of progress) {
      assert.equal(pointer(p, "/params/progressToken"), e.sse.progress_token, "token restored");
    }
    assert.equal(pointer(events.at(-1) ?? null, "/id"), e.sse.final_id, what);
    const first = events.findIndex((x) => pointer(x, "/method") === "notifications/progress");
    assert.ok(first >= 0 && first < events.length - 1, `${what}: progress before the result`);
  }
}
