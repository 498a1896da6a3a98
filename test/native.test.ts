/**
 * The native addon on its own (build/Release/llama_oci.node loaded directly): every NativeBinding call of
 * src/llama/native-types.ts against tiny generated llama models, including aborts, errors and clean-up.
 */
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type {
  NativeBinding,
  NativeContext,
  NativeContextOptions,
  NativeGenerateParams,
  NativeGenerateResult,
  NativeModel,
  NativeModelOptions,
  NativeSamplingOptions,
} from "../src/llama/native-types.js";
import { makeTinyLlama } from "./helpers/tiny-model.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const ADDON = join(import.meta.dirname, "..", "build", "Release", "llama_oci.node");
const binding = createRequire(import.meta.url)(ADDON) as NativeBinding;
const VOCAB = join(import.meta.dirname, "..", "deps", "llama.cpp", "models", "ggml-vocab-llama-spm.gguf");

const MODEL_OPTIONS: NativeModelOptions = { gpuLayers: 0, useMmap: true, useMlock: false, vocabOnly: false };
// One thread: the test machine is small and shared, and ggml's spinning threads slow to a crawl when oversubscribed.
const CONTEXT_OPTIONS: NativeContextOptions = {
  contextSize: 512,
  batchSize: 512,
  ubatchSize: 512,
  threads: 1,
  threadsBatch: 1,
  flashAttention: "auto",
  embeddings: false,
  pooling: "unspecified",
};
const GREEDY: NativeSamplingOptions = {
  temperature: 0,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  repeatPenalty: 1,
  repeatLastN: 64,
  frequencyPenalty: 0,
  presencePenalty: 0,
  seed: 1,
  grammar: null,
  grammarRoot: "root",
};

let dir: string;
let modelPath: string;
let model: NativeModel;
const contexts: NativeContext[] = [];

beforeAll(async () => {
  dir = await makeTempDir("llama-oci-native");
  modelPath = (await makeTinyLlama(join(dir, "tiny.gguf"), { vocabFrom: VOCAB, contextLength: 4096 })).path;
  model = await binding.loadModel(modelPath, MODEL_OPTIONS, null, binding.createAbortFlag());
});

afterAll(async () => {
  for (const context of contexts) context.dispose();
  model?.dispose();
  await removeDir(dir);
});

async function newContext(options: Partial<NativeContextOptions> = {}, from: NativeModel = model): Promise<NativeContext> {
  const context = await from.createContext({ ...CONTEXT_OPTIONS, ...options });
  contexts.push(context);
  return context;
}

interface Generation extends NativeGenerateResult {
  pieces: string[];
}

async function generate(context: NativeContext, tokens: Int32Array, params: Partial<Omit<NativeGenerateParams, "tokens" | "onText">> = {}): Promise<Generation> {
  const pieces: string[] = [];
  const result = await context.generate({
    tokens,
    maxTokens: 16,
    sampling: GREEDY,
    stop: [],
    ignoreEos: true,
    abort: binding.createAbortFlag(),
    ...params,
    onText: (text) => pieces.push(text),
  });
  return { ...result, pieces };
}

/** A deterministic prompt of `length` in-vocabulary tokens starting with BOS. */
function longPrompt(length: number): Int32Array {
  return new Int32Array(length).map((_, i) => (i === 0 ? 1 : 100 + ((i * 7919) % 30000)));
}

