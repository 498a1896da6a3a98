// `llama-oci serve` through the official `openai` npm package: a real server process (bin/llama-oci.js serve) that
// pulls tiny generated models from a real docker-registry. Greedy output of a random-weight model is gibberish but
// deterministic, so every answer is compared with the same generation done by the library in this process.
import OpenAI, { type APIError } from "openai";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { LlamaModel } from "../src/index.js";
import { describeRun, runCli } from "./helpers/cli.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { expectedChat, loadForExpectations, metricValue, pushTinyModel, serveEnv, startServe, type PushedModel, type ServeProcess } from "./helpers/serve.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

let registry: RegistryHandle;
let workDir: string;
let main: PushedModel;
let other: PushedModel;
let lazy: PushedModel;
let model: LlamaModel;
let server: ServeProcess;
let client: OpenAI;

const HELLO = [{ role: "user" as const, content: "Hello there" }];

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-serve-openai");
  registry = await startRegistry();
  main = await pushTinyModel(registry, workDir, "ai/tiny-serve", 11);
  other = await pushTinyModel(registry, workDir, "team/tiny-other", 12);
  lazy = await pushTinyModel(registry, workDir, "team/tiny-lazy", 13);
  model = await loadForExpectations(main.path);
  server = await startServe(["--model", main.reference, "--parallel", "4"], serveEnv(workDir), { waitReady: true });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });
});

afterAll(async () => {
  await server?.stop();
  await model?.dispose();
  await registry?.stop();
  if (workDir) await removeDir(workDir);
});

describe("models", () => {
  test("lists every cached model, the loaded one marked", async () => {
    const page = await client.models.list();
    const card: (OpenAI.Model & { status?: { value: string } }) | undefined = page.data.find((m) => m.id === main.reference);
    expect(card, JSON.stringify(page.data)).toBeDefined();
    expect(card!.object).toBe("model");
    expect(card!.status?.value).toBe("loaded");
    expect((await client.models.retrieve(main.reference)).id).toBe(main.reference);
  });
});

