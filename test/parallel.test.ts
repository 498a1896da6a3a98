// Parallel sequences in one context: a tiny llama-architecture GGUF loaded with `parallel`, whose requests run on
// one native decode loop (one llama_decode per step for every running request). Each batched request must give
// what it gives alone, join and leave the loop independently, reuse its sequence's cache, and queue, abort and
// dispose as requests on a context with one sequence do. That the decodes really were batched is read from the
// context's native counters, never from timings.
import { execFile, execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { llama, LlamaOciError, type CompletionResult, type GenerationOptions, type LlamaContext, type LlamaModel } from "../src/index.js";
import { ROOT_DIR } from "./helpers/cli.js";
import { DEFAULT_TINY_VOCAB as VOCAB, makeTinyLlama } from "./helpers/tiny-model.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const execFileAsync = promisify(execFile);
/** Zephyr-style template; the SPM vocab file has none of its own. */
const CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '</s>\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";
const GREEDY = { temperature: 0 } as const;
/**
 * How many tokens of a long batched run are compared with the same request alone. Greedy decoding of this random
 * model meets near-ties now and then; batched, llama.cpp's kernels round some of them differently (see the last
 * test), and a sequence whose cells were reused after another's (holes in the unified cache) sums its attention in
 * another order. On this model such a flip was seen after 120 tokens at the earliest.
 */
const CHECKED = 60;
const PROMPTS = ["Once upon a time, there was", "The capital of France", "def fibonacci(n):", "Hello world, my name is"];
// One thread: the test machine is small and shared, and ggml's reductions then run in one fixed order.
const THREADS = { threads: 1, threadsBatch: 1, gpuLayers: 0 } as const;

type Context = LlamaContext<LlamaModel>;

let workDir: string;
let modelPath: string;
/** Loaded with parallel 4: its default context, and the chats on it, have four sequences. */
let model: LlamaModel;
/** A context with one sequence: what each request gives alone. */
let solo: Context;

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-parallel");
  modelPath = join(workDir, "tiny.gguf");
  await makeTinyLlama(modelPath, { vocabFrom: VOCAB, seed: 7, chatTemplate: CHAT_TEMPLATE, contextLength: 2048 });
  model = await llama.loadModel(modelPath, { ...THREADS, contextSize: 2048, parallel: 4 });
  solo = await model.createContext({ parallel: 1 });
});

afterAll(async () => {
  await model?.dispose();
  if (workDir) await removeDir(workDir);
});

async function expectCode(promise: Promise<unknown>, code: string): Promise<LlamaOciError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(LlamaOciError);
  expect((error as LlamaOciError).code).toBe(code);
  return error as LlamaOciError;
}

/** The request on the one-sequence context, from an empty cache. */
async function alone(prompt: string | Int32Array, options: GenerationOptions): Promise<CompletionResult> {
  await solo.clear();
  return solo.completeWithMeta(prompt, options);
}

/** Resolves once `count` text pieces arrived through the returned onTextChunk. */
function chunkCounter(count: number): { onTextChunk: (text: string) => void; reached: Promise<void>; pieces: string[] } {
  let reach!: () => void;
  const reached = new Promise<void>((resolve) => (reach = resolve));
  const pieces: string[] = [];
  return {
    pieces,
    reached,
    onTextChunk: (text) => {
      pieces.push(text);
      if (pieces.length === count) reach();
    },
  };
}

function tokens(result: CompletionResult): number[] {
  return Array.from(result.tokens);
}