describe("system and model", () => {
  test("systemInfo reports the CPU backend, its device and llama.cpp's version", () => {
    const info = binding.systemInfo();
    expect(info.gpuBackend).toBe("cpu");
    expect(info.backends).toContain("CPU");
    const cpu = info.devices.find((d) => d.type === "cpu");
    expect(cpu).toBeDefined();
    expect(cpu!.memoryTotal).toBeGreaterThan(0);
    expect(info.systemInfo).toMatch(/CPU :/);
    expect(info.llamaCppVersion).toMatch(/^\S+ \([0-9a-f]{7,}\)$/);
    expect(info.supportsMmap).toBe(true);
    expect(info.maxDevices).toBeGreaterThan(0);
  });

  test("loadModel reports increasing progress that ends at 1", async () => {
    const fractions: number[] = [];
    const loaded = await binding.loadModel(modelPath, MODEL_OPTIONS, (f) => fractions.push(f), binding.createAbortFlag());
    loaded.dispose();
    expect(fractions.length).toBeGreaterThan(0);
    expect(fractions.at(-1)).toBe(1);
    for (let i = 1; i < fractions.length; i++) expect(fractions[i]).toBeGreaterThan(fractions[i - 1]!);
  });

  test("info and metadata describe the GGUF", () => {
    const info = model.info();
    expect(info).toMatchObject({
      architecture: "llama",
      trainContextLength: 4096,
      embeddingLength: 64,
      layerCount: 2,
      headCount: 4,
      headCountKv: 2,
      vocabSize: 32000,
      bosToken: 1,
      eosToken: 2,
      chatTemplate: null,
      hasDecoder: true,
      isRecurrent: false,
    });
    expect(info.parameters).toBeGreaterThan(4_000_000);
    expect(info.sizeBytes).toBeGreaterThan(16_000_000);
    expect(info.description).toMatch(/^llama /);
    const metadata = model.metadata();
    expect(metadata["general.architecture"]).toBe("llama");
    expect(metadata["general.name"]).toBe("tiny-llama");
    expect(metadata["llama.embedding_length"]).toBe("64");
  });

  test("tokenize and detokenize round-trip text, multi-byte characters included", async () => {
    const text = "Hello world, naïve café 日本語 🦙";
    const tokens = await model.tokenize(text, true, false);
    expect(tokens).toBeInstanceOf(Int32Array);
    expect(tokens[0]).toBe(1);
    const plain = await model.tokenize(text, false, false);
    expect(Array.from(plain)).toEqual(Array.from(tokens.slice(1)));
    expect(await model.detokenize(plain, false, false)).toBe(text);
    // llama.cpp keeps SentencePiece's leading space when it removes the BOS token.
    expect(await model.detokenize(tokens, true, false)).toBe(` ${text}`);
    await expect(model.detokenize(new Int32Array([5, 99999]), false, false)).rejects.toThrow("token 99999 at index 1 is outside the vocabulary");
  });

  test("a vocab-only load tokenizes but cannot run", async () => {
    const vocab = await binding.loadModel(VOCAB, { ...MODEL_OPTIONS, vocabOnly: true }, null, null as never);
    expect(vocab.info().layerCount).toBe(0);
    expect(Array.from(await vocab.tokenize("Hello", true, false))).toEqual(Array.from(await model.tokenize("Hello", true, false)));
    await expect(vocab.createContext(CONTEXT_OPTIONS)).rejects.toThrow("vocabOnly");
    vocab.dispose();
  });
});

