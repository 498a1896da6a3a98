// The server as a library: the sequence runner on its own (which context a request lands on, the bounded queue),
// serve() on an OS-chosen port, and createRequestHandler() mounted on an app's own http.Server, all in-process with
// a generated model.
import { createServer } from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createRequestHandler, llama, serve, type LlamaModel } from "../src/index.js";
import { QueueFullError } from "../src/server/admission.js";
import { createSequenceRunner } from "../src/server/runner.js";
import { closeServer, listenLocal } from "./helpers/ports.js";
import { expectedChat, SERVE_CHAT_TEMPLATE } from "./helpers/serve.js";
import { DEFAULT_TINY_VOCAB, makeTinyLlama } from "./helpers/tiny-model.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

let workDir: string;
let path: string;
let model: LlamaModel;

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-serve-library");
  path = join(workDir, "tiny.gguf");
  await makeTinyLlama(path, { vocabFrom: DEFAULT_TINY_VOCAB, seed: 51, chatTemplate: SERVE_CHAT_TEMPLATE, contextLength: 512 });
  model = await llama.loadModel(path, { gpuLayers: 0, contextSize: 512, threads: 1 });
});

afterAll(async () => {
  await model?.dispose();
  if (workDir) await removeDir(workDir);
});

async function chatTokens(messages: { role: string; content: string }[]): Promise<Int32Array> {
  return model.tokenize(model.applyChatTemplate(messages, { addAssistantPrompt: true }), { addSpecial: true, parseSpecial: true });
}

describe("sequence runner", () => {
  test("each conversation's next turn lands on the context that holds it: only the new tokens are evaluated", async () => {
    const runner = createSequenceRunner(model, { parallel: 2, maxQueue: 4, context: { contextSize: 512, threads: 1 } });
    try {
      const a1 = [{ role: "user", content: "Tell me about cats" }];
      const b1 = [{ role: "user", content: "Something completely different, about ships and the sea" }];
      const [ra, rb] = await Promise.all([a1, b1].map(async (m) => runner.run(await chatTokens(m), { temperature: 0, maxTokens: 5 })));
      const a2 = [...a1, { role: "assistant", content: ra!.text }, { role: "user", content: "More" }];
      const b2 = [...b1, { role: "assistant", content: rb!.text }, { role: "user", content: "More" }];
      // The second turns arrive in the other order; each still finds its own conversation's context.
      const [rb2, ra2] = await Promise.all([b2, a2].map(async (m) => runner.run(await chatTokens(m), { temperature: 0, maxTokens: 3 })));
      expect(ra2!.timings.cachedTokens).toBeGreaterThanOrEqual(ra!.timings.promptTokens);
      expect(rb2!.timings.cachedTokens).toBeGreaterThanOrEqual(rb!.timings.promptTokens);
      expect(ra2!.text).toBe(await expectedChat(model, a2, 3));
    } finally {
      await runner.dispose();
    }
  });

  test("beyond parallel + maxQueue a request is refused at once; an aborted queued one leaves the queue", async () => {
    const runner = createSequenceRunner(model, { parallel: 1, maxQueue: 1, context: { contextSize: 512, threads: 1 } });
    try {
      const tokens = await chatTokens([{ role: "user", content: "Hello" }]);
      const running = runner.run(tokens, { temperature: 0, maxTokens: 200 });
      const controller = new AbortController();
      const queued = runner.run(tokens, { maxTokens: 2, signal: controller.signal });
      expect(runner.busy).toBe(1);
      expect(runner.queued).toBe(1);
      expect(() => runner.run(tokens, { maxTokens: 2 })).toThrow(QueueFullError);
      controller.abort();
      await expect(queued).rejects.toMatchObject({ code: "ABORTED" });
      expect(runner.queued).toBe(0);
      expect((await running).stopReason).not.toBe("abort");
      expect(runner.busy).toBe(0);
    } finally {
      await runner.dispose();
    }
  });
});