describe("chat completions", () => {
  test("without streaming: the greedy answer, finish_reason and usage", async () => {
    const expected = await expectedChat(model, HELLO, 12);
    const completion = await client.chat.completions.create({ model: main.reference, messages: HELLO, temperature: 0, max_tokens: 12 });
    expect(completion.object).toBe("chat.completion");
    expect(completion.model).toBe(main.reference);
    expect(completion.choices[0]!.message).toMatchObject({ role: "assistant", content: expected });
    expect(completion.choices[0]!.finish_reason).toBe("length");
    expect(completion.usage!.completion_tokens).toBe(12);
    expect(completion.usage!.prompt_tokens).toBeGreaterThan(3);
    expect(completion.usage!.total_tokens).toBe(completion.usage!.prompt_tokens + 12);
  });

  test("a request without model uses --model; max_completion_tokens and stop are honoured", async () => {
    const full = await expectedChat(model, HELLO, 12);
    const completion = await client.chat.completions.create({ model: "", messages: HELLO, temperature: 0, max_completion_tokens: 3 });
    expect(completion.choices[0]!.message.content).toBe(await expectedChat(model, HELLO, 3));
    // A stop string taken from the middle of the greedy answer cuts it there.
    const stop = full.slice(Math.floor(full.length / 2), Math.floor(full.length / 2) + 2);
    const stopped = await client.chat.completions.create({ model: main.reference, messages: HELLO, temperature: 0, max_tokens: 12, stop: [stop] });
    expect(full.startsWith(stopped.choices[0]!.message.content!)).toBe(true);
    expect(stopped.choices[0]!.message.content!.includes(stop)).toBe(false);
    expect(stopped.choices[0]!.finish_reason).toBe("stop");
  });

  test("streaming: SSE chunks that add up to the same answer, then usage with include_usage", async () => {
    const expected = await expectedChat(model, HELLO, 12);
    const stream = await client.chat.completions.create({
      model: main.reference,
      messages: HELLO,
      temperature: 0,
      max_tokens: 12,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      expect(chunk.object).toBe("chat.completion.chunk");
      const choice = chunk.choices[0];
      if (choice) {
        text += choice.delta.content ?? "";
        finish = choice.finish_reason ?? finish;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe(expected);
    expect(finish).toBe("length");
    expect(usage?.completion_tokens).toBe(12);
    expect(chunks).toBeGreaterThanOrEqual(12);
  });

  test("the next turn of a chat reuses the cached prefix: only the new tokens are evaluated", async () => {
    const first = await client.chat.completions.create({ model: main.reference, messages: HELLO, temperature: 0, max_tokens: 6 });
    const answer = first.choices[0]!.message.content!;
    const second = await client.chat.completions.create({
      model: main.reference,
      messages: [...HELLO, { role: "assistant", content: answer }, { role: "user", content: "And then?" }],
      temperature: 0,
      max_tokens: 4,
    });
    const cached = (second.usage as { prompt_tokens_details?: { cached_tokens?: number } }).prompt_tokens_details?.cached_tokens ?? 0;
    expect(cached).toBeGreaterThanOrEqual(first.usage!.prompt_tokens);
  });

  test("response_format json_schema constrains the answer to JSON matching the schema", async () => {
    const schema = {
      type: "object",
      properties: { color: { type: "string", enum: ["red", "green", "blue"] }, size: { type: "string", enum: ["S", "M"] } },
      required: ["color", "size"],
      additionalProperties: false,
    };
    const completion = await client.chat.completions.create({
      model: main.reference,
      messages: [{ role: "user", content: "Pick a color and a size." }],
      temperature: 0,
      max_tokens: 200,
      response_format: { type: "json_schema", json_schema: { name: "pick", schema } },
    });
    const parsed = JSON.parse(completion.choices[0]!.message.content!) as { color: string; size: string };
    expect(["red", "green", "blue"]).toContain(parsed.color);
    expect(["S", "M"]).toContain(parsed.size);
    expect(Object.keys(parsed).sort()).toEqual(["color", "size"]);
  });

  test("N concurrent greedy requests each give the same text as the same request alone", async () => {
    const prompts = ["Tell me a story", "What is the capital of France?", "Count to five", "Name a fruit", "Why is the sky blue?", "Say something"];
    const expected = await Promise.all(prompts.map((p) => expectedChat(model, [{ role: "user", content: p }], 10)));
    for (let round = 0; round < 2; round++) {
      const answers = await Promise.all(
        prompts.map((p) => client.chat.completions.create({ model: main.reference, messages: [{ role: "user", content: p }], temperature: 0, max_tokens: 10 })),
      );
      expect(answers.map((a) => a.choices[0]!.message.content)).toEqual(expected);
    }
  });
});

describe("completions and embeddings", () => {
  test("legacy completions, with and without streaming", async () => {
    const expected = await model.complete("Once upon a time", { temperature: 0, maxTokens: 8 });
    const completion = await client.completions.create({ model: main.reference, prompt: "Once upon a time", temperature: 0, max_tokens: 8 });
    expect(completion.object).toBe("text_completion");
    expect(completion.choices[0]!.text).toBe(expected);
    expect(completion.choices[0]!.finish_reason).toBe("length");
    const stream = await client.completions.create({ model: main.reference, prompt: "Once upon a time", temperature: 0, max_tokens: 8, stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
    expect(text).toBe(expected);
  });

  test("embeddings: one normalised vector per input, as floats and as the SDK's default base64", async () => {
    const expected = await model.embed("some text");
    const base64 = await client.embeddings.create({ model: main.reference, input: ["some text", "other words"] });
    expect(base64.data).toHaveLength(2);
    expect(base64.data[0]!.embedding).toHaveLength(64);
    base64.data[0]!.embedding.forEach((value, i) => expect(value).toBeCloseTo(expected[i]!, 5));
    expect(Math.hypot(...base64.data[1]!.embedding)).toBeCloseTo(1, 4);
    expect(base64.usage.prompt_tokens).toBeGreaterThan(2);
    const floats = await client.embeddings.create({ model: main.reference, input: "some text", encoding_format: "float" });
    expect(floats.data[0]!.embedding).toEqual(base64.data[0]!.embedding);
  });
});

describe("pull on demand", () => {
  test("a model only in the registry is pulled on first use, once for any number of concurrent requests", async () => {
    const before = metricValue(await (await fetch(`${server.url}/metrics`)).text(), "llama_oci_pulls_total");
    const answers = await Promise.all(
      [1, 2, 3].map(() => client.chat.completions.create({ model: lazy.reference, messages: HELLO, temperature: 0, max_tokens: 4 })),
    );
    const lazyModel = await loadForExpectations(lazy.path);
    try {
      const expected = await expectedChat(lazyModel, HELLO, 4);
      expect(answers.map((a) => a.choices[0]!.message.content)).toEqual([expected, expected, expected]);
    } finally {
      await lazyModel.dispose();
    }
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metricValue(metrics, "llama_oci_pulls_total", { outcome: "ok" }) - before).toBe(1);
    expect(metricValue(metrics, "llama_oci_pull_bytes_total")).toBeGreaterThan(1_000_000);
    expect(server.logs().match(/^pulling .*team\/tiny-lazy:F32$/gm)).toHaveLength(1);
    const ids = (await client.models.list()).data.map((m) => m.id);
    expect(ids).toContain(lazy.reference);
  });

  test("another model can be named by digest", async () => {
    const manifest = await fetch(`${registry.url}/v2/team/tiny-other/manifests/F32`, { headers: { accept: "application/vnd.oci.image.manifest.v1+json" } });
    const digest = manifest.headers.get("docker-content-digest")!;
    const completion = await client.chat.completions.create({ model: `${registry.host}/team/tiny-other@${digest}`, messages: HELLO, temperature: 0, max_tokens: 3 });
    const otherModel = await loadForExpectations(other.path);
    try {
      expect(completion.choices[0]!.message.content).toBe(await expectedChat(otherModel, HELLO, 3));
    } finally {
      await otherModel.dispose();
    }
  });
});

describe("errors as the SDK's error classes", () => {
  test("400 BadRequestError naming the field for a wrong type, an unknown value and a prompt longer than the context", async () => {
    const wrongType = await client.chat.completions.create({ model: main.reference, messages: [{ role: "user", content: 42 as unknown as string }] }).catch((e: unknown) => e);
    expect(wrongType).toBeInstanceOf(OpenAI.BadRequestError);
    expect((wrongType as APIError).param).toBe("messages[0].content");
    expect((wrongType as APIError).message).toMatch(/messages\[0\]\.content must be a string/);

    const badRole = await client.chat.completions.create({ model: main.reference, messages: [{ role: "wizard" as "user", content: "x" }] }).catch((e: unknown) => e);
    expect(badRole).toBeInstanceOf(OpenAI.BadRequestError);
    expect((badRole as APIError).param).toBe("messages[0].role");

    const negative = await client.chat.completions.create({ model: main.reference, messages: HELLO, temperature: -1 }).catch((e: unknown) => e);
    expect(negative).toBeInstanceOf(OpenAI.BadRequestError);
    expect((negative as APIError).param).toBe("temperature");

    const long = await client.chat.completions.create({ model: main.reference, messages: [{ role: "user", content: "hello ".repeat(600) }] }).catch((e: unknown) => e);
    expect(long).toBeInstanceOf(OpenAI.BadRequestError);
    expect((long as APIError).message).toMatch(/the prompt is \d{3,} tokens but the context holds 512/);
    expect((long as APIError).code).toBe("context_length_exceeded");
  });

  test("404 NotFoundError with model_not_found for a reference the registry does not have", async () => {
    const missing = await client.chat.completions.create({ model: `${registry.host}/ai/missing:latest`, messages: HELLO }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(OpenAI.NotFoundError);
    expect((missing as APIError).code).toBe("model_not_found");
    expect((missing as APIError).message).toMatch(/ai\/missing/);
    // The server is still fine.
    const ok = await client.chat.completions.create({ model: main.reference, messages: HELLO, max_tokens: 1 });
    expect(ok.choices).toHaveLength(1);
  });
});

describe("API key", () => {
  let keyed: ServeProcess;
  const KEY = "s3cret-key-for-tests";

  beforeAll(async () => {
    const env = serveEnv(workDir, { LLAMA_OCI_API_KEY: KEY });
    const pulled = await runCli(["pull", main.reference, "-q"], { env });
    expect(pulled.exitCode, describeRun(pulled)).toBe(0);
    keyed = await startServe(["--model", main.reference, "--pull", "never"], env, { waitReady: true });
  });

  afterAll(async () => {
    await keyed?.stop();
  });

  test("every route but /health needs Authorization: Bearer <key>; the key is never logged", async () => {
    const anonymous = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: "wrong-key", maxRetries: 0 });
    const refused = await anonymous.models.list().catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((refused as APIError).code).toBe("invalid_api_key");
    for (const path of ["/metrics", "/api/tags", "/v1/models", "/nope"]) expect((await fetch(`${keyed.url}${path}`)).status, path).toBe(401);
    expect((await fetch(`${keyed.url}/api/tags`, { headers: { authorization: `Bearer ${KEY}x` } })).status).toBe(401);
    expect((await fetch(`${keyed.url}/health`)).status).toBe(200);

    const authorized = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: KEY, maxRetries: 0 });
    const answer = await authorized.chat.completions.create({ model: "", messages: HELLO, temperature: 0, max_tokens: 3 });
    expect(answer.choices[0]!.message.content).toBe(await expectedChat(model, HELLO, 3));
    // --pull never: an uncached model is 404, not a pull.
    const notCached = await authorized.chat.completions.create({ model: other.reference, messages: HELLO }).catch((e: unknown) => e);
    expect(notCached).toBeInstanceOf(OpenAI.NotFoundError);
    expect((notCached as APIError).message).toMatch(/not in the cache.*--pull never/);
    expect(keyed.logs()).not.toContain(KEY);
  });
});