describe("generation", () => {
  let prompt: Int32Array;
  beforeAll(async () => {
    prompt = await model.tokenize("Once upon a time, there was a little llama", true, false);
  });

  test("greedy generation is deterministic, and reusing the KV cache does not change it", async () => {
    const a = await generate(await newContext(), prompt);
    const bContext = await newContext();
    const b = await generate(bContext, prompt);
    expect(a.generatedTokens).toBe(16);
    expect(a.stopReason).toBe("maxTokens");
    expect(Array.from(b.tokens)).toEqual(Array.from(a.tokens));
    expect(b.text).toBe(a.text);
    expect(a.pieces.join("")).toBe(a.text);
    expect(a.promptTokens).toBe(prompt.length);
    expect(a.cachedTokens).toBe(0);

    // Same prompt again on the warm context: all but the last prompt token come from the cache.
    expect(bContext.cachedTokenCount()).toBe(prompt.length + 15);
    const c = await generate(bContext, prompt);
    expect(c.cachedTokens).toBe(prompt.length - 1);
    expect(Array.from(c.tokens)).toEqual(Array.from(a.tokens));

    // The prompt extended by what was generated continues exactly where the first run did.
    const extended = new Int32Array([...prompt, ...a.tokens.slice(0, 8)]);
    const d = await generate(bContext, extended, { maxTokens: 8 });
    expect(d.cachedTokens).toBe(extended.length - 1);
    expect(Array.from(d.tokens)).toEqual(Array.from(a.tokens.slice(8, 16)));
  });

  test("seeded sampling is reproducible and the seed matters", async () => {
    const context = await newContext();
    const sampling = { ...GREEDY, temperature: 1.5, topK: 0, topP: 1, minP: 0 };
    const a = await generate(context, prompt, { sampling: { ...sampling, seed: 42 }, maxTokens: 24 });
    const b = await generate(context, prompt, { sampling: { ...sampling, seed: 42 }, maxTokens: 24 });
    const c = await generate(context, prompt, { sampling: { ...sampling, seed: 43 }, maxTokens: 24 });
    expect(Array.from(b.tokens)).toEqual(Array.from(a.tokens));
    expect(Array.from(c.tokens)).not.toEqual(Array.from(a.tokens));
  });

  test("repetition penalties and top-k reach the sampler chain", async () => {
    const context = await newContext();
    const plain = await generate(context, prompt, { maxTokens: 32 });
    // Greedy decoding of a random model falls into loops; a strong repetition penalty breaks them.
    expect(new Set(plain.tokens).size).toBeLessThan(32);
    const penalized = await generate(context, prompt, { maxTokens: 32, sampling: { ...GREEDY, repeatPenalty: 3, repeatLastN: -1 } });
    expect(new Set(penalized.tokens).size).toBeGreaterThan(new Set(plain.tokens).size);
    // top-k 1 leaves only the most likely token, whatever the temperature and seed.
    const topOne = await generate(context, prompt, { maxTokens: 32, sampling: { ...GREEDY, temperature: 2, topK: 1, seed: 7 } });
    expect(Array.from(topOne.tokens)).toEqual(Array.from(plain.tokens));
  });

  test("maxTokens is honoured, and 0 only evaluates the prompt", async () => {
    const context = await newContext();
    const five = await generate(context, prompt, { maxTokens: 5 });
    expect(five.generatedTokens).toBe(5);
    expect(five.tokens.length).toBe(5);
    expect(five.stopReason).toBe("maxTokens");
    context.clear();
    expect(context.cachedTokenCount()).toBe(0);
    const none = await generate(context, prompt, { maxTokens: 0 });
    expect(none).toMatchObject({ generatedTokens: 0, text: "", stopReason: "maxTokens" });
    expect(context.cachedTokenCount()).toBe(prompt.length);
  });

  test("a stop string ends generation and is cut from the text and the stream", async () => {
    const context = await newContext();
    const free = await generate(context, prompt, { maxTokens: 24 });
    // A stop string that starts inside the third piece and runs into the fourth, so it spans tokens.
    const start = free.pieces.slice(0, 2).join("").length + Math.floor(free.pieces[2]!.length / 2);
    const stop = free.text.slice(start, start + free.pieces[2]!.length);
    const expected = free.text.slice(0, free.text.indexOf(stop));
    const stopped = await generate(context, prompt, { maxTokens: 24, stop: ["never appears", stop] });
    expect(stopped.stopReason).toBe("stop");
    expect(stopped.text).toBe(expected);
    expect(stopped.pieces.join("")).toBe(expected);
    expect(stopped.generatedTokens).toBeLessThan(24);
  });

  test("a grammar constrains the output", async () => {
    const context = await newContext();
    const result = await generate(context, prompt, { sampling: { ...GREEDY, grammar: 'root ::= "yes" | "no"' }, ignoreEos: false, maxTokens: 10 });
    expect(["yes", "no"]).toContain(result.text);
    expect(result.stopReason).toBe("eos");
    await expect(generate(context, prompt, { sampling: { ...GREEDY, grammar: 'start ::= "x"' } })).rejects.toThrow(
      "invalid grammar: grammar does not contain a 'root' symbol",
    );
  });

  test("characters split across byte tokens are streamed whole", async () => {
    const context = await newContext();
    // 🦙 and 𝄞 are not in the vocabulary: the grammar can only produce them from single-byte tokens.
    const target = "🦙𝄞 ok é";
    const result = await generate(context, prompt, {
      sampling: { ...GREEDY, grammar: `root ::= ${JSON.stringify(target)}` },
      ignoreEos: false,
      maxTokens: 40,
    });
    expect(result.text).toBe(target);
    expect(result.pieces.join("")).toBe(target);
    for (const piece of result.pieces) expect(piece).not.toContain("\uFFFD");
    // Fewer pieces than tokens: the byte tokens were held until their characters were complete.
    expect(result.pieces.length).toBeLessThan(result.generatedTokens - 1);
  });

  test("a JSON schema grammar yields JSON that matches the schema", async () => {
    const schema = {
      type: "object",
      properties: { answer: { type: "boolean" }, mood: { enum: ["happy", "sad"] } },
      required: ["answer", "mood"],
      additionalProperties: false,
    };
    const grammar = model.jsonSchemaToGrammar(JSON.stringify(schema));
    expect(grammar).toContain("root ::=");
    const context = await newContext();
    const result = await generate(context, prompt, { sampling: { ...GREEDY, grammar }, ignoreEos: false, maxTokens: 200 });
    expect(result.stopReason).toBe("eos");
    const value = JSON.parse(result.text) as { answer: unknown; mood: unknown };
    expect(Object.keys(value).sort()).toEqual(["answer", "mood"]);
    expect(typeof value.answer).toBe("boolean");
    expect(["happy", "sad"]).toContain(value.mood);
    expect(() => model.jsonSchemaToGrammar("{not json")).toThrow(/^invalid JSON schema: not valid JSON/);
  });

  test("two generate calls on one context at once are serialised, not raced", async () => {
    const reference = await generate(await newContext(), prompt);
    const context = await newContext();
    const [a, b] = await Promise.all([generate(context, prompt), generate(context, prompt)]);
    expect(Array.from(a.tokens)).toEqual(Array.from(reference.tokens));
    expect(Array.from(b.tokens)).toEqual(Array.from(reference.tokens));
    expect(a.cachedTokens + b.cachedTokens).toBe(prompt.length - 1);
  });

  test("two contexts generate concurrently, each as if alone", async () => {
    const other = await model.tokenize("A completely different prompt", true, false);
    const referenceA = await generate(await newContext(), prompt, { maxTokens: 24 });
    const referenceB = await generate(await newContext(), other, { maxTokens: 24 });
    const [a, b] = await Promise.all([
      generate(await newContext(), prompt, { maxTokens: 24 }),
      generate(await newContext(), other, { maxTokens: 24 }),
    ]);
    expect(Array.from(a.tokens)).toEqual(Array.from(referenceA.tokens));
    expect(Array.from(b.tokens)).toEqual(Array.from(referenceB.tokens));
  });

  test("an exception in onText stops the generation and rejects with it", async () => {
    const context = await newContext();
    let calls = 0;
    const failing = context.generate({
      tokens: prompt,
      maxTokens: 400,
      sampling: GREEDY,
      stop: [],
      ignoreEos: true,
      abort: binding.createAbortFlag(),
      onText: () => {
        calls++;
        throw new RangeError("consumer failed");
      },
    });
    await expect(failing).rejects.toThrow(RangeError);
    expect(calls).toBeLessThan(400);
    expect((await generate(context, prompt, { maxTokens: 2 })).generatedTokens).toBe(2);
  });

  test("the context fills up cleanly", async () => {
    const context = await newContext({ contextSize: 256, batchSize: 256, ubatchSize: 256 });
    expect(context.contextSize).toBe(256);
    expect(context.batchSize).toBe(256);
    const result = await generate(context, prompt, { maxTokens: 1000 });
    expect(result.stopReason).toBe("contextFull");
    // Every position is used; the last sampled token is returned but has no position to be decoded at.
    expect(result.promptTokens + result.generatedTokens).toBe(257);
    expect(context.cachedTokenCount()).toBe(256);
  });
});

