// The inference API as a library user calls it: a tiny llama-architecture GGUF (random weights, llama.cpp's SPM
// vocab) pushed to a real docker-registry, pulled and loaded with llama.fromDocker(), then completions, streams,
// chats, embeddings, queueing, abort and dispose through the real native addon.
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { llama, LlamaOciError, type LlamaModel } from "../src/index.js";
import { dockerV01 } from "./helpers/artifacts.js";
import { ROOT_DIR } from "./helpers/cli.js";
import { pushArtifact } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { DEFAULT_TINY_VOCAB as VOCAB, makeTinyLlama } from "./helpers/tiny-model.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

/** Zephyr-style template; the SPM vocab file has none of its own. */
const CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '</s>\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";
const GREEDY = { temperature: 0 } as const;
const execFileAsync = promisify(execFile);

let registry: RegistryHandle;
let workDir: string;
let modelPath: string;
let reference: string;
let model: LlamaModel;

const pullEnv = () => ({ PATH: process.env.PATH, HOME: join(workDir, "home") });

async function expectCode(promise: Promise<unknown>, code: string): Promise<LlamaOciError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(LlamaOciError);
  expect((error as LlamaOciError).code).toBe(code);
  return error as LlamaOciError;
}

function norm(vector: Float32Array): number {
  return Math.sqrt(vector.reduce((sum, v) => sum + v * v, 0));
}

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-api");
  registry = await startRegistry();
  modelPath = join(workDir, "tiny.gguf");
  await makeTinyLlama(modelPath, { vocabFrom: VOCAB, seed: 7, chatTemplate: CHAT_TEMPLATE, contextLength: 512 });
  await pushArtifact({ registryUrl: registry.url, repository: "ai/tiny-llama" }, "F32", dockerV01({ ggufs: [await readFile(modelPath)] }));
  reference = `${registry.host}/ai/tiny-llama:F32`;
  model = await llama.fromDocker(reference, { cacheDir: join(workDir, "cache"), env: pullEnv(), gpuLayers: 0, threads: 2 });
});

afterAll(async () => {
  await model?.dispose();
  await registry?.stop();
  if (workDir) await removeDir(workDir);
});

describe("fromDocker and model facts", () => {
  test("pulls by reference, loads the pulled file and reports the GGUF's facts", async () => {
    expect(model.pull?.reference).toBe(`${registry.host}/ai/tiny-llama:F32`);
    expect(model.path).toBe(model.pull?.path);
    expect((await readFile(model.path)).equals(await readFile(modelPath))).toBe(true);
    expect(model.info.architecture).toBe("llama");
    expect(model.info.vocabSize).toBe(32000);
    expect(model.info.embeddingLength).toBe(64);
    expect(model.info.layerCount).toBe(2);
    expect(model.info.trainContextLength).toBe(512);
    expect(model.info.chatTemplate).toBe(CHAT_TEMPLATE);
    expect(model.metadata["general.architecture"]).toBe("llama");
    expect(model.metadata["general.name"]).toBe("tiny-llama");
    expect(model.contextOptions.contextSize).toBe(512);
  });

  test("tokenize and detokenize round-trip text; addSpecial puts BOS first", async () => {
    const plain = await model.tokenize("Hello world", { addSpecial: false });
    const withBos = await model.tokenize("Hello world");
    expect(withBos[0]).toBe(model.info.bosToken);
    expect([...withBos.subarray(1)]).toEqual([...plain]);
    expect((await model.detokenize(plain)).trim()).toBe("Hello world");
  });

  test("a missing file is NOT_FOUND and a truncated GGUF is MODEL_LOAD, both before any native crash", async () => {
    await expectCode(llama.loadModel(join(workDir, "nope.gguf")), "NOT_FOUND");
    const bytes = await readFile(modelPath);
    const truncated = join(workDir, "truncated.gguf");
    await writeFile(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)));
    const error = await expectCode(llama.loadModel(truncated), "MODEL_LOAD");
    expect(error.message).toContain(truncated);
  });
});