describe("batched generation", () => {
  test("N concurrent greedy requests each give the same tokens as alone, in fewer llama_decode calls", async () => {
    const options = { ...GREEDY, maxTokens: 32 };
    const expected: CompletionResult[] = [];
    const soloBefore = solo.decodeStats.decodeCalls;
    for (const prompt of PROMPTS) expected.push(await alone(prompt, options));
    const soloCalls = solo.decodeStats.decodeCalls - soloBefore;

    const context = await model.createContext({ parallel: 4 });
    try {
      expect(context.parallel).toBe(4);
      expect(context.options.parallel).toBe(4);
      // Tokens, not text: no tokenization in between, so that the four join the loop at the same step.
      const prompts = await Promise.all(PROMPTS.map((p) => model.tokenize(p, { addSpecial: true, parseSpecial: true })));
      const results = await Promise.all(prompts.map((prompt) => context.completeWithMeta(prompt, options)));
      for (let i = 0; i < PROMPTS.length; i++) {
        expect(tokens(results[i]!), PROMPTS[i]).toEqual(tokens(expected[i]!));
        expect(results[i]!.text).toBe(expected[i]!.text);
        expect(results[i]!.stopReason).toBe(expected[i]!.stopReason);
        expect(results[i]!.timings.cachedTokens).toBe(0);
        expect(results[i]!.timings.promptTokens).toBe(expected[i]!.timings.promptTokens);
      }
      // The native side batched them: one llama_decode call carried all four sequences, and the whole run took
      // about as many calls as one request alone does, not four times as many.
      const stats = context.decodeStats;
      const generated = results.reduce((sum, r) => sum + r.tokens.length, 0);
      expect(stats.maxSequencesPerDecode).toBe(4);
      expect(stats.decodeCalls).toBeLessThan(generated);
      expect(stats.decodeCalls).toBeLessThan(soloCalls / 2);
      expect(stats.decodedTokens).toBe(results.reduce((sum, r) => sum + r.timings.promptTokens + r.tokens.length - 1, 0));
      expect(context.busySequences).toBe(0);
      expect(context.queuedRequests).toBe(0);

      // Each prompt alone on the parallel context (its sequence's cache reused) gives the same again.
      for (let i = 0; i < PROMPTS.length; i++) {
        const again = await context.completeWithMeta(PROMPTS[i]!, options);
        expect(tokens(again)).toEqual(tokens(expected[i]!));
        expect(again.timings.cachedTokens).toBe(again.timings.promptTokens - 1);
      }
    } finally {
      await context.dispose();
    }
  });

  test("each sequence samples with its own chain: seeded sampling, a grammar and a stop string side by side", async () => {
    const seeded = { temperature: 1, topK: 0, topP: 1, minP: 0, seed: 1234, maxTokens: 24 };
    const grammar = { ...GREEDY, maxTokens: 8, grammar: 'root ::= "yes" | "no"' };
    const free = await alone(PROMPTS[3]!, { ...GREEDY, maxTokens: 24 });
    const stop = free.text.slice(Math.floor(free.text.length / 2), Math.floor(free.text.length / 2) + 2);
    const stopping = { ...GREEDY, maxTokens: 24, stop: [stop] };
    const penalized = { ...GREEDY, maxTokens: 24, repeatPenalty: 3, repeatLastN: -1 };
    const expected = [
      await alone(PROMPTS[0]!, seeded),
      await alone(PROMPTS[1]!, grammar),
      await alone(PROMPTS[3]!, stopping),
      await alone(PROMPTS[2]!, penalized),
    ];
    expect(["yes", "no"]).toContain(expected[1]!.text);
    expect(expected[2]!.stopReason).toBe("stop");

    const context = await model.createContext({ parallel: 4 });
    try {
      const results = await Promise.all([
        context.completeWithMeta(PROMPTS[0]!, seeded),
        context.completeWithMeta(PROMPTS[1]!, grammar),
        context.completeWithMeta(PROMPTS[3]!, stopping),
        context.completeWithMeta(PROMPTS[2]!, penalized),
      ]);
      for (let i = 0; i < results.length; i++) {
        expect(results[i]!.text).toBe(expected[i]!.text);
        expect(results[i]!.stopReason).toBe(expected[i]!.stopReason);
        expect(tokens(results[i]!)).toEqual(tokens(expected[i]!));
      }
      expect(context.decodeStats.maxSequencesPerDecode).toBeGreaterThanOrEqual(3);
    } finally {
      await context.dispose();
    }
  });

  test("a request that arrives while others generate joins them at the next step", async () => {
    // A and B run until they are aborted (their 1500 tokens take far longer than anything here), C is short.
    const expectedA = await alone(PROMPTS[0]!, { ...GREEDY, maxTokens: CHECKED });
    const expectedB = await alone(PROMPTS[1]!, { ...GREEDY, maxTokens: CHECKED });
    const expectedC = await alone(PROMPTS[2]!, { ...GREEDY, maxTokens: 8 });

    const context = await model.createContext({ parallel: 4 });
    try {
      const stopA = new AbortController();
      const stopB = new AbortController();
      const a = chunkCounter(4);
      const b = chunkCounter(4);
      const runA = context.completeWithMeta(PROMPTS[0]!, { ...GREEDY, maxTokens: 1500, signal: stopA.signal, onTextChunk: a.onTextChunk });
      const runB = context.completeWithMeta(PROMPTS[1]!, { ...GREEDY, maxTokens: 1500, signal: stopB.signal, onTextChunk: b.onTextChunk });
      await Promise.all([a.reached, b.reached]);
      expect(context.busySequences).toBe(2);
      // The newcomer's prompt and its 8 tokens ride along with A's and B's steps; it ends while they go on.
      const c = await context.completeWithMeta(PROMPTS[2]!, { ...GREEDY, maxTokens: 8 });
      expect(tokens(c)).toEqual(tokens(expectedC));
      expect(context.busySequences).toBe(2);
      expect(context.decodeStats.maxSequencesPerDecode).toBe(3);
      stopA.abort();
      stopB.abort();
      const [resultA, resultB] = await Promise.all([runA, runB]);
      for (const [result, expected] of [
        [resultA, expectedA],
        [resultB, expectedB],
      ] as const) {
        expect(result.stopReason).toBe("abort");
        expect(result.tokens.length).toBeGreaterThanOrEqual(12);
        const n = Math.min(result.tokens.length, CHECKED);
        expect(tokens(result).slice(0, n)).toEqual(tokens(expected).slice(0, n));
      }
    } finally {
      await context.dispose();
    }
  });

  test("requests that arrive together share one prompt decode, however long each takes to tokenize", async () => {
    // Text prompts of different lengths, each tokenized on its own worker: they reach the native loop one by one.
    // An idle loop that got the first would evaluate its prompt alone while the others wait for that decode; the
    // announced ones are waited for instead, so the first decode carries all four prompts and each request then
    // needs one decode per further token: 1 + (maxTokens - 1) calls in all.
    const options = { ...GREEDY, maxTokens: 6, ignoreEos: true };
    const context = await model.createContext({ parallel: 4 });
    try {
      const results = await Promise.all(PROMPTS.map((prompt) => context.completeWithMeta(prompt, options)));
      for (let i = 0; i < PROMPTS.length; i++) {
        expect(tokens(results[i]!), PROMPTS[i]).toEqual(tokens(await alone(PROMPTS[i]!, options)));
      }
      const stats = context.decodeStats;
      expect(stats.decodeCalls).toBe(options.maxTokens);
      expect(stats.maxSequencesPerDecode).toBe(4);
      expect(stats.decodedTokens).toBe(results.reduce((sum, r) => sum + r.timings.promptTokens + options.maxTokens - 1, 0));
      expect(context.expectedRequests).toBe(0);
    } finally {
      await context.dispose();
    }
  });

  test("expectRequest(): an idle loop holds a request for one announced after it, and never longer than 25 ms", async () => {
    const options = { ...GREEDY, maxTokens: 4, ignoreEos: true };
    const [promptA, promptB] = await Promise.all(PROMPTS.slice(0, 2).map((p) => model.tokenize(p, { addSpecial: true, parseSpecial: true })));
    const context = await model.createContext({ parallel: 4 });
    try {
      // B is announced (as the server does when a request arrives, before tokenizing it), A is handed over, and B
      // comes a few event-loop turns later: A waited for it, so one decode evaluated both prompts.
      const arrivingB = context.expectRequest();
      expect(context.expectedRequests).toBe(1);
      const runA = context.completeWithMeta(promptA!, options);
      for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
      const runB = context.completeWithMeta(promptB!, options);
      arrivingB();
      arrivingB(); // a second call does nothing
      await Promise.all([runA, runB]);
      expect(context.decodeStats.decodeCalls).toBe(options.maxTokens);
      expect(context.decodeStats.maxSequencesPerDecode).toBe(2);
      expect(context.expectedRequests).toBe(0);

      // An announcement that never comes (a request dropped before it reached the context, its release forgotten)
      // holds an idle loop's request for the window only, then it runs alone.
      const forgotten = context.expectRequest();
      const before = context.decodeStats.decodeCalls;
      const started = performance.now();
      const lone = await context.completeWithMeta(promptA!, options);
      const waited = performance.now() - started;
      expect(lone.tokens.length).toBe(options.maxTokens);
      expect(context.decodeStats.decodeCalls - before).toBe(options.maxTokens);
      expect(waited).toBeGreaterThanOrEqual(25);
      forgotten();
      expect(context.expectedRequests).toBe(0);
    } finally {
      await context.dispose();
    }
    // A context with one sequence has no loop to hold: announcing is a no-op there.
    solo.expectRequest()();
    expect(solo.expectedRequests).toBe(0);
  });

  test.runIf(process.platform === "linux")("the decode loop runs on a thread named llama-oci-seq, as top -H and /proc show it", async () => {
    const threadNames = () => readdirSync("/proc/self/task").map((tid) => readFileSync(`/proc/self/task/${tid}/comm`, "utf8").trim());
    const context = await model.createContext({ parallel: 2 });
    try {
      const stop = new AbortController();
      const a = chunkCounter(2);
      const run = context.completeWithMeta(PROMPTS[0]!, { ...GREEDY, maxTokens: 1500, signal: stop.signal, onTextChunk: a.onTextChunk });
      await a.reached;
      expect(threadNames()).toContain("llama-oci-seq");
      stop.abort();
      expect((await run).stopReason).toBe("abort");
    } finally {
      await context.dispose();
    }
  });

  test("aborting one request stops only its sequence and frees it for a queued request", async () => {
    const expectedA = await alone(PROMPTS[0]!, { ...GREEDY, maxTokens: CHECKED });
    const expectedB = await alone(PROMPTS[1]!, { ...GREEDY, maxTokens: CHECKED });
    const expectedC = await alone(PROMPTS[2]!, { ...GREEDY, maxTokens: 12 });

    const context = await model.createContext({ parallel: 2 });
    try {
      const stopA = new AbortController();
      const stopB = new AbortController();
      const b = chunkCounter(3);
      const runA = context.completeWithMeta(PROMPTS[0]!, { ...GREEDY, maxTokens: 1500, signal: stopA.signal });
      const runB = context.completeWithMeta(PROMPTS[1]!, { ...GREEDY, maxTokens: 1500, signal: stopB.signal, onTextChunk: b.onTextChunk });
      const runC = context.completeWithMeta(PROMPTS[2]!, { ...GREEDY, maxTokens: 12 });
      expect(context.busySequences).toBe(2);
      expect(context.queuedRequests).toBe(1);
      await b.reached;
      expect(context.queuedRequests).toBe(1);
      stopB.abort();

      const resultB = await runB;
      expect(resultB.stopReason).toBe("abort");
      expect(resultB.tokens.length).toBeGreaterThanOrEqual(3);
      const n = Math.min(resultB.tokens.length, CHECKED);
      expect(tokens(resultB).slice(0, n)).toEqual(tokens(expectedB).slice(0, n));
      expect(b.pieces.join("")).toBe(resultB.text);

      // The freed sequence went to the queued request, which ends while A goes on.
      const resultC = await runC;
      expect(tokens(resultC)).toEqual(tokens(expectedC));
      expect(context.busySequences).toBe(1);
      expect(context.queuedRequests).toBe(0);
      stopA.abort();
      const resultA = await runA;
      expect(resultA.stopReason).toBe("abort");
      expect(resultA.tokens.length).toBeGreaterThan(resultC.tokens.length);
      const m = Math.min(resultA.tokens.length, CHECKED);
      expect(tokens(resultA).slice(0, m)).toEqual(tokens(expectedA).slice(0, m));
      expect(context.busySequences).toBe(0);
    } finally {
      await context.dispose();
    }
  });

  test("an already aborted request, and one aborted while it waits, never take a sequence", async () => {
    const context = await model.createContext({ parallel: 2 });
    try {
      expect(await context.completeWithMeta(PROMPTS[0]!, { maxTokens: 8, signal: AbortSignal.abort() })).toMatchObject({ text: "", stopReason: "abort" });
      const first = chunkCounter(1);
      const runs = [
        context.completeWithMeta(PROMPTS[0]!, { ...GREEDY, maxTokens: 40, onTextChunk: first.onTextChunk }),
        context.completeWithMeta(PROMPTS[1]!, { ...GREEDY, maxTokens: 40 }),
      ];
      const controller = new AbortController();
      const waiting = context.completeWithMeta(PROMPTS[2]!, { ...GREEDY, maxTokens: 40, signal: controller.signal });
      await first.reached;
      expect(context.queuedRequests).toBe(1);
      controller.abort();
      expect(await waiting).toMatchObject({ text: "", stopReason: "abort" });
      expect(context.queuedRequests).toBe(0);
      for (const result of await Promise.all(runs)) expect(result.tokens.length).toBe(40);
    } finally {
      await context.dispose();
    }
  });

  test("more requests than sequences wait in FIFO order and each still gives what it gives alone", async () => {
    const options = { ...GREEDY, maxTokens: 10 };
    const prompts = await Promise.all([...PROMPTS, "Alpha beta gamma"].map((p) => model.tokenize(p, { addSpecial: true, parseSpecial: true })));
    const expected: CompletionResult[] = [];
    for (const prompt of prompts) expected.push(await alone(prompt, options));
    for (const result of expected) expect(result.text.length).toBeGreaterThan(0);

    const context = await model.createContext({ parallel: 2 });
    try {
      const firstPieces: number[] = [];
      const runs = prompts.map((prompt, i) =>
        context.completeWithMeta(prompt, {
          ...options,
          onTextChunk: () => {
            if (!firstPieces.includes(i)) firstPieces.push(i);
          },
        }),
      );
      expect(context.busySequences).toBe(2);
      expect(context.queuedRequests).toBe(3);
      const results = await Promise.all(runs);
      // Two at a time, in call order: 0 and 1 first, then 2 and 3 as those end, then 4 (requests that start at the
      // same step may report in either order: each has its own thread-safe function).
      expect(firstPieces.slice(0, 2).sort()).toEqual([0, 1]);
      expect(firstPieces.slice(2, 4).sort()).toEqual([2, 3]);
      expect(firstPieces[4]).toBe(4);
      for (let i = 0; i < prompts.length; i++) expect(tokens(results[i]!)).toEqual(tokens(expected[i]!));
      expect(context.decodeStats.maxSequencesPerDecode).toBe(2);
      expect(context.queuedRequests).toBe(0);
    } finally {
      await context.dispose();
    }
  });
});