describe("abort", () => {
  test("abort mid-generation resolves with the text so far and the context keeps working", async () => {
    const prompt = await model.tokenize("The weather today", true, false);
    const reference = await generate(await newContext(), prompt, { maxTokens: 8 });
    const context = await newContext();
    const abort = binding.createAbortFlag();
    const pieces: string[] = [];
    const result = await context.generate({
      tokens: prompt,
      maxTokens: 400,
      sampling: GREEDY,
      stop: [],
      ignoreEos: true,
      abort,
      onText: (text) => {
        pieces.push(text);
        if (pieces.length === 3) abort.abort();
      },
    });
    expect(abort.aborted).toBe(true);
    expect(result.stopReason).toBe("abort");
    expect(result.generatedTokens).toBeGreaterThanOrEqual(3);
    expect(result.generatedTokens).toBeLessThan(400);
    expect(result.text.startsWith(pieces.join(""))).toBe(true);
    const after = await generate(context, prompt, { maxTokens: 8 });
    expect(after.stopReason).toBe("maxTokens");
    expect(Array.from(after.tokens)).toEqual(Array.from(reference.tokens));
  });

  test("abort interrupts a long prompt evaluation inside llama_decode and leaves a consistent cache", async () => {
    const options = { contextSize: 4096, batchSize: 4096, ubatchSize: 256 };
    const prompt = longPrompt(3000);
    const full = await generate(await newContext(options), prompt, { maxTokens: 4 });

    const context = await newContext(options);
    const abort = binding.createAbortFlag();
    setTimeout(() => abort.abort(), 5);
    const started = performance.now();
    const aborted = await generate(context, prompt, { maxTokens: 4, abort });
    const elapsed = performance.now() - started;
    expect(aborted.stopReason).toBe("abort");
    expect(aborted.generatedTokens).toBe(0);
    // One llama_decode call holds the whole prompt: stopping before its end proves the abort callback worked.
    expect(context.cachedTokenCount()).toBeLessThan(3000);
    expect(elapsed).toBeLessThan(full.promptMs);

    // The ubatches decoded before the abort stay cached and are reused; the result is as if never interrupted.
    const kept = context.cachedTokenCount();
    const resumed = await generate(context, prompt, { maxTokens: 4 });
    expect(resumed.cachedTokens).toBe(kept);
    expect(Array.from(resumed.tokens)).toEqual(Array.from(full.tokens));
  });

  test("an aborted flag rejects a model load", async () => {
    const abort = binding.createAbortFlag();
    abort.abort();
    await expect(binding.loadModel(modelPath, MODEL_OPTIONS, null, abort)).rejects.toThrow("model load aborted");
    const late = binding.createAbortFlag();
    const loading = binding.loadModel(modelPath, MODEL_OPTIONS, null, late);
    late.abort();
    await expect(loading).rejects.toThrow("model load aborted");
  });

  test("an exception in onProgress rejects the load with it", async () => {
    const loading = binding.loadModel(
      modelPath,
      MODEL_OPTIONS,
      () => {
        throw new Error("progress consumer failed");
      },
      binding.createAbortFlag(),
    );
    await expect(loading).rejects.toThrow("progress consumer failed");
  });

  test("the event loop keeps running while native work is in progress", async () => {
    const context = await newContext({ contextSize: 4096, batchSize: 4096, ubatchSize: 512 });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const started = performance.now();
    await context.bench(3000, 128, binding.createAbortFlag());
    const elapsed = performance.now() - started;
    clearInterval(timer);
    expect(elapsed).toBeGreaterThan(20);
    expect(ticks).toBeGreaterThan(elapsed / 20);
  });
});

