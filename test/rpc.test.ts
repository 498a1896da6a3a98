// llama.cpp's RPC backend: a model split over two ggml-rpc-server processes (built with the tools from the same
// llama.cpp source) on 127.0.0.1. The devices list shows them, the layers are split across them (llama.cpp's own load
// log), greedy output equals the local run, and a server that is not there is a clear error, not a crash.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { llama, LlamaOciError, type LlamaModel } from "../src/index.js";
import { getBinding } from "../src/llama/binding.js";
import { probeRpcServers } from "../src/llama/rpc.js";
import { ROOT_DIR, runCli } from "./helpers/cli.js";
import { freePort } from "./helpers/ports.js";
import { DEFAULT_TINY_VOCAB, makeTinyLlama } from "./helpers/tiny-model.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const RPC_SERVER = join(ROOT_DIR, "build", "bin", "ggml-rpc-server");
const PROMPT = "The quick brown fox";

let workDir: string;
let modelPath: string;
let local: LlamaModel;
const servers: { child: ChildProcess; endpoint: string; log: string[] }[] = [];

async function startRpcServer(): Promise<{ child: ChildProcess; endpoint: string; log: string[] }> {
  const port = await freePort();
  const endpoint = `127.0.0.1:${port}`;
  const child = spawn(RPC_SERVER, ["-H", "127.0.0.1", "-p", String(port), "-t", "1"], { stdio: ["ignore", "pipe", "pipe"] });
  const log: string[] = [];
  child.stdout.on("data", (data: Buffer) => log.push(data.toString()));
  child.stderr.on("data", (data: Buffer) => log.push(data.toString()));
  const protocol = getBinding().systemInfo().rpcProtocol;
  // Ready once it answers the RPC handshake.
  for (let attempt = 0; ; attempt++) {
    if (child.exitCode !== null) throw new Error(`ggml-rpc-server exited: ${log.join("")}`);
    try {
      await probeRpcServers([endpoint], protocol, 1000);
      return { child, endpoint, log };
    } catch (error) {
      if (attempt > 100) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

beforeAll(async () => {
  if (!existsSync(RPC_SERVER)) throw new Error(`${RPC_SERVER} is missing: run 'bash scripts/setup.sh' (it builds the tools with the addon)`);
  workDir = await makeTempDir("llama-oci-rpc");
  modelPath = join(workDir, "tiny.gguf");
  await makeTinyLlama(modelPath, { vocabFrom: DEFAULT_TINY_VOCAB, seed: 17, contextLength: 256, nLayer: 4 });
  local = await llama.loadModel(modelPath, { gpuLayers: 0, contextSize: 256, threads: 1 });
  servers.push(await startRpcServer(), await startRpcServer());
}, 120_000);

afterAll(async () => {
  await local?.dispose();
  for (const server of servers) server.child.kill("SIGKILL");
  if (workDir) await removeDir(workDir);
});

describe("rpcServers", () => {
  test("the model is split over two RPC servers, they are in the devices list, and greedy output equals the local run", async () => {
    expect(llama.systemInfo().supportsRpc).toBe(true);
    const lines: string[] = [];
    llama.setLogger((_level, text) => void lines.push(text), "info");
    let model: LlamaModel | undefined;
    try {
      model = await llama.loadModel(modelPath, { rpcServers: servers.map((s) => s.endpoint), gpuLayers: "max", contextSize: 256, threads: 1 });
    } finally {
      llama.setLogger(null);
    }
    try {
      const log = lines.join("");
      // llama.cpp's load log: the layers went to the RPC devices, each server holding part of the weights.
      expect(log).toMatch(/offloaded 5\/5 layers to GPU/);
      for (const { endpoint } of servers) expect(log, log).toMatch(new RegExp(`RPC\\d+\\[${endpoint.replace(/\./g, "\\.")}\\] model buffer size = +[0-9.]+ MiB`));
      const devices = llama.systemInfo().devices.filter((d) => servers.some((s) => d.description === s.endpoint));
      expect(devices.map((d) => d.description).sort()).toEqual(servers.map((s) => s.endpoint).sort());
      expect(devices.every((d) => /^RPC\d+$/.test(d.name))).toBe(true);

      const expected = await local.complete(PROMPT, { temperature: 0, maxTokens: 16 });
      expect(await model.complete(PROMPT, { temperature: 0, maxTokens: 16 })).toBe(expected);
    } finally {
      await model?.dispose();
    }
    // A model loaded without rpcServers afterwards stays on this machine, although the servers are still registered.
    const plain = await llama.loadModel(modelPath, { contextSize: 256, threads: 1 });
    lines.length = 0;
    try {
      expect(await plain.complete(PROMPT, { temperature: 0, maxTokens: 4 })).toBe(await local.complete(PROMPT, { temperature: 0, maxTokens: 4 }));
    } finally {
      await plain.dispose();
    }
  }, 120_000);

  test("a server that is not there, or is not an RPC server, is a NETWORK error naming it; a bad endpoint is INVALID_ARGUMENT", async () => {
    const closed = `127.0.0.1:${await freePort()}`;
    const refused = await llama.loadModel(modelPath, { rpcServers: [closed] }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(LlamaOciError);
    expect((refused as LlamaOciError).code).toBe("NETWORK");
    expect((refused as Error).message).toBe(`RPC server ${closed}: connection refused (is ggml-rpc-server running there?)`);

    // Something else listening there: an HTTP server answers the handshake with text and closes.
    const { createServer } = await import("node:http");
    const http = createServer((_request, response) => response.end("hello"));
    await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
    const address = http.address() as { port: number };
    try {
      const wrong = await llama.loadModel(modelPath, { rpcServers: [`127.0.0.1:${address.port}`] }).catch((error: unknown) => error);
      expect((wrong as LlamaOciError).code).toBe("NETWORK");
      expect((wrong as Error).message).toBe(`RPC server 127.0.0.1:${address.port}: did not answer the RPC handshake (not a ggml-rpc-server?)`);
    } finally {
      await new Promise((resolve) => http.close(resolve));
    }

    for (const bad of ["localhost", "host:99999", ":1", "a b:1"]) {
      const error = await llama.loadModel(modelPath, { rpcServers: [bad] }).catch((e: unknown) => e);
      expect((error as LlamaOciError).code, bad).toBe("INVALID_ARGUMENT");
      expect((error as Error).message).toBe(`rpcServers: ${JSON.stringify(bad)} is not "host:port"`);
    }
    // The process is still here, and the local model still answers.
    expect(await local.complete(PROMPT, { temperature: 0, maxTokens: 2 })).toBeTypeOf("string");
  }, 60_000);

  test("--rpc: run generates through the servers as without them; an unreachable one is one line and exit code 1", async () => {
    const args = ["run", "-m", modelPath, "-p", PROMPT, "-n", "8", "--temp", "0", "-c", "256", "-t", "1", "-q"];
    const alone = await runCli(args);
    const split = await runCli([...args, "--rpc", servers.map((s) => s.endpoint).join(",")]);
    expect(split.exitCode, split.stderr).toBe(0);
    expect(split.stdout).toBe(alone.stdout);
    const closed = `127.0.0.1:${await freePort()}`;
    const failed = await runCli([...args, "--rpc", closed]);
    expect(failed.exitCode).toBe(1);
    expect(failed.stderr.trim().split("\n")[0]).toBe(
      `error: RPC server ${closed}: connection refused (is ggml-rpc-server running there?) (start ggml-rpc-server there (from the same llama.cpp release), or leave it out of rpcServers (--rpc))`,
    );
  }, 60_000);
});