describe("prompt reuse per sequence", () => {
  test("a follow-up goes to the sequence holding its prefix: only the new tokens are evaluated", async () => {
    const context = await model.createContext({ parallel: 2 });
    try {
      const prompts = await Promise.all(PROMPTS.slice(0, 2).map((p) => model.tokenize(p, { addSpecial: true, parseSpecial: true })));
      const first = await Promise.all(prompts.map((prompt) => context.completeWithMeta(prompt, { ...GREEDY, maxTokens: 16 })));
      expect(context.cachedTokenCount).toBe(first.reduce((sum, r) => sum + r.timings.promptTokens + r.tokens.length - 1, 0));

      // Each prompt extended by half of what it generated, both at once and in the other order: each lands on its
      // own sequence, reuses all of it but the last token, and continues exactly where the first run did.
      const extended = [1, 0].map((i) => new Int32Array([...prompts[i]!, ...first[i]!.tokens.slice(0, 8)]));
      const second = await Promise.all(extended.map((prompt) => context.completeWithMeta(prompt, { ...GREEDY, maxTokens: 8 })));
      for (const [k, i] of [1, 0].entries()) {
        expect(second[k]!.timings.cachedTokens).toBe(extended[k]!.length - 1);
        expect(tokens(second[k]!)).toEqual(tokens(first[i]!).slice(8, 16));
      }

      // An unrelated prompt takes the least recently used sequence and keeps nothing of it but the shared BOS.
      const other = await context.completeWithMeta(PROMPTS[3]!, { ...GREEDY, maxTokens: 4 });
      expect(other.timings.cachedTokens).toBeLessThanOrEqual(1);
      expect(tokens(other)).toEqual(tokens(await alone(PROMPTS[3]!, { ...GREEDY, maxTokens: 4 })));

      await context.clear();
      expect(context.cachedTokenCount).toBe(0);
      expect((await context.completeWithMeta(prompts[0]!, { ...GREEDY, maxTokens: 4 })).timings.cachedTokens).toBe(0);
    } finally {
      await context.dispose();
    }
  });

  test("sequences share the context's cells: idle caches make room, and a full context ends the largest request", async () => {
    // 256 cells for two sequences (the least a context holds, at 64 per sequence and llama.cpp's rounding to 256).
    const context = await model.createContext({ parallel: 2, contextSize: 256 });
    try {
      expect(context.contextSize).toBe(256);
      const longPrompt = await model.tokenize("word ".repeat(150), { addSpecial: true, parseSpecial: true });
      expect(longPrompt.length).toBeGreaterThan(140);
      await context.completeWithMeta(longPrompt, { ...GREEDY, maxTokens: 4 });
      await context.completeWithMeta(PROMPTS[1]!, { ...GREEDY, maxTokens: 4 });
      // Both caches kept; a long request on the busy context then takes the other sequence's cells as it needs them.
      const grown = await context.completeWithMeta(PROMPTS[1]!, { ...GREEDY, maxTokens: Infinity });
      expect(grown.stopReason).toBe("contextFull");
      expect(grown.timings.promptTokens + grown.tokens.length).toBe(257);
      expect(context.cachedTokenCount).toBe(256);

      // Two requests that both want the whole context: the one holding more cells ends first, then the other.
      const both = await Promise.all([
        context.completeWithMeta(longPrompt, { ...GREEDY, maxTokens: Infinity }),
        context.completeWithMeta(PROMPTS[2]!, { ...GREEDY, maxTokens: Infinity }),
      ]);
      for (const result of both) expect(result.stopReason).toBe("contextFull");
      expect(both[0].timings.promptTokens + both[0].tokens.length).toBeLessThan(257);
      expect(both[1].timings.promptTokens + both[1].tokens.length).toBe(257);
      expect(context.cachedTokenCount).toBeLessThanOrEqual(256);
      expect((await context.completeWithMeta(PROMPTS[0]!, { ...GREEDY, maxTokens: 3 })).tokens.length).toBe(3);
    } finally {
      await context.dispose();
    }
  });
});