describe("embeddings, bench and chat templates", () => {
  test("embed returns a normalised vector of embeddingLength", async () => {
    const context = await newContext({ embeddings: true, pooling: "mean" });
    const a = await context.embed(await model.tokenize("a sentence about llamas", true, false), true, binding.createAbortFlag());
    const b = await context.embed(await model.tokenize("a sentence about llamas", true, false), true, binding.createAbortFlag());
    const c = await context.embed(await model.tokenize("something else entirely", true, false), false, binding.createAbortFlag());
    expect(a).toBeInstanceOf(Float32Array);
    expect(a.length).toBe(64);
    expect(Math.hypot(...a)).toBeCloseTo(1, 5);
    expect(Array.from(b)).toEqual(Array.from(a));
    expect(Math.hypot(...c)).not.toBeCloseTo(1, 3);
    expect(Array.from(c)).not.toEqual(Array.from(a));
    await expect(generate(context, new Int32Array([1, 2]))).rejects.toThrow("created for embeddings");
    const plain = await newContext();
    await expect(plain.embed(new Int32Array([1, 2]), true, binding.createAbortFlag())).rejects.toThrow("not created with embeddings");
  });

  test("bench returns positive timings and leaves the cache empty", async () => {
    const context = await newContext();
    const result = await context.bench(128, 16, binding.createAbortFlag());
    expect(result.promptMs).toBeGreaterThan(0);
    expect(result.generateMs).toBeGreaterThan(0);
    expect(context.cachedTokenCount()).toBe(0);
    expect(await context.bench(0, 4, binding.createAbortFlag())).toMatchObject({ promptMs: 0 });
    await expect(context.bench(1000, 0, binding.createAbortFlag())).rejects.toThrow("bench needs a context of at least 1000 tokens");
  });

  test("chat templates: Jinja from the GGUF, built-in names, and errors naming the template and the line", async () => {
    const messages = [
      { role: "system", content: "Be brief." },
      { role: "user", content: "Hi!" },
    ];
    // No template in the GGUF: ChatML, as llama.cpp does.
    expect(model.applyChatTemplate(messages, true, null)).toBe(
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    );
    const jinja = "{% for m in messages %}[{{ m.role | upper }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[ASSISTANT]{% endif %}";
    const templated = await binding.loadModel(
      (await makeTinyLlama(join(dir, "templated.gguf"), { vocabFrom: VOCAB, chatTemplate: jinja, nLayer: 1 })).path,
      MODEL_OPTIONS,
      null,
      binding.createAbortFlag(),
    );
    try {
      expect(templated.info().chatTemplate).toBe(jinja);
      expect(templated.applyChatTemplate(messages, true, null)).toBe("[SYSTEM] Be brief.\n[USER] Hi!\n[ASSISTANT]");
      expect(templated.applyChatTemplate(messages, false, null)).toBe("[SYSTEM] Be brief.\n[USER] Hi!\n");
    } finally {
      templated.dispose();
    }
    expect(model.applyChatTemplate(messages.slice(1), true, "llama3")).toBe(
      "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    );
    // Broken Jinja is an error naming the template and the line, never a silent fallback to a built-in format.
    expect(() => model.applyChatTemplate(messages.slice(1), true, "{% for m in messages %}<|im_start|>{{ m.role }")).toThrow(
      "cannot parse the chat template given: line 1, column 46: Parser Error: Expected }} (Got })",
    );
    expect(() => model.applyChatTemplate(messages, true, "Hi\n{% if %}", "my.jinja")).toThrow(/^cannot parse my\.jinja: line 2, column \d+: /);
    expect(() => model.applyChatTemplate(messages, true, "A\n\n{{ raise_exception('no system role, please') }}", "strict.jinja")).toThrow(
      "cannot render strict.jinja: line 3, column 19: the template raised an error: no system role, please",
    );
  });
});

describe("errors", () => {
  test("a missing file, a truncated GGUF and a garbage file reject with clear messages", async () => {
    const missing = join(dir, "missing.gguf");
    await expect(binding.loadModel(missing, MODEL_OPTIONS, null, binding.createAbortFlag())).rejects.toThrow(`model file not found: ${missing}`);

    const bytes = await readFile(modelPath);
    const truncated = join(dir, "truncated.gguf");
    await writeFile(truncated, bytes.subarray(0, bytes.length >> 1));
    await expect(binding.loadModel(truncated, MODEL_OPTIONS, null, binding.createAbortFlag())).rejects.toThrow(
      `cannot load ${truncated}: not a valid GGUF model (truncated or corrupt?): tensor 'token_embd.weight' data is not within the file bounds`,
    );
    const headerOnly = join(dir, "header-only.gguf");
    await writeFile(headerOnly, bytes.subarray(0, 4096));
    await expect(binding.loadModel(headerOnly, MODEL_OPTIONS, null, binding.createAbortFlag())).rejects.toThrow(
      `cannot load ${headerOnly}: not a valid GGUF model`,
    );

    const garbage = join(dir, "garbage.gguf");
    await writeFile(garbage, Buffer.from("this is not a model at all\n".repeat(1000)));
    await expect(binding.loadModel(garbage, MODEL_OPTIONS, null, binding.createAbortFlag())).rejects.toThrow(
      `cannot load ${garbage}: not a valid GGUF model (truncated or corrupt?): invalid magic characters: 'this', expected 'GGUF'`,
    );
    await expect(binding.loadModel(dir, MODEL_OPTIONS, null, binding.createAbortFlag())).rejects.toThrow("is a directory");
  });

  test("prompts that do not fit, empty prompts and unknown tokens reject before decoding", async () => {
    const context = await newContext({ contextSize: 256, batchSize: 64, ubatchSize: 64 });
    await expect(generate(context, longPrompt(300))).rejects.toThrow("prompt of 300 tokens does not fit the context of 256 tokens");
    await expect(generate(context, new Int32Array())).rejects.toThrow("empty prompt");
    await expect(generate(context, new Int32Array([1, 32000]))).rejects.toThrow("token 32000 at index 1 is outside the vocabulary");
    await expect(generate(context, new Int32Array([1, -5]))).rejects.toThrow("outside the vocabulary");
    expect((await generate(context, longPrompt(10), { maxTokens: 2 })).generatedTokens).toBe(2);
  });

  test("use after dispose throws or rejects; dispose is idempotent", async () => {
    const own = await binding.loadModel(modelPath, MODEL_OPTIONS, null, binding.createAbortFlag());
    const context = await own.createContext(CONTEXT_OPTIONS);
    context.dispose();
    context.dispose();
    expect(context.disposed).toBe(true);
    expect(context.contextSize).toBe(512);
    await expect(generate(context, longPrompt(4))).rejects.toThrow("context has been disposed");
    await expect(context.embed(longPrompt(4), true, binding.createAbortFlag())).rejects.toThrow("context has been disposed");
    await expect(context.bench(8, 8, binding.createAbortFlag())).rejects.toThrow("context has been disposed");
    expect(() => context.cachedTokenCount()).toThrow("context has been disposed");
    expect(() => context.clear()).toThrow("context has been disposed");

    own.dispose();
    own.dispose();
    expect(own.disposed).toBe(true);
    expect(() => own.info()).toThrow("model has been disposed");
    expect(() => own.metadata()).toThrow("model has been disposed");
    expect(() => own.applyChatTemplate([], true, null)).toThrow("model has been disposed");
    await expect(own.tokenize("x", true, false)).rejects.toThrow("model has been disposed");
    await expect(own.createContext(CONTEXT_OPTIONS)).rejects.toThrow("model has been disposed");
  });

  test("a context outlives its disposed model, and disposing a busy context stops its worker", async () => {
    const own = await binding.loadModel(modelPath, MODEL_OPTIONS, null, binding.createAbortFlag());
    const context = await own.createContext({ ...CONTEXT_OPTIONS, contextSize: 4096, batchSize: 4096 });
    own.dispose();
    expect((await generate(context, longPrompt(8), { maxTokens: 3 })).generatedTokens).toBe(3);
    const running = generate(context, longPrompt(3000), { maxTokens: 100 });
    context.dispose();
    const result = await running;
    expect(result.stopReason).toBe("abort");
  });

  test("garbage collection of a busy context lets its generation finish", async () => {
    const script = `
      const b = require(${JSON.stringify(ADDON)});
      (async () => {
        const m = await b.loadModel(${JSON.stringify(modelPath)}, { gpuLayers: 0, useMmap: true, useMlock: false, vocabOnly: false }, null, null);
        let c = await m.createContext(${JSON.stringify({ ...CONTEXT_OPTIONS, contextSize: 4096, batchSize: 4096 })});
        const running = c.generate({ tokens: new Int32Array(2000).fill(450), maxTokens: 64, sampling: ${JSON.stringify(GREEDY)},
          stop: [], ignoreEos: true, abort: b.createAbortFlag(), onText() {} });
        c = null;
        for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setImmediate(r)); }
        const r = await running;
        process.stdout.write(r.stopReason + " " + r.generatedTokens);
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const { stdout } = await promisify(execFile)(process.execPath, ["--expose-gc", "-e", script]);
    expect(stdout).toBe("maxTokens 64");
  });

  test("bad arguments reject with TypeErrors, not crashes", async () => {
    const context = await newContext();
    await expect(context.generate({ tokens: "nope" } as never)).rejects.toThrow(TypeError);
    await expect(context.generate({ tokens: "nope" } as never)).rejects.toThrow("tokens must be an Int32Array");
    await expect(generate(context, longPrompt(4), { abort: {} as never })).rejects.toThrow("abort must be an abort flag");
    await expect(binding.loadModel(42 as never, MODEL_OPTIONS, null, binding.createAbortFlag())).rejects.toThrow("path must be a string");
    expect(() => binding.setLogger("x" as never, "info")).toThrow("callback must be a function or null");
  });
});

describe("logging", () => {
  test("llama.cpp's log goes to the logger at or above its level, and nowhere by default", async () => {
    const lines: [string, string][] = [];
    binding.setLogger((level, text) => lines.push([level, text]), "info");
    (await binding.loadModel(modelPath, MODEL_OPTIONS, null, binding.createAbortFlag())).dispose();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(lines.some(([level, text]) => level === "info" && text.includes("llama_model_loader"))).toBe(true);
    expect(lines.some(([level]) => level === "debug")).toBe(false);

    lines.length = 0;
    binding.setLogger((level, text) => lines.push([level, text]), "error");
    (await binding.loadModel(modelPath, MODEL_OPTIONS, null, binding.createAbortFlag())).dispose();
    await binding.loadModel(join(dir, "missing-again.gguf"), MODEL_OPTIONS, null, binding.createAbortFlag()).catch(() => undefined);
    await binding.loadModel(join(dir, "garbage.gguf"), MODEL_OPTIONS, null, binding.createAbortFlag()).catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.every(([level]) => level === "error")).toBe(true);
    binding.setLogger(null, "info");
  });

  test("a process that loads and generates prints nothing unless a logger is set", async () => {
    const script = `
      const b = require(${JSON.stringify(ADDON)});
      (async () => {
        const m = await b.loadModel(${JSON.stringify(modelPath)}, { gpuLayers: 0, useMmap: true, useMlock: false, vocabOnly: false }, null, null);
        const c = await m.createContext(${JSON.stringify({ ...CONTEXT_OPTIONS, contextSize: 128 })});
        const r = await c.generate({ tokens: new Int32Array([1, 450, 4499]), maxTokens: 4, sampling: ${JSON.stringify(GREEDY)},
          stop: [], ignoreEos: true, abort: b.createAbortFlag(), onText() {} });
        if (r.generatedTokens !== 4) throw new Error("no generation");
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const { stdout, stderr } = await promisify(execFile)(process.execPath, ["-e", script]);
    expect(stdout).toBe("");
    expect(stderr).toBe("");
  });
});