describe("serve() and createRequestHandler()", () => {
  test("serve() listens on a free port, loads the models it is given, answers, and closes", async () => {
    const server = await serve({ port: 0, models: [path], threads: 1, parallel: 2 });
    try {
      await server.ready;
      expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(server.loaded().map((m) => m.name)).toEqual(["tiny"]);
      const response = await fetch(`${server.url}/v1/chat/completions`, {
        method: "POST",
        body: JSON.stringify({ messages: [{ role: "user", content: "Hi" }], temperature: 0, max_tokens: 4 }),
      });
      const body = (await response.json()) as { model: string; choices: { message: { content: string } }[] };
      expect(body.model).toBe("tiny");
      expect(body.choices[0]!.message.content).toBe(await expectedChat(model, [{ role: "user", content: "Hi" }], 4));
    } finally {
      await server.close();
    }
    await expect(fetch(`${server.url}/health`)).rejects.toThrow();
  });

  test("each sequence holds contextSize cells of its own, unless kvUnified makes them share parallel x contextSize", async () => {
    const prompt = "Once upon a time ".repeat(12);
    const promptTokens = (await model.tokenize(prompt, { addSpecial: true, parseSpecial: true })).length;
    expect(promptTokens).toBeGreaterThan(30);
    for (const kvUnified of [false, true]) {
      const server = await serve({ port: 0, models: [path], threads: 1, parallel: 2, contextSize: 256, ...(kvUnified ? { kvUnified } : {}) });
      try {
        await server.ready;
        const response = await fetch(`${server.url}/v1/completions`, {
          method: "POST",
          body: JSON.stringify({ prompt, temperature: 0, max_tokens: -1, ignore_eos: true }),
        });
        const body = (await response.json()) as { choices: { finish_reason: string }[]; usage: { prompt_tokens: number; completion_tokens: number } };
        expect(body.usage.prompt_tokens).toBe(promptTokens);
        // Its own 256 cells full (the last token sampled is never decoded); in the shared 512 the answer runs to
        // the server's cap of contextSize tokens instead.
        expect(body.usage.prompt_tokens + body.usage.completion_tokens, `kvUnified ${String(kvUnified)}`).toBe(kvUnified ? promptTokens + 256 : 257);
        expect(body.choices[0]!.finish_reason).toBe("length");
      } finally {
        await server.close();
      }
    }
  });

  test("createRequestHandler() serves the same API from an app's own http.Server", async () => {
    const api = await createRequestHandler({ models: [path], threads: 1 });
    const http = createServer(api.handler);
    const port = await listenLocal(http);
    try {
      await api.ready;
      expect(await (await fetch(`http://127.0.0.1:${port}/health`)).json()).toEqual({ status: "ok" });
      const tags = (await (await fetch(`http://127.0.0.1:${port}/api/ps`)).json()) as { models: { name: string }[] };
      expect(tags.models.map((m) => m.name)).toEqual(["tiny"]);
      const generated = (await (
        await fetch(`http://127.0.0.1:${port}/api/generate`, { method: "POST", body: JSON.stringify({ prompt: "Hi", stream: false, options: { temperature: 0, num_predict: 3 } }) })
      ).json()) as { response: string };
      expect(generated.response).toBe(await expectedChat(model, [{ role: "user", content: "Hi" }], 3));
    } finally {
      await closeServer(http);
      await api.close();
    }
  });

  test("bad options are refused before anything starts", async () => {
    await expect(serve({ port: 0, parallel: 0 })).rejects.toThrow(/parallel must be an integer from 1/);
    await expect(serve({ port: 0, keepAlive: "soon" })).rejects.toThrow(/keepAlive must be a duration/);
    await expect(serve({ port: 0, models: ["a", "b", "c"], maxModels: 2 })).rejects.toThrow(/3 models to preload but maxModels is 2/);
  });
});
