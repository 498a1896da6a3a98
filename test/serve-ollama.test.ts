// `llama-oci serve` through the official `ollama` npm package: version, pull with NDJSON progress, tags, show, chat
// and generate (streamed and not), embed, ps, keep_alive and delete, against a real server process and registry.
import { Ollama } from "ollama";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { LlamaModel } from "../src/index.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { expectedChat, loadForExpectations, pushTinyModel, serveEnv, startServe, type PushedModel, type ServeProcess } from "./helpers/serve.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

let registry: RegistryHandle;
let workDir: string;
let tiny: PushedModel;
let model: LlamaModel;
let server: ServeProcess;
let ollama: Ollama;

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-serve-ollama");
  registry = await startRegistry();
  tiny = await pushTinyModel(registry, workDir, "ai/tiny-ollama", 21);
  model = await loadForExpectations(tiny.path);
  server = await startServe([], serveEnv(workDir));
  ollama = new Ollama({ host: server.url });
});

afterAll(async () => {
  await server?.stop();
  await model?.dispose();
  await registry?.stop();
  if (workDir) await removeDir(workDir);
});

describe("ollama client", () => {
  test("version, and an empty list of tags before anything is pulled", async () => {
    expect((await ollama.version()).version).toMatch(/^\d+\.\d+\.\d+/);
    expect((await ollama.list()).models).toEqual([]);
  });

  test("pull streams progress: manifest, each layer up to its size, success; then tags lists the model", async () => {
    const statuses: string[] = [];
    let completedLayer = false;
    for await (const progress of await ollama.pull({ model: tiny.reference, stream: true })) {
      statuses.push(progress.status);
      if (progress.status.startsWith("pulling ") && progress.total > 1_000_000 && progress.completed === progress.total) completedLayer = true;
    }
    expect(statuses[0]).toBe("pulling manifest");
    expect(statuses.at(-1)).toBe("success");
    expect(statuses).toContain("writing manifest");
    expect(completedLayer, statuses.join("\n")).toBe(true);

    const tags = await ollama.list();
    const entry = tags.models.find((m) => m.name === tiny.reference);
    expect(entry, JSON.stringify(tags)).toBeDefined();
    expect(entry!.size).toBeGreaterThan(1_000_000);
    expect(entry!.digest).toMatch(/^[0-9a-f]{64}$/);
    expect(entry!.details.family).toBe("llama");
    expect(entry!.details.format).toBe("gguf");
  });

  test("a failing pull answers with the pull's own error", async () => {
    const error = await ollama.pull({ model: `${registry.host}/ai/not-there:latest` }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(/not-there/);
  });

  test("show: template, details and model_info from the GGUF", async () => {
    const shown = await ollama.show({ model: tiny.reference });
    expect(shown.template).toContain("add_generation_prompt");
    expect(shown.details.family).toBe("llama");
    expect((shown.model_info as unknown as Record<string, unknown>)["general.architecture"]).toBe("llama");
    expect(shown.capabilities).toContain("completion");
  });

  test("chat streams NDJSON pieces that add up to the greedy answer; without stream, one object", async () => {
    const messages = [{ role: "user", content: "Hello there" }];
    const expected = await expectedChat(model, messages, 10);
    let text = "";
    let last: { done: boolean; done_reason: string; eval_count: number } | undefined;
    for await (const part of await ollama.chat({ model: tiny.reference, messages, stream: true, options: { temperature: 0, num_predict: 10 } })) {
      text += part.message.content;
      last = part;
    }
    expect(text).toBe(expected);
    expect(last).toMatchObject({ done: true, done_reason: "length", eval_count: 10 });

    const whole = await ollama.chat({ model: tiny.reference, messages, stream: false, options: { temperature: 0, num_predict: 10 } });
    expect(whole.message).toMatchObject({ role: "assistant", content: expected });
    expect(whole.prompt_eval_count).toBeGreaterThan(3);
  });

  test("generate, with format: a JSON schema", async () => {
    const expected = await expectedChat(model, [{ role: "user", content: "Why?" }], 6);
    const generated = await ollama.generate({ model: tiny.reference, prompt: "Why?", stream: false, options: { temperature: 0, num_predict: 6 } });
    expect(generated.response).toBe(expected);
    expect(generated.context.length).toBeGreaterThan(6);

    const schema = { type: "object", properties: { ok: { type: "boolean" } }, required: ["ok"], additionalProperties: false };
    const json = await ollama.generate({ model: tiny.reference, prompt: "Answer.", format: schema, stream: false, options: { temperature: 0, num_predict: 100 } });
    expect(typeof (JSON.parse(json.response!) as { ok: unknown }).ok).toBe("boolean");
  });

  test("embed: one normalised vector per input", async () => {
    const result = await ollama.embed({ model: tiny.reference, input: ["some text", "more text"] });
    expect(result.embeddings).toHaveLength(2);
    expect(result.embeddings[0]).toHaveLength(64);
    const expected = await model.embed("some text");
    result.embeddings[0]!.forEach((value, i) => expect(value).toBeCloseTo(expected[i]!, 5));
  });

  test("ps lists the loaded model; keep_alive 0 unloads it; delete removes it from tags", async () => {
    const ps = await ollama.ps();
    const loaded = ps.models.find((m) => m.name === tiny.reference);
    expect(loaded, JSON.stringify(ps)).toBeDefined();
    expect(new Date(loaded!.expires_at).getTime()).toBeGreaterThan(Date.now());

    const unloaded = await ollama.generate({ model: tiny.reference, prompt: "", keep_alive: 0 });
    expect(unloaded.done_reason).toBe("unload");
    const deadline = Date.now() + 5_000;
    while ((await ollama.ps()).models.length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect((await ollama.ps()).models).toEqual([]);

    await ollama.delete({ model: tiny.reference });
    expect((await ollama.list()).models.find((m) => m.name === tiny.reference)).toBeUndefined();
    const again = await ollama.delete({ model: tiny.reference }).catch((e: unknown) => e);
    expect((again as { status_code?: number }).status_code).toBe(404);
  });

  test("errors are Ollama's { error } with the field named", async () => {
    const response = await fetch(`${server.url}/api/chat`, { method: "POST", body: JSON.stringify({ model: tiny.reference, messages: "hi" }) });
    expect(response.status).toBe(400);
    expect(await response.json()).toEqual({ error: "messages must be an array or null" });
    const badKeepAlive = await fetch(`${server.url}/api/generate`, { method: "POST", body: JSON.stringify({ model: tiny.reference, keep_alive: "soon" }) });
    expect(badKeepAlive.status).toBe(400);
    expect(((await badKeepAlive.json()) as { error: string }).error).toMatch(/keep_alive/);
  });
});
