// What `llama-oci serve` does with its models and sequences over time: keep-alive unloading, --max-models eviction,
// the bounded queue (503 with Retry-After), a disconnecting client freeing its sequence, /health while the --model
// preload is still downloading, and CORS only for the origins given.
import { readFile } from "node:fs/promises";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { cpuTicks } from "./helpers/proc-stat.js";
import { digestOf } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { metricValue, pushTinyModel, serveEnv, startServe, type PushedModel, type ServeProcess } from "./helpers/serve.js";
import { startSlowProxy, type SlowProxy } from "./helpers/slow-proxy.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

let registry: RegistryHandle;
let workDir: string;
let first: PushedModel;
let second: PushedModel;
const servers: ServeProcess[] = [];

const LONG = { messages: [{ role: "user" as const, content: "Hello there" }], temperature: 0, max_tokens: 100_000 };

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-serve-lifecycle");
  registry = await startRegistry();
  first = await pushTinyModel(registry, workDir, "ai/tiny-first", 31);
  second = await pushTinyModel(registry, workDir, "ai/tiny-second", 32);
});

afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  await registry?.stop();
  if (workDir) await removeDir(workDir);
});

async function start(args: string[], options: { waitReady?: boolean } = {}): Promise<ServeProcess> {
  const server = await startServe(args, serveEnv(workDir), options);
  servers.push(server);
  return server;
}

async function metrics(server: ServeProcess): Promise<string> {
  return (await fetch(`${server.url}/metrics`)).text();
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function loadedNames(server: ServeProcess): Promise<string[]> {
  const ps = (await (await fetch(`${server.url}/api/ps`)).json()) as { models: { name: string }[] };
  return ps.models.map((m) => m.name);
}

/** Starts a streaming chat and resolves once its first piece of text arrived; abort() ends it from the client's side. */
async function startStream(client: OpenAI, model: string): Promise<{ abort: () => void; done: Promise<unknown> }> {
  const controller = new AbortController();
  const stream = await client.chat.completions.create({ ...LONG, model, stream: true }, { signal: controller.signal });
  let gotText!: () => void;
  const text = new Promise<void>((resolve) => (gotText = resolve));
  const done = (async () => {
    for await (const chunk of stream) if (chunk.choices[0]?.delta.content) gotText();
  })().catch((error: unknown) => error);
  await Promise.race([text, done]);
  return { abort: () => controller.abort(), done };
}

describe("sequences and the queue", () => {
  let server: ServeProcess;
  let client: OpenAI;

  beforeAll(async () => {
    server = await start(["--model", first.reference, "--parallel", "1", "--max-queue", "1", "-c", "8192", "--cors", "http://app.example"], { waitReady: true });
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });
  });

  test("beyond --parallel and --max-queue: 503 queue_full with Retry-After; the others go on", async () => {
    const running = await startStream(client, first.reference);
    const queuedController = new AbortController();
    // Its response starts with its first token, so this only settles once it got a sequence (or was aborted).
    const queued = client.chat.completions.create({ ...LONG, model: first.reference, stream: true }, { signal: queuedController.signal }).catch((e: unknown) => e);
    await until("a queued request", async () => metricValue(await metrics(server), "llama_oci_queue_length") === 1);

    const refused = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ model: first.reference, messages: LONG.messages, max_tokens: 2 }),
    });
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("1");
    const body = (await refused.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("queue_full");
    expect(body.error.message).toMatch(/1 sequence running and 1 request queued/);
    expect(metricValue(await metrics(server), "llama_oci_requests_rejected_total", { reason: "queue_full" })).toBe(1);

    running.abort();
    queuedController.abort();
    await running.done;
    expect(await queued).toBeInstanceOf(Error);
    await until("no busy sequence", async () => {
      const text = await metrics(server);
      return metricValue(text, "llama_oci_sequences_busy") === 0 && metricValue(text, "llama_oci_queue_length") === 0;
    });
  });

  test("a client that disconnects aborts its generation and frees its sequence", async () => {
    const before = metricValue(await metrics(server), "llama_oci_completions_total", { finish_reason: "abort" });
    const stream = await startStream(client, first.reference);
    expect(metricValue(await metrics(server), "llama_oci_sequences_busy")).toBe(1);
    stream.abort();
    await until("the aborted generation to end", async () => metricValue(await metrics(server), "llama_oci_sequences_busy") === 0);
    expect(metricValue(await metrics(server), "llama_oci_completions_total", { finish_reason: "abort" })).toBe(before + 1);
    // The one sequence serves the next request at once (the aborted one would have run to 8192 tokens).
    const started = Date.now();
    const next = await client.chat.completions.create({ model: first.reference, messages: LONG.messages, max_tokens: 3 });
    expect(next.choices[0]!.finish_reason).toBe("length");
    expect(Date.now() - started).toBeLessThan(15_000);
  });

  test("CORS answers only the origins given with --cors", async () => {
    const preflight = await fetch(`${server.url}/v1/chat/completions`, {
      method: "OPTIONS",
      headers: { origin: "http://app.example", "access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type" },
    });
    expect(preflight.status).toBeLessThan(300);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("http://app.example");
    const allowed = await fetch(`${server.url}/v1/models`, { headers: { origin: "http://app.example" } });
    expect(allowed.headers.get("access-control-allow-origin")).toBe("http://app.example");
    const other = await fetch(`${server.url}/v1/models`, { headers: { origin: "http://evil.example" } });
    expect(other.headers.get("access-control-allow-origin")).toBeNull();
  });
});