describe("completion", () => {
  test("greedy completion is deterministic; the stream's pieces and onTextChunk add up to the same text", async () => {
    const first = await model.completeWithMeta("Once upon a time", { ...GREEDY, maxTokens: 16 });
    expect(first.text.length).toBeGreaterThan(0);
    expect(["maxTokens", "eos"]).toContain(first.stopReason);
    expect(first.timings.generatedTokens).toBe(first.tokens.length);
    expect(first.timings.generatedTokens).toBeLessThanOrEqual(16);
    expect(first.timings.promptTokens).toBe((await model.tokenize("Once upon a time")).length);
    expect(first.timings.generatedTokensPerSecond).toBeGreaterThan(0);

    expect(await model.complete("Once upon a time", { ...GREEDY, maxTokens: 16 })).toBe(first.text);

    const chunks: string[] = [];
    const stream = model.generate("Once upon a time", { ...GREEDY, maxTokens: 16, onTextChunk: (t) => chunks.push(t) });
    const pieces: string[] = [];
    for await (const piece of stream) pieces.push(piece);
    expect(pieces.join("")).toBe(first.text);
    expect(chunks).toEqual(pieces);
    expect((await stream.result).text).toBe(first.text);
  });

  test("maxTokens bounds the output and a seed makes sampling repeatable", async () => {
    const short = await model.completeWithMeta("The sky", { ...GREEDY, maxTokens: 3 });
    expect(short.timings.generatedTokens).toBeLessThanOrEqual(3);
    if (short.stopReason === "maxTokens") expect(short.timings.generatedTokens).toBe(3);

    const sampled = { temperature: 1.0, topK: 0, topP: 1, minP: 0, maxTokens: 12, seed: 1234 };
    const a = await model.complete("The sky", sampled);
    const b = await model.complete("The sky", sampled);
    expect(a).toBe(b);
  });

  test("a stop string ends generation and is left out of the text", async () => {
    const full = await model.complete("Once upon a time", { ...GREEDY, maxTokens: 24 });
    const stop = full.slice(Math.floor(full.length / 2), Math.floor(full.length / 2) + 2);
    expect(stop.length).toBe(2);
    const stopped = await model.completeWithMeta("Once upon a time", { ...GREEDY, maxTokens: 24, stop: [stop] });
    expect(stopped.stopReason).toBe("stop");
    expect(stopped.text).toBe(full.slice(0, full.indexOf(stop)));
  });

  test("a GBNF grammar constrains the output", async () => {
    const result = await model.completeWithMeta("Answer:", { ...GREEDY, maxTokens: 8, grammar: 'root ::= "yes" | "no"' });
    expect(["yes", "no"]).toContain(result.text);
    expect(result.stopReason).toBe("eos");
  });

  test("a JSON schema becomes a grammar: the output is a prefix of JSON of that shape", async () => {
    const schema = { type: "object", properties: { ok: { type: "boolean" } }, required: ["ok"], additionalProperties: false };
    const result = await model.completeWithMeta("JSON:", { ...GREEDY, maxTokens: 32, jsonSchema: schema });
    expect(result.text.trimStart().startsWith("{")).toBe(true);
    if (result.stopReason === "eos") expect(typeof (JSON.parse(result.text) as { ok: unknown }).ok).toBe("boolean");
  });

  test("two concurrent completions on one model are queued and equal the sequential results", async () => {
    const options = { ...GREEDY, maxTokens: 12 };
    const sequential = [await model.complete("Alpha beta", options), await model.complete("Gamma delta", options)];
    const concurrent = await Promise.all([model.complete("Alpha beta", options), model.complete("Gamma delta", options)]);
    expect(concurrent).toEqual(sequential);
  });

  test("a prompt longer than the context is rejected with INVALID_ARGUMENT and the context stays usable", async () => {
    const context = await model.createContext({ contextSize: 32 });
    try {
      // llama.cpp may round the size up; the limit is what the context really holds.
      expect(context.contextSize).toBeGreaterThanOrEqual(32);
      const error = await expectCode(context.complete("word ".repeat(context.contextSize + 8), { maxTokens: 4 }), "INVALID_ARGUMENT");
      expect(error.message).toMatch(new RegExp(`the prompt is \\d+ tokens but the context holds ${context.contextSize}`));
      expect((await context.completeWithMeta("Hi", { ...GREEDY, maxTokens: 2 })).timings.generatedTokens).toBeGreaterThan(0);
    } finally {
      await context.dispose();
    }
  });
});

