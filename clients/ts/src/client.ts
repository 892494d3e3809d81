/**
 * A TypeScript client of `mcp.runtime.v1.McpRuntime` (proto/mcp/runtime/v1/runtime.proto,
 * docs/contract.md) over the runtime's gRPC Unix socket.
 *
 * Messages and the service descriptor are generated from proto/ by protoc-gen-es (`make
 * ts-generate`, into src/gen/); the transport is @grpc/grpc-js, driven by that descriptor (paths
 * `/mcp.runtime.v1.McpRuntime/<Method>`, protobuf binary encoding by @bufbuild/protobuf).
 */

import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import type { DescMethod } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";

import {
  CloseSessionRequestSchema,
  HealthCheckRequestSchema,
  InvokeRequestSchema,
  InvokeStreamRequestSchema,
  McpRuntime,
  type CloseSessionResponse,
  type HealthCheckResponse,
  type InvokeResponse,
  type InvokeStreamResponse,
} from "./gen/mcp/runtime/v1/runtime_pb.js";

export * from "./gen/mcp/runtime/v1/runtime_pb.js";

const MIB = 1024 * 1024;

/**
 * Options of the one channel (docs/contract.md, "Implementing a compatible client"): tonic
 * rejects a socket path as `:authority`, so it is `localhost`; message limits are the runtime's
 * default 64 MiB plus 1 MiB of slack for the envelope.
 */
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.default_authority": "localhost",
  "grpc.max_send_message_length": 64 * MIB + MIB,
  "grpc.max_receive_message_length": 64 * MIB + MIB,
};

/** Contract major versions (`mcp.runtime.v<N>`) this client speaks. */
export const SUPPORTED_CONTRACT_MAJORS: readonly number[] = [1];

/** The runtime reports a contract major version this client does not speak. */
export class ContractVersionError extends Error {
  override name = "ContractVersionError";
}

/**
 * The version handshake: throws unless `contractVersion` (`MAJOR.MINOR`, from `HealthCheck`)
 * has a major in {@link SUPPORTED_CONTRACT_MAJORS}.
 *
 * @throws ContractVersionError with the reported and the spoken versions.
 */
export function checkContract(contractVersion: string): void {
  const major = /^(\d+)\.\d+$/.exec(contractVersion)?.[1];
  if (major === undefined || !SUPPORTED_CONTRACT_MAJORS.includes(Number(major))) {
    throw new ContractVersionError(
      `the MCP runtime reports contract version ${JSON.stringify(contractVersion)}; this client ` +
        `speaks ${SUPPORTED_CONTRACT_MAJORS.map((m) => `${m}.x`).join(", ")} (mcp.runtime.v1)`,
    );
  }
}

function serializer<D extends DescMessage>(schema: D): (m: MessageShape<D>) => Buffer {
  return (m) => Buffer.from(toBinary(schema, m));
}

function deserializer<D extends DescMessage>(schema: D): (b: Buffer) => MessageShape<D> {
  return (b) => fromBinary(schema, b);
}

function path(method: DescMethod): string {
  return `/${McpRuntime.typeName}/${method.name}`;
}

/** Per-call options: a deadline in milliseconds from now (unary calls; streams take none). */
export interface CallOptions {
  deadlineMs?: number;
}

/**
 * One channel to the runtime's gRPC socket; methods map one to one to the RPCs.
 *
 * Failed calls reject with grpc-js's `ServiceError` (`code` is a `grpc.status`): contract and
 * transport faults only, since MCP outcomes arrive inside OK responses (docs/contract.md,
 * "Error model").
 */
export class McpRuntimeClient {
  private readonly client: grpc.Client;

  /** @param socketPath path of the runtime's gRPC socket (`MCP_RUST_GRPC_UDS`). */
  constructor(socketPath: string) {
    this.client = new grpc.Client(
      `unix://${socketPath}`,
      grpc.credentials.createInsecure(),
      CHANNEL_OPTIONS,
    );
  }

  private unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethod,
    input: I,
    output: O,
    request: MessageInitShape<I>,
    options: CallOptions,
  ): Promise<MessageShape<O>> {
    const callOptions: grpc.CallOptions =
      options.deadlineMs === undefined ? {} : { deadline: Date.now() + options.deadlineMs };
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        path(method),
        serializer(input),
        deserializer(output),
        create(input, request),
        new grpc.Metadata(),
        callOptions,
        (err, reply) => (err || reply === undefined ? reject(err) : resolve(reply)),
      );
    });
  }

  /** `Invoke`: one POST (or DELETE); the whole HTTP response. */
  invoke(
    request: MessageInitShape<typeof InvokeRequestSchema>,
    options: CallOptions = {},
  ): Promise<InvokeResponse> {
    const m = McpRuntime.method.invoke;
    return this.unary(m, m.input, m.output, request, options);
  }

  /** `CloseSession`: the DELETE of a session. */
  closeSession(
    request: MessageInitShape<typeof CloseSessionRequestSchema>,
    options: CallOptions = {},
  ): Promise<CloseSessionResponse> {
    const m = McpRuntime.method.closeSession;
    return this.unary(m, m.input, m.output, request, options);
  }

  /** `HealthCheck`: serving state, versions, features. */
  healthCheck(options: CallOptions = {}): Promise<HealthCheckResponse> {
    const m = McpRuntime.method.healthCheck;
    const request: MessageInitShape<typeof HealthCheckRequestSchema> = {};
    return this.unary(m, m.input, m.output, request, options);
  }

  /**
   * `InvokeStream`: the response head first, then each SSE event or body chunk as the runtime
   * sends it. Leaving the loop early cancels the call.
   */
  async *invokeStream(
    request: MessageInitShape<typeof InvokeStreamRequestSchema>,
  ): AsyncGenerator<InvokeStreamResponse> {
    const m = McpRuntime.method.invokeStream;
    const call = this.client.makeServerStreamRequest(
      path(m),
      serializer(m.input),
      deserializer(m.output),
      create(m.input, request),
      new grpc.Metadata(),
      {},
    );
    try {
      for await (const message of call) {
        yield message as InvokeStreamResponse;
      }
    } finally {
      call.cancel();
    }
  }

  /** Waits until the channel is connected, for at most `timeoutMs`. */
  waitForReady(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) =>
      this.client.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve())),
    );
  }

  /** Closes the channel. */
  close(): void {
    this.client.close();
  }
}