describe("a KV cache per sequence (kvUnified: false)", () => {
  test("each sequence gets its share of the cells, and batched requests still give what they give alone", async () => {
    const options = { ...GREEDY, maxTokens: CHECKED };
    const expected: CompletionResult[] = [];
    for (const prompt of PROMPTS) expected.push(await alone(prompt, options));
    const context = await model.createContext({ parallel: 4, contextSize: 1024, kvUnified: false });
    try {
      expect(context.options.kvUnified).toBe(false);
      expect(context.contextSize).toBe(1024);
      expect(context.sequenceSize).toBe(256);
      const prompts = await Promise.all(PROMPTS.map((p) => model.tokenize(p, { addSpecial: true, parseSpecial: true })));
      const results = await Promise.all(prompts.map((prompt) => context.completeWithMeta(prompt, options)));
      for (let i = 0; i < PROMPTS.length; i++) expect(tokens(results[i]!), PROMPTS[i]).toEqual(tokens(expected[i]!));
      expect(context.decodeStats.maxSequencesPerDecode).toBe(4);
      // A follow-up still goes to the sequence holding its prefix.
      const again = await context.completeWithMeta(PROMPTS[2]!, options);
      expect(tokens(again)).toEqual(tokens(expected[2]!));
      expect(again.timings.cachedTokens).toBe(again.timings.promptTokens - 1);
    } finally {
      await context.dispose();
    }
    // The default stays one unified cache: the whole context for one sequence.
    const unified = await model.createContext({ parallel: 4, contextSize: 1024 });
    try {
      expect(unified.options.kvUnified).toBe(true);
      expect(unified.sequenceSize).toBe(1024);
    } finally {
      await unified.dispose();
    }
  });

  test("a request fills only its own sequence: it ends (or shifts) at its share while the others go on", async () => {
    const context = await model.createContext({ parallel: 2, contextSize: 512, kvUnified: false });
    try {
      expect(context.sequenceSize).toBe(256);
      const noEos = { logitBias: { [model.info.eosToken]: false as const } };
      // Both want more than a share at once: each ends where its own 256 cells are full, the other untouched
      // (with one unified cache of 512, one of them would have ended early and the other gone past 256).
      const both = await Promise.all([
        context.completeWithMeta(PROMPTS[0]!, { ...GREEDY, ...noEos, maxTokens: Infinity }),
        context.completeWithMeta(PROMPTS[1]!, { ...GREEDY, ...noEos, maxTokens: Infinity }),
      ]);
      for (const result of both) {
        expect(result.stopReason).toBe("contextFull");
        expect(result.timings.promptTokens + result.tokens.length).toBe(257);
      }
      // With contextShift a request goes on past its share by dropping its own old tokens.
      const shifted = await context.completeWithMeta(PROMPTS[0]!, { ...GREEDY, ...noEos, maxTokens: 300, contextShift: true });
      expect(shifted.stopReason).toBe("maxTokens");
      expect(shifted.tokens.length).toBe(300);
      expect(shifted.timings.discardedTokens).toBeGreaterThan(0);
      expect(tokens(shifted).slice(0, 200)).toEqual(tokens(both[0]).slice(0, 200));

      // A prompt that fits the context but not a share is refused before it runs, naming the share.
      const longPrompt = await model.tokenize("word ".repeat(300), { addSpecial: true, parseSpecial: true });
      expect(longPrompt.length).toBeGreaterThan(256);
      expect(longPrompt.length).toBeLessThan(512);
      const error = await expectCode(context.completeWithMeta(longPrompt, { ...GREEDY, maxTokens: 4 }), "INVALID_ARGUMENT");
      expect(error.message).toContain(`the prompt is ${longPrompt.length} tokens but each sequence of the context holds 256`);
      expect((await context.completeWithMeta(PROMPTS[3]!, { ...GREEDY, maxTokens: 3 })).tokens.length).toBe(3);
    } finally {
      await context.dispose();
    }
  });
});

