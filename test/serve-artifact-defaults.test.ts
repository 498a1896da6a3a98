// An Ollama-format artifact's params and system layers are the model's defaults in `llama-oci serve`: its system
// prompt opens a conversation that brings none, its num_ctx sizes the sequences, and its sampling settings apply
// where a request does not set them.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { llama } from "../src/index.js";
import { pushArtifact } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { SERVE_CHAT_TEMPLATE, serveEnv, startServe, type ServeProcess } from "./helpers/serve.js";
import { DEFAULT_TINY_VOCAB, makeTinyLlama } from "./helpers/tiny-model.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const OLLAMA = (kind: string) => `application/vnd.ollama.image.${kind}`;
const SYSTEM = "You answer in one short line.";

let workDir: string;
let registry: RegistryHandle;
let server: ServeProcess;
let reference: string;

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-serve-defaults");
  registry = await startRegistry();
  const path = join(workDir, "tiny.gguf");
  await makeTinyLlama(path, { vocabFrom: DEFAULT_TINY_VOCAB, seed: 31, chatTemplate: SERVE_CHAT_TEMPLATE, contextLength: 1024 });
  await pushArtifact({ registryUrl: registry.url, repository: "library/withdefaults" }, "v1", {
    manifestMediaType: "application/vnd.docker.distribution.manifest.v2+json",
    config: { mediaType: "application/vnd.docker.container.image.v1+json", data: Buffer.from("{}") },
    layers: [
      { mediaType: OLLAMA("model"), data: await readFile(path) },
      { mediaType: OLLAMA("system"), data: Buffer.from(SYSTEM) },
      { mediaType: OLLAMA("params"), data: Buffer.from(JSON.stringify({ num_ctx: 200, temperature: 0, top_k: 1 })) },
    ],
  });
  reference = `${registry.host}/library/withdefaults:v1`;
  server = await startServe(["--parallel", "1"], serveEnv(workDir));
});

afterAll(async () => {
  await server?.stop();
  await registry?.stop();
  if (workDir) await removeDir(workDir);
});

async function chat(messages: { role: string; content: string }[], extra: object = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${server.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: reference, messages, max_tokens: 8, ...extra }),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

test("the artifact's system prompt opens a conversation that has none, and a conversation's own system prompt replaces it", async () => {
  const implicit = await chat([{ role: "user", content: "Hello there" }]);
  expect(implicit.status, JSON.stringify(implicit.body)).toBe(200);
  const explicit = await chat([{ role: "system", content: SYSTEM }, { role: "user", content: "Hello there" }]);
  const other = await chat([{ role: "system", content: "Be verbose." }, { role: "user", content: "Hello there" }]);
  const tokens = (r: { body: Record<string, unknown> }) => (r.body.usage as { prompt_tokens: number }).prompt_tokens;
  const text = (r: { body: Record<string, unknown> }) => (r.body.choices as { message: { content: string } }[])[0]!.message.content;
  expect(tokens(implicit)).toBe(tokens(explicit));
  // temperature 0 and top_k 1 from the params layer: the same greedy answer both times.
  expect(text(implicit)).toBe(text(explicit));
  expect(tokens(other)).not.toBe(tokens(implicit));
});

test("num_ctx from the params layer sizes each sequence", async () => {
  const long = await chat([{ role: "user", content: "word ".repeat(400) }]);
  expect(long.status).toBe(400);
  expect((long.body.error as { message: string }).message).toMatch(/but the context holds 200/);
});

test("llama.fromDocker() takes the same defaults: context size, sampling under the call's own options, the chat's system prompt", async () => {
  const cacheDir = join(workDir, "lib-cache");
  const model = await llama.fromDocker(reference, { cacheDir, gpuLayers: 0 });
  try {
    expect(model.contextOptions.contextSize).toBe(200);
    expect(model.generationDefaults).toEqual({ temperature: 0, topK: 1 });
    expect(model.systemPrompt).toBe(SYSTEM);
    const chat = model.createChat();
    expect(chat.history).toEqual([{ role: "system", content: SYSTEM }]);
    // temperature 0 from the artifact: greedy, so the same text twice; a call's own temperature still wins.
    const a = await model.complete("Once upon a time", { maxTokens: 8 });
    const b = await model.complete("Once upon a time", { maxTokens: 8 });
    expect(a).toBe(b);
    await chat.dispose();
  } finally {
    await model.dispose();
  }
  const own = await llama.fromDocker(reference, { cacheDir, gpuLayers: 0, contextSize: 256 });
  try {
    expect(own.contextOptions.contextSize).toBe(256);
    expect(own.createChat({ systemPrompt: "Mine." }).history).toEqual([{ role: "system", content: "Mine." }]);
  } finally {
    await own.dispose();
  }
});