describe("abort", () => {
  test("aborting mid-generation resolves with the partial text and stopReason abort; the context stays usable", async () => {
    const context = await model.createContext({ contextSize: 512 });
    try {
      const controller = new AbortController();
      let pieces = 0;
      const result = await context.completeWithMeta("Once upon a time", {
        ...GREEDY,
        maxTokens: 400,
        signal: controller.signal,
        onTextChunk: () => {
          if (++pieces === 3) controller.abort();
        },
      });
      expect(result.stopReason).toBe("abort");
      expect(result.timings.generatedTokens).toBeGreaterThanOrEqual(3);
      expect(result.timings.generatedTokens).toBeLessThan(400);

      const again = await context.complete("Once upon a time", { ...GREEDY, maxTokens: 16 });
      expect(again).toBe(await model.complete("Once upon a time", { ...GREEDY, maxTokens: 16 }));
    } finally {
      await context.dispose();
    }
  });

  test("an already aborted signal resolves at once with nothing generated", async () => {
    const result = await model.completeWithMeta("Hello", { maxTokens: 8, signal: AbortSignal.abort() });
    expect(result).toMatchObject({ text: "", stopReason: "abort" });
    expect(result.timings.generatedTokens).toBe(0);
  });

  test("leaving a for-await loop early stops the generation", async () => {
    const stream = model.generate("Once upon a time", { ...GREEDY, maxTokens: 400 });
    let seen = 0;
    for await (const _piece of stream) if (++seen === 2) break;
    const result = await stream.result;
    expect(result.stopReason).toBe("abort");
    expect(result.timings.generatedTokens).toBeLessThan(400);
  });

  test("aborting a load rejects with ABORTED", async () => {
    await expectCode(llama.loadModel(modelPath, { signal: AbortSignal.abort() }), "ABORTED");
  });
});

describe("chat", () => {
  test("keeps the history, formats it with the model's template and reuses the KV cache across turns", async () => {
    const chat = model.createChat({ systemPrompt: "You are terse." });
    try {
      const first = await chat.sendWithMeta("Hi!", { ...GREEDY, maxTokens: 8 });
      expect(first.timings.cachedTokens).toBe(0);
      expect(chat.history).toEqual([
        { role: "system", content: "You are terse." },
        { role: "user", content: "Hi!" },
        { role: "assistant", content: first.text },
      ]);

      const formatted = model.applyChatTemplate([...chat.history, { role: "user", content: "More?" }]);
      expect(formatted).toBe(`<|system|>\nYou are terse.</s>\n<|user|>\nHi!</s>\n<|assistant|>\n${first.text}</s>\n<|user|>\nMore?</s>\n<|assistant|>\n`);

      const chunks: string[] = [];
      const second = await chat.sendWithMeta("More?", { ...GREEDY, maxTokens: 8, onTextChunk: (t) => chunks.push(t) });
      expect(chunks.join("")).toBe(second.text);
      // Everything up to the first answer was already in the KV cache.
      const firstTurnPrompt = await model.tokenize(model.applyChatTemplate(chat.history.slice(0, 2)), { parseSpecial: true });
      expect(second.timings.cachedTokens).toBeGreaterThanOrEqual(firstTurnPrompt.length);
      expect(chat.history).toHaveLength(5);

      // The same conversation replayed on a fresh session gives the same answers (greedy).
      const replay = model.createChat({ systemPrompt: "You are terse." });
      expect((await replay.send("Hi!", { ...GREEDY, maxTokens: 8 })).content).toBe(first.text);
      const pieces: string[] = [];
      const stream = replay.stream("More?", { ...GREEDY, maxTokens: 8 });
      for await (const delta of stream) pieces.push(delta.content);
      expect(pieces.join("")).toBe(second.text);
      expect((await stream.result).content).toBe(second.text);
      await replay.dispose();

      await chat.reset();
      expect(chat.history).toEqual([{ role: "system", content: "You are terse." }]);
    } finally {
      await chat.dispose();
      await chat.dispose();
    }
    await expectCode(chat.send("again"), "DISPOSED");
  });
});