describe("the model's default context and chats", () => {
  test("concurrent completions on a model loaded with parallel are batched on its default context", async () => {
    const options = { ...GREEDY, maxTokens: 16 };
    const expected: string[] = [];
    for (const prompt of PROMPTS.slice(0, 3)) expected.push((await alone(prompt, options)).text);
    const defaultContext = await model.defaultContext();
    expect(defaultContext.parallel).toBe(4);
    const before = defaultContext.decodeStats.decodeCalls;
    const stream = model.generate(PROMPTS[2]!, options);
    const [a, b] = await Promise.all([model.complete(PROMPTS[0]!, options), model.completeWithMeta(PROMPTS[1]!, options)]);
    const pieces: string[] = [];
    for await (const piece of stream) pieces.push(piece);
    expect([a, b.text, pieces.join("")]).toEqual(expected);
    expect(defaultContext.decodeStats.maxSequencesPerDecode).toBeGreaterThanOrEqual(3);
    expect(defaultContext.decodeStats.decodeCalls - before).toBeLessThan(3 * 16);
  });

  test("chats take sequences of the default context, each turn reusing its own sequence's cache", async () => {
    const systems = ["You are terse.", "You are verbose.", "You speak in riddles."];
    const chats = systems.map((systemPrompt) => model.createChat({ systemPrompt }));
    // Replays on contexts of their own (chat options that name a context option get a private context).
    const replays = systems.map((systemPrompt) => model.createChat({ systemPrompt, contextSize: 512 }));
    try {
      const defaultContext = await model.defaultContext();
      const before = { ...defaultContext.decodeStats };
      const first = await Promise.all(chats.map((chat, i) => chat.sendWithMeta(`Hi number ${i}!`, { ...GREEDY, maxTokens: 12 })));
      expect(defaultContext.decodeStats.decodeCalls).toBeGreaterThan(before.decodeCalls);
      const second = await Promise.all(chats.map((chat) => chat.sendWithMeta("More?", { ...GREEDY, maxTokens: 12 })));
      for (let i = 0; i < chats.length; i++) {
        // The second turn re-evaluates only the new messages: everything up to the first answer was cached.
        expect(second[i]!.timings.cachedTokens).toBeGreaterThanOrEqual(first[i]!.timings.promptTokens);
        expect(second[i]!.timings.cachedTokens).toBeGreaterThan(second[i]!.timings.promptTokens / 2);
        expect(chats[i]!.history).toHaveLength(5);
        expect((await replays[i]!.send(`Hi number ${i}!`, { ...GREEDY, maxTokens: 12 })).text).toBe(first[i]!.text);
        expect((await replays[i]!.send("More?", { ...GREEDY, maxTokens: 12 })).text).toBe(second[i]!.text);
      }
      expect(defaultContext.decodeStats.maxSequencesPerDecode).toBeGreaterThanOrEqual(3);
    } finally {
      await Promise.all([...chats, ...replays].map((chat) => chat.dispose()));
    }
    // Disposing the chats left the shared context alone.
    expect((await model.defaultContext()).disposed).toBe(false);
    expect(await model.complete(PROMPTS[0]!, { ...GREEDY, maxTokens: 2 })).toBeTypeOf("string");
  });

  test("disposing a chat on the shared context stops its running turn only", async () => {
    const chat = model.createChat({ systemPrompt: "Go on." });
    const other = model.createChat({ systemPrompt: "Also go on." });
    const progress = chunkCounter(3);
    const running = chat.sendWithMeta("Tell me a long story.", { ...GREEDY, maxTokens: 300, onTextChunk: progress.onTextChunk });
    const unaffected = other.sendWithMeta("Tell me a story.", { ...GREEDY, maxTokens: 40 });
    await progress.reached;
    await chat.dispose();
    const stopped = await running;
    expect(stopped.stopReason).toBe("abort");
    expect(stopped.tokens.length).toBeLessThan(300);
    expect((await unaffected).stopReason).not.toBe("abort");
    await expectCode(chat.send("again"), "DISPOSED");
    await other.dispose();
  });
});

