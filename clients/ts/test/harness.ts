/**
 * Real processes for the tests: the fixture upstream (`mcp-fixture-server`) and the runtime
 * (`mcp-runtime` built with `grpc-uds`) from `MCP_BIN_DIR` (default target/python-bin, filled
 * by `make python-binaries`), on a gRPC Unix socket in a fresh temp dir.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";

import { McpRuntimeClient } from "../src/client.js";

/** The repository root (clients/ts/test/..). */
export const ROOT = resolve(import.meta.dirname, "..", "..", "..");
const BIN = process.env.MCP_BIN_DIR ?? join(ROOT, "target", "python-bin");

/** A running fixture and runtime; `stop()` ends both and removes the temp dir. */
export interface Stack {
  dir: string;
  grpcSocket: string;
  runtime: ChildProcess;
  client: McpRuntimeClient;
  stop(): Promise<void>;
}

function fixture(dir: string): Promise<{ proc: ChildProcess; url: string }> {
  const log = openSync(join(dir, "fixture.log"), "a");
  const proc = spawn(join(BIN, "mcp-fixture-server"), ["--listen", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", log],
  });
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error("fixture printed no MCP_FIXTURE_URL")), 30_000);
    proc.once("error", fail);
    createInterface({ input: proc.stdout! }).on("line", (line) => {
      if (line.startsWith("MCP_FIXTURE_URL=")) {
        clearTimeout(timer);
        ok({ proc, url: line.slice("MCP_FIXTURE_URL=".length) });
      }
    });
  });
}

async function stopProcess(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((ok) => p.once("exit", ok));
  p.kill("SIGTERM");
  const timer = setTimeout(() => p.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
}

/**
 * Starts the fixture and a runtime serving gRPC only, with `env` added to the runtime's
 * environment, and waits until `HealthCheck` answers.
 */
export async function startStack(env: Record<string, string> = {}): Promise<Stack> {
  const dir = mkdtempSync(join(tmpdir(), "mcp-ts-"));
  const fx = await fixture(dir);
  const catalog = join(dir, "catalog.toml");
  writeFileSync(
    catalog,
    `[[upstreams]]\nid = "fixture"\nurl = "${fx.url}"\n\n` +
      `[[servers]]\nid = "echo-only"\ntools = ["echo"]\n`,
  );
  const grpcSocket = join(dir, "grpc.sock");
  const log = openSync(join(dir, "runtime.log"), "a");
  const runtime = spawn(
    join(BIN, "mcp-runtime"),
    ["--catalog", catalog, "--grpc-uds", grpcSocket],
    { stdio: ["ignore", log, log], env: { ...process.env, MCP_RUNTIME_LOG: "warn", ...env } },
  );
  const client = new McpRuntimeClient(grpcSocket);
  const stop = async () => {
    client.close();
    await stopProcess(runtime);
    await stopProcess(fx.proc);
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await client.healthCheck({ deadlineMs: 1_000 });
      break;
    } catch (e) {
      if (runtime.exitCode !== null || Date.now() > deadline) {
        await stop();
        throw new Error(`runtime did not serve gRPC on ${grpcSocket} (log in ${dir}): ${e}`);
      }
      await new Promise((ok) => setTimeout(ok, 100));
    }
  }
  return { dir, grpcSocket, runtime, client, stop };
}