describe("idle", () => {
  test.runIf(process.platform === "linux")("a server with a model loaded and nothing to do sleeps: at most 20 ms of CPU in 5 s", async () => {
    const server = await start(["--model", first.reference, "--parallel", "2"], { waitReady: true });
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });
    await client.chat.completions.create({ model: first.reference, messages: LONG.messages, max_tokens: 3 });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const before = cpuTicks(server.process.pid);
    await new Promise((resolve) => setTimeout(resolve, 5000));
    // A timer firing every 10 ms (prom-client's default event-loop-lag probe) used 4-5 ticks (40-50 ms) in 5 s.
    expect(cpuTicks(server.process.pid)).toBeLessThanOrEqual(before + 2);
  });
});

describe("keep-alive and max-models", () => {
  test("a model is unloaded --keep-alive after its last request; without --cors there are no CORS headers", async () => {
    const server = await start(["--keep-alive", "1s"]);
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });
    await client.chat.completions.create({ model: first.reference, messages: LONG.messages, max_tokens: 2 });
    expect(await loadedNames(server)).toEqual([first.reference]);
    const ps = (await (await fetch(`${server.url}/api/ps`)).json()) as { models: { expires_at: string }[] };
    expect(new Date(ps.models[0]!.expires_at).getTime() - Date.now()).toBeLessThanOrEqual(1_000);
    await until("the keep-alive unload", async () => (await loadedNames(server)).length === 0);
    expect(metricValue(await metrics(server), "llama_oci_model_unloads_total", { reason: "keep_alive" })).toBe(1);
    expect(server.logs()).toMatch(/unloaded .*ai\/tiny-first:F32 \(keep-alive\)/);
    const cors = await fetch(`${server.url}/v1/models`, { headers: { origin: "http://app.example" } });
    expect(cors.headers.get("access-control-allow-origin")).toBeNull();
  });

  test("--max-models 1: loading a second model unloads the least recently used one", async () => {
    const server = await start(["--max-models", "1"]);
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });
    await client.chat.completions.create({ model: first.reference, messages: LONG.messages, max_tokens: 2 });
    await client.chat.completions.create({ model: second.reference, messages: LONG.messages, max_tokens: 2 });
    expect(await loadedNames(server)).toEqual([second.reference]);
    expect(server.logs()).toMatch(/unloaded .*ai\/tiny-first:F32 \(evicted\)/);
    await client.chat.completions.create({ model: first.reference, messages: LONG.messages, max_tokens: 2 });
    expect(await loadedNames(server)).toEqual([first.reference]);
    expect(metricValue(await metrics(server), "llama_oci_model_unloads_total", { reason: "evicted" })).toBe(2);
  });
});

describe("health", () => {
  let proxy: SlowProxy;

  beforeAll(async () => {
    proxy = await startSlowProxy(registry.url);
  });

  afterAll(async () => {
    await proxy?.stop();
  });

  test("/health is 503 while the --model preload downloads, 200 once it is loaded; requests wait for it", async () => {
    const blob = digestOf(await readFile(first.path)).slice("sha256:".length);
    proxy.hold(blob, 100_000);
    const server = await start(["--model", `${proxy.host}/ai/tiny-first:F32`]);
    await proxy.held();
    const loading = await fetch(`${server.url}/health`);
    expect(loading.status).toBe(503);
    expect(await loading.json()).toEqual({ status: "loading" });
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const waiting = client.chat.completions.create({ model: "", messages: LONG.messages, max_tokens: 2 });
    await new Promise((resolve) => setTimeout(resolve, 200));
    proxy.release();
    expect((await waiting).choices[0]!.finish_reason).toBe("length");
    await until("health 200", async () => (await fetch(`${server.url}/health`)).status === 200);
  });
});