describe("dispose", () => {
  test("disposing a busy parallel context stops every sequence and rejects the queued requests", async () => {
    const context = await model.createContext({ parallel: 2 });
    const progress = [chunkCounter(2), chunkCounter(2)];
    const running = [0, 1].map((i) => context.completeWithMeta(PROMPTS[i]!, { ...GREEDY, maxTokens: 1500, onTextChunk: progress[i]!.onTextChunk }));
    const queued = context.complete(PROMPTS[2]!, { ...GREEDY, maxTokens: 4 });
    queued.catch(() => {});
    await Promise.all(progress.map((p) => p.reached));
    await Promise.all([context.dispose(), context.dispose()]);
    for (const result of await Promise.all(running)) {
      expect(result.stopReason).toBe("abort");
      expect(result.tokens.length).toBeLessThan(1500);
    }
    await expectCode(queued, "DISPOSED");
    expect(context.disposed).toBe(true);
    await expectCode(context.complete("x"), "DISPOSED");
    expect(() => context.decodeStats).toThrow(LlamaOciError);
  });

  test("disposing a model loaded with parallel stops its default context's sequences and its chats", async () => {
    const own = await llama.loadModel(modelPath, { ...THREADS, contextSize: 1024, parallel: 2 });
    const progress = chunkCounter(2);
    const chatProgress = chunkCounter(2);
    const running = own.completeWithMeta(PROMPTS[0]!, { ...GREEDY, maxTokens: 900, onTextChunk: progress.onTextChunk });
    const chat = own.createChat({ systemPrompt: "Hi." });
    const chatting = chat.sendWithMeta("Tell me everything.", { ...GREEDY, maxTokens: 900, onTextChunk: chatProgress.onTextChunk });
    await Promise.all([progress.reached, chatProgress.reached]);
    const queued = own.complete(PROMPTS[1]!, { ...GREEDY, maxTokens: 4 });
    queued.catch(() => {});
    const defaultContext = await own.defaultContext();
    expect([defaultContext.busySequences, defaultContext.queuedRequests]).toEqual([2, 1]);
    await own.dispose();
    expect((await running).stopReason).toBe("abort");
    expect((await chatting).stopReason).toBe("abort");
    await expectCode(queued, "DISPOSED");
    await expectCode(own.complete("x"), "DISPOSED");
    await expectCode(chat.send("x"), "DISPOSED");
  });

  test("a process exits on its own with a parallel context left alive, and survives process.exit() mid-generation", async () => {
    const index = JSON.stringify(join(ROOT_DIR, "dist", "esm", "index.js"));
    const idle = `
      import { llama } from ${index};
      const model = await llama.loadModel(${JSON.stringify(modelPath)}, { gpuLayers: 0, threads: 1, parallel: 2, contextSize: 512 });
      const context = await model.createContext();
      const [a, b] = await Promise.all([context.complete("Hi", { maxTokens: 4, temperature: 0 }), model.complete("Ho", { maxTokens: 4, temperature: 0 })]);
      process.stdout.write(typeof a + typeof b);`;
    const busy = `
      import { llama } from ${index};
      const model = await llama.loadModel(${JSON.stringify(modelPath)}, { gpuLayers: 0, threads: 1, parallel: 2, contextSize: 2048 });
      let n = 0;
      model.complete("Once", { maxTokens: 1500, temperature: 0, onTextChunk: () => { if (++n === 5) { process.stdout.write("exiting"); process.exit(0); } } });
      model.complete("Twice", { maxTokens: 1500, temperature: 0 });`;
    for (const [script, output] of [
      [idle, "stringstring"],
      [busy, "exiting"],
    ] as const) {
      const { stdout, stderr } = await execFileAsync(process.execPath, ["--input-type=module", "-e", script], { timeout: 60_000 });
      expect(stdout).toBe(output);
      expect(stderr).toBe("");
    }
  });

  test("garbage collection of a busy parallel context lets its requests finish", async () => {
    const script = `
      const b = require(${JSON.stringify(join(ROOT_DIR, "build", "Release", "llama_oci.node"))});
      (async () => {
        const m = await b.loadModel(${JSON.stringify(modelPath)}, { gpuLayers: 0, useMmap: true, useMlock: false, vocabOnly: false }, null, null);
        let c = await m.createContext({ contextSize: 1024, batchSize: 512, ubatchSize: 512, threads: 1, threadsBatch: 1, flashAttention: "auto",
          parallel: 3, embeddings: false, pooling: "unspecified" });
        const sampling = { temperature: 0, topK: 40, topP: 0.95, minP: 0.05, repeatPenalty: 1, repeatLastN: 64, frequencyPenalty: 0,
          presencePenalty: 0, seed: 1, grammar: null, grammarRoot: "root" };
        const runs = [450, 451, 452, 453].map((t) => c.generate({ tokens: new Int32Array(200).fill(t), maxTokens: 48, sampling,
          stop: [], ignoreEos: true, abort: b.createAbortFlag(), onText() {} }));
        c = null;
        for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setImmediate(r)); }
        const results = await Promise.all(runs);
        process.stdout.write(results.map((r) => r.stopReason + " " + r.generatedTokens).join(","));
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const { stdout } = await execFileAsync(process.execPath, ["--expose-gc", "-e", script], { timeout: 60_000 });
    expect(stdout).toBe(Array(4).fill("maxTokens 48").join(","));
  });
});

describe("options", () => {
  test("parallel is validated, and the context must leave each sequence at least 64 tokens", async () => {
    for (const parallel of [0, -1, 1.5, 257, Number.NaN, Infinity]) {
      await expectCode(model.createContext({ parallel }), "INVALID_ARGUMENT");
    }
    const small = await expectCode(model.createContext({ parallel: 8, contextSize: 500 }), "INVALID_ARGUMENT");
    expect(small.message).toContain("at least 64 tokens per sequence (contextSize >= parallel * 64 = 512)");
    await expectCode(model.createContext({ parallel: 8, contextSize: 512, batchSize: 4 }), "INVALID_ARGUMENT");
    await expectCode(model.createContext({ parallel: 2, embeddings: true }), "INVALID_ARGUMENT");
    await expectCode(llama.loadModel(modelPath, { ...THREADS, parallel: 300 }), "INVALID_ARGUMENT");
    // The default context size (here the training context, 2048) leaves room for 32 sequences, not 33.
    await expectCode(llama.loadModel(modelPath, { ...THREADS, parallel: 33 }), "INVALID_ARGUMENT");

    // Embedding contexts have one sequence whatever the model's parallel.
    const embedding = await model.createContext({ embeddings: true });
    expect(embedding.parallel).toBe(1);
    await embedding.dispose();
    expect((await model.embed("some text")).length).toBe(64);

    const one = await model.createContext({ parallel: 1 });
    expect([one.parallel, one.busySequences, one.queuedRequests]).toEqual([1, 0, 0]);
    await one.dispose();
  });

  test("prompt errors reject each request alone and leave the other sequences running", async () => {
    const context = await model.createContext({ parallel: 2, contextSize: 256 });
    try {
      const progress = chunkCounter(1);
      const running = context.completeWithMeta(PROMPTS[0]!, { ...GREEDY, maxTokens: 60, onTextChunk: progress.onTextChunk });
      await progress.reached;
      await expectCode(context.complete(new Int32Array([1, 32000])), "INFERENCE");
      await expectCode(context.complete(new Int32Array(300).fill(450)), "INVALID_ARGUMENT");
      const bad = await expectCode(context.complete(PROMPTS[1]!, { grammar: "start ::= 'x'" }), "INFERENCE");
      expect(bad.message).toContain("invalid grammar");
      expect((await running).tokens.length).toBe(60);
    } finally {
      await context.dispose();
    }
  });
});

describe("llama.cpp's own batched decoding", () => {
  const tool = join(ROOT_DIR, "build", "bin", "llama-batched");
  const F16_PROMPTS = ["Once upon a time, there was", "The capital of France", "Alpha beta gamma", "Roses are red"];
  let f16Path: string;
  let f16: LlamaModel;

  beforeAll(async () => {
    if (!existsSync(tool) && readFileSync(join(ROOT_DIR, "build", "build.ninja"), "utf8").includes("build bin/llama-batched:")) {
      // A target of the existing build tree (configured with llama.cpp's examples by `--tools`).
      execFileSync("cmake", ["--build", join(ROOT_DIR, "build"), "--target", "llama-batched"], { stdio: "ignore" });
    }
    f16Path = join(workDir, "f16.gguf");
    await makeTinyLlama(f16Path, { vocabFrom: VOCAB, seed: 3, nEmbd: 256, nLayer: 4, nFf: 768, nHead: 4, nHeadKv: 4, tensorType: "f16", contextLength: 2048 });
    f16 = await llama.loadModel(f16Path, { ...THREADS, contextSize: 2048, flashAttention: "on", parallel: 9 });
  }, 300_000);

  afterAll(async () => {
    await f16?.dispose();
  });

  /**
   * Where batching changes a greedy continuation, it is llama.cpp's kernels that do: a matrix product of one row
   * (a lone sequence's token) takes ggml's vec_dot path, one of several rows its tiled GEMM, and the two round
   * differently, which flips a near-tie of this random model's logits now and then. llama-batched (llama.cpp's
   * example, same source, same build) with 8 identical sequences flips it exactly as our loop does.
   */
  test("8 copies of a prompt batched give what llama-batched -np 8 gives, also where that differs from the prompt alone", async () => {
    expect(existsSync(tool), `${tool} is missing: build it with cmake --build build --target llama-batched`).toBe(true);
    const N = 40;
    const single = await f16.createContext({ parallel: 1 });
    const context = await f16.defaultContext();
    let differsAlone = 0;
    try {
      for (const prompt of F16_PROMPTS) {
        const tokensOf = await f16.tokenize(prompt, { addSpecial: true, parseSpecial: false });
        const alone = await single.completeWithMeta(tokensOf, { ...GREEDY, maxTokens: N });
        await single.clear();
        await context.clear();
        // A ninth request that outlives the copies keeps every step of theirs batched (several rows), whichever
        // step each copy joined at, as in llama-batched, where all 8 run every step.
        const keeper = chunkCounter(1);
        const running = context.completeWithMeta("Keep going", { ...GREEDY, maxTokens: N + 60, onTextChunk: keeper.onTextChunk });
        await keeper.reached;
        const copies = await Promise.all(Array.from({ length: 8 }, () => context.completeWithMeta(tokensOf, { ...GREEDY, maxTokens: N })));
        expect(context.busySequences).toBe(1);
        await running;
        expect(new Set(copies.map((c) => c.text)).size).toBe(1);
        expect(copies[0]!.tokens.length).toBe(N);

        // llama-batched decodes the prompt once for all 8 sequences, then one token of each per llama_decode; its
        // -n counts the prompt's tokens too.
        const args = ["-m", f16Path, "-p", prompt, "-n", String(tokensOf.length + N), "-np", "8", "--temp", "0", "-t", "1", "-tb", "1"];
        let stdout = "";
        let sequences: string[] = [];
        // llama.cpp's log is written by a thread of its own, and on a loaded machine the tool sometimes exits before
        // that thread printed the sequences: run it again then.
        for (let attempt = 0; attempt < 3 && sequences.length < 8; attempt++) {
          ({ stdout } = await execFileAsync(tool, [...args, "-fa", "on", "-ngl", "0", "-kvu"], { maxBuffer: 1 << 20 }));
          sequences = [...stdout.matchAll(/sequence \d+:\n\n([\s\S]*?)\n\n(?=sequence \d+:|\s*$)/g)].map((m) => m[1]!);
        }
        expect(sequences, stdout).toHaveLength(8);
        for (const sequence of sequences) expect(sequence, prompt).toBe(prompt + copies[0]!.text);
        if (alone.text !== copies[0]!.text) differsAlone++;
      }
    } finally {
      await single.dispose();
    }
    // On the x86-64 test machine, "Alpha beta gamma" is such a near-tie: batched, in llama-batched as in our loop,
    // it continues differently from alone.
    console.info(`llama-batched -np 8: ${differsAlone} of ${F16_PROMPTS.length} prompts continue differently than alone, exactly as in our loop`);
  });
});