describe("embeddings", () => {
  test("embed() returns a normalised vector of the embedding size, the same for the same text", async () => {
    const a = await model.embed("some text");
    expect(a).toBeInstanceOf(Float32Array);
    expect(a.length).toBe(64);
    expect(norm(a)).toBeCloseTo(1, 4);
    expect([...(await model.embed("some text"))]).toEqual([...a]);
    expect([...(await model.embed("other words entirely"))]).not.toEqual([...a]);
    const raw = await model.embed("some text", { normalize: false });
    const scaled = raw.map((v) => v / norm(raw));
    for (let i = 0; i < a.length; i++) expect(scaled[i]).toBeCloseTo(a[i]!, 4);
  });
});

describe("a bigger model (4 layers, 256 wide)", () => {
  let bigger: string;

  beforeAll(async () => {
    bigger = join(workDir, "bigger.gguf");
    await makeTinyLlama(bigger, { vocabFrom: VOCAB, seed: 3, nEmbd: 256, nLayer: 4, nFf: 768, nHead: 4, nHeadKv: 4, tensorType: "f16", contextLength: 2048 });
  });

  test("a 5 ms timer keeps ticking while a model loads and generates", async () => {
    let last = performance.now();
    let maxLag = 0;
    let ticks = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      maxLag = Math.max(maxLag, now - last - 5);
      last = now;
      ticks++;
    }, 5);
    try {
      // One thread, so that the measure is whether native work blocks the event loop, not CPU contention on 2 cores.
      const loaded = await llama.loadModel(bigger, { gpuLayers: 0, useMmap: false, threads: 1 });
      try {
        await loaded.complete("word ".repeat(300), { ...GREEDY, maxTokens: 48 });
        await loaded.embed("some text");
      } finally {
        await loaded.dispose();
      }
    } finally {
      clearInterval(timer);
    }
    expect(ticks).toBeGreaterThan(10);
    expect(maxLag).toBeLessThan(100);
  });

  test("aborting during prompt evaluation returns early with nothing generated; the context stays usable", async () => {
    const loaded = await llama.loadModel(bigger, { gpuLayers: 0 });
    try {
      const context = await loaded.createContext({ contextSize: 2048 });
      const prompt = "word ".repeat(1000);
      const full = await context.completeWithMeta(prompt, { ...GREEDY, maxTokens: 1 });
      await context.clear();

      const controller = new AbortController();
      const started = performance.now();
      setTimeout(() => controller.abort(), full.timings.promptMs / 4);
      const aborted = await context.completeWithMeta(prompt, { ...GREEDY, maxTokens: 1, signal: controller.signal });
      const elapsed = performance.now() - started;
      expect(aborted.stopReason).toBe("abort");
      expect(aborted.timings.generatedTokens).toBe(0);
      expect(elapsed).toBeLessThan(full.timings.promptMs * 0.75);

      expect(await context.complete(prompt, { ...GREEDY, maxTokens: 1 })).toBe(full.text);
    } finally {
      await loaded.dispose();
    }
  });
});

describe("llama.cpp's log", () => {
  test("setLogger routes llama.cpp's log to a function at the chosen level; null silences it again", async () => {
    const seen: { level: string; text: string }[] = [];
    // Lines reach JavaScript asynchronously; give the ones already emitted time to arrive.
    const settle = () => new Promise((resolve) => setTimeout(resolve, 100));
    llama.setLogger((level, text) => seen.push({ level, text }), "info");
    try {
      await (await llama.loadModel(modelPath, { gpuLayers: 0 })).dispose();
    } finally {
      llama.setLogger(null);
    }
    await settle();
    expect(seen.some(({ text }) => text.includes("llama_model_loader"))).toBe(true);
    expect(seen.every(({ level }) => level !== "debug")).toBe(true);

    const count = seen.length;
    await (await llama.loadModel(modelPath, { gpuLayers: 0 })).dispose();
    await settle();
    expect(seen.length).toBe(count);
  });
});

