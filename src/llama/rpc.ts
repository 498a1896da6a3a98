/**
 * llama.cpp RPC servers (`ggml-rpc-server`) that a model is split over: `rpcServers: ["host:port", ...]`, as
 * llama.cpp's `--rpc`. Each endpoint is checked here before llama.cpp sees it (a TCP connection and the RPC
 * protocol's HELLO), because llama.cpp's RPC client aborts the whole process when it cannot connect or the server
 * speaks another protocol version. The protocol has no authentication: use it on trusted networks only.
 */
import { connect } from "node:net";
import { LlamaOciError } from "../errors.js";
import { invalid } from "./options.js";

/** RPC_CMD_HELLO in ggml-rpc.cpp (fixed across protocol versions). */
const RPC_CMD_HELLO = 14;
/** sizeof(rpc_msg_hello_req): the client's transport capabilities (RPC_CONN_CAPS_SIZE), none advertised here. */
const HELLO_REQUEST_SIZE = 24;
/** sizeof(rpc_msg_hello_rsp): major, minor, patch, padding, then the server's capabilities. */
const HELLO_RESPONSE_SIZE = 4 + HELLO_REQUEST_SIZE;

/** The endpoints as given, checked for the "host:port" shape (an IPv6 host in brackets: "[::1]:50052"). */
export function checkRpcEndpoints(value: unknown): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw invalid('rpcServers must be an array of "host:port" strings');
  return value.map((endpoint: unknown) => {
    if (typeof endpoint !== "string" || !/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.test(endpoint) || Number(endpoint.slice(endpoint.lastIndexOf(":") + 1)) > 65535) {
      throw invalid(`rpcServers: ${JSON.stringify(endpoint)} is not "host:port"`, 'give each RPC server as "host:port", e.g. "192.168.1.20:50052"');
    }
    return endpoint;
  });
}

/** Connects to each server and exchanges the RPC HELLO; rejects with code NETWORK naming the first that fails. */
export async function probeRpcServers(endpoints: readonly string[], protocol: { major: number; minor: number }, timeoutMs = 5000): Promise<void> {
  for (const endpoint of endpoints) await probe(endpoint, protocol, timeoutMs);
}

function probe(endpoint: string, protocol: { major: number; minor: number }, timeoutMs: number): Promise<void> {
  const colon = endpoint.lastIndexOf(":");
  const host = endpoint.slice(0, colon).replace(/^\[|\]$/g, "");
  const port = Number(endpoint.slice(colon + 1));
  const hint = "start ggml-rpc-server there (from the same llama.cpp release), or leave it out of rpcServers (--rpc)";
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    let received = Buffer.alloc(0);
    const fail = (problem: string) => {
      socket.destroy();
      reject(new LlamaOciError("NETWORK", `RPC server ${endpoint}: ${problem}`, { hint }));
    };
    socket.setTimeout(timeoutMs, () => fail(`no answer within ${timeoutMs / 1000} s`));
    socket.on("error", (error: NodeJS.ErrnoException) => fail(error.code === "ECONNREFUSED" ? "connection refused (is ggml-rpc-server running there?)" : error.message));
    socket.on("connect", () => {
      const request = Buffer.alloc(1 + 8 + HELLO_REQUEST_SIZE);
      request.writeUInt8(RPC_CMD_HELLO, 0);
      request.writeBigUInt64LE(BigInt(HELLO_REQUEST_SIZE), 1);
      socket.write(request);
    });
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length < 8 + HELLO_RESPONSE_SIZE) return;
      const size = received.readBigUInt64LE(0);
      const major = received.readUInt8(8);
      const minor = received.readUInt8(9);
      socket.destroy();
      if (size !== BigInt(HELLO_RESPONSE_SIZE)) {
        fail("did not answer the RPC handshake (not a ggml-rpc-server?)");
        return;
      }
      if (major !== protocol.major || minor > protocol.minor) {
        reject(new LlamaOciError("NETWORK", `RPC server ${endpoint} speaks RPC protocol ${major}.${minor}, this build ${protocol.major}.${protocol.minor}`, { hint: "run ggml-rpc-server from the same llama.cpp release as llama-oci" }));
        return;
      }
      resolve();
    });
    socket.on("end", () => fail("did not answer the RPC handshake (not a ggml-rpc-server?)"));
  });
}