describe("dispose", () => {
  test("dispose stops running work, rejects queued work, is idempotent, and later use throws DISPOSED", async () => {
    const own = await llama.loadModel(modelPath, { gpuLayers: 0, contextSize: 4096 });
    let generating!: () => void;
    const firstChunk = new Promise<void>((resolve) => (generating = resolve));
    const running = own.completeWithMeta("Once upon a time", { ...GREEDY, maxTokens: 4000, onTextChunk: () => generating() });
    const queued = own.complete("Queued", { ...GREEDY, maxTokens: 4 });
    queued.catch(() => {});
    await firstChunk;
    await Promise.all([own.dispose(), own.dispose()]);
    const stopped = await running;
    expect(stopped.stopReason).toBe("abort");
    expect(stopped.timings.generatedTokens).toBeLessThan(4000);
    await expectCode(queued, "DISPOSED");
    await own.dispose();
    expect(own.disposed).toBe(true);
    await expectCode(own.complete("x"), "DISPOSED");
    await expectCode(own.tokenize("x"), "DISPOSED");
    expect(() => own.generate("x")).toThrow(LlamaOciError);
    expect(() => own.createChat()).toThrow(/disposed/);
  });

  test("Symbol.asyncDispose frees a model at the end of an `await using` block", async () => {
    let escaped: LlamaModel | undefined;
    {
      await using scoped = await llama.loadModel(modelPath, { gpuLayers: 0 });
      escaped = scoped;
      expect(await scoped.complete("Hi", { ...GREEDY, maxTokens: 2 })).toBeTypeOf("string");
    }
    expect(escaped.disposed).toBe(true);
    await expectCode(escaped.complete("Hi"), "DISPOSED");
  });

  test("models that are never disposed are freed by the garbage collector", async () => {
    // A child with --expose-gc: memory of 3 held models gives the size of one; 12 forgotten ones must not add up.
    const script = `
      import { llama } from ${JSON.stringify(join(ROOT_DIR, "dist", "esm", "index.js"))};
      const path = ${JSON.stringify(modelPath)};
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      const settle = async () => { for (let i = 0; i < 3; i++) { globalThis.gc(); await sleep(20); } };
      const use = async () => {
        const m = await llama.loadModel(path, { gpuLayers: 0, useMmap: false });
        await m.complete("Hi", { maxTokens: 2, temperature: 0 });
        return m;
      };
      await (await use()).dispose(); await settle();
      let base = process.memoryUsage().rss;
      const held = [await use(), await use(), await use()];
      await settle();
      const perModel = (process.memoryUsage().rss - base) / 3;
      for (const m of held) await m.dispose();
      held.length = 0; await settle();
      base = process.memoryUsage().rss;
      for (let i = 0; i < 12; i++) { await use(); await settle(); }
      await settle();
      console.log(JSON.stringify({ perModel, growth: process.memoryUsage().rss - base }));`;
    const { stdout } = await execFileAsync(process.execPath, ["--expose-gc", "--input-type=module", "-e", script], { timeout: 60_000 });
    const { perModel, growth } = JSON.parse(stdout) as { perModel: number; growth: number };
    expect(perModel).toBeGreaterThan(10e6);
    expect(growth).toBeLessThan(4 * perModel);
  });

  test("a context of a disposed model cannot be used", async () => {
    const own = await llama.loadModel(modelPath, { gpuLayers: 0 });
    const context = await own.createContext({ contextSize: 64 });
    await own.dispose();
    expect(context.disposed).toBe(true);
    await expectCode(context.complete("x"), "DISPOSED");
  });
});
