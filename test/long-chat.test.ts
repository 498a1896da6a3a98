// Long conversations, through real llama.cpp inference on a generated model: context shift while generating (the
// parallel-1 worker equals llama-completion --context-shift token for token; the batched sequence engine shifts
// too), chats that outgrow their context dropping their oldest turns while keeping the system prompt and reusing the
// rest of their KV cache, and chat.save() / llama.restoreChat() continuing a conversation without evaluating it
// again, refusing files of another model and truncated or corrupt ones with clear errors.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { llama, LlamaOciError, type ChatSession, type LlamaModel } from "../src/index.js";
import { ROOT_DIR } from "./helpers/cli.js";
import { DEFAULT_TINY_VOCAB, makeTinyLlama } from "./helpers/tiny-model.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const run = promisify(execFile);
const COMPLETION = join(ROOT_DIR, "build", "bin", "llama-completion");
const CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '</s>\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";
const GREEDY = { temperature: 0 } as const;
const PROMPT = "Once upon a time";

let workDir: string;
let modelPath: string;
let otherPath: string;
let model: LlamaModel;

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-long-chat");
  modelPath = join(workDir, "tiny.gguf");
  otherPath = join(workDir, "other.gguf");
  await makeTinyLlama(modelPath, { vocabFrom: DEFAULT_TINY_VOCAB, seed: 31, chatTemplate: CHAT_TEMPLATE, contextLength: 1024 });
  // The same shape and metadata but other weights: only the file's bytes tell them apart.
  await makeTinyLlama(otherPath, { vocabFrom: DEFAULT_TINY_VOCAB, seed: 32, chatTemplate: CHAT_TEMPLATE, contextLength: 1024 });
  model = await llama.loadModel(modelPath, { gpuLayers: 0, contextSize: 256, threads: 1, threadsBatch: 1 });
});

afterAll(async () => {
  await model?.dispose();
  if (workDir) await removeDir(workDir);
});

async function expectError(promise: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, "should reject").toBeInstanceOf(LlamaOciError);
  expect((error as LlamaOciError).code).toBe(code);
  expect((error as LlamaOciError).message).toMatch(message);
}

describe("context shift while generating", () => {
  // What --ignore-eos does in llama-completion: EOS can never be sampled.
  const noEos = () => ({ logitBias: { [model.info.eosToken]: false as const } });

  test("parallel 1: instead of stopping at a full context it drops old tokens and goes on, as llama-completion --context-shift", async () => {
    const context = await model.createContext({ contextSize: 256 });
    try {
      const stopped = await context.completeWithMeta(PROMPT, { ...GREEDY, ...noEos(), maxTokens: 400 });
      expect(stopped.stopReason).toBe("contextFull");
      expect(stopped.timings.discardedTokens).toBe(0);

      const keep = 3;
      const shifted = await context.completeWithMeta(PROMPT, { ...GREEDY, ...noEos(), maxTokens: 400, contextShift: true, keepTokens: keep + 1 });
      expect(shifted.stopReason).toBe("maxTokens");
      expect(shifted.tokens.length).toBe(400);
      expect(shifted.timings.discardedTokens).toBeGreaterThan(0);
      // Up to the first shift, nothing differs.
      expect(shifted.text.startsWith(stopped.text.slice(0, 200))).toBe(true);

      expect(existsSync(COMPLETION), `${COMPLETION} is missing: run 'LLAMA_OCI_BUILD_TOOLS=1 node scripts/build-native.mjs'`).toBe(true);
      const { stdout } = await run(
        COMPLETION,
        ["-m", modelPath, "-p", PROMPT, "-n", "400", "-c", "256", "--context-shift", "--keep", String(keep), "--ignore-eos", "--temp", "0", "-t", "1", "-tb", "1", "-no-cnv", "--no-warmup", "-ngl", "0"],
        { maxBuffer: 1 << 20 },
      );
      const theirs = stdout.slice(stdout.indexOf(PROMPT) + PROMPT.length).replace(/\n+$/, "");
      expect(theirs).toBe(shifted.text);
    } finally {
      await context.dispose();
    }
  });

  test("the batched sequence engine shifts too: alone it gives what parallel 1 gives; two requests share the cells", async () => {
    const single = await model.createContext({ contextSize: 256 });
    const batched = await model.createContext({ contextSize: 256, parallel: 2 });
    try {
      const options = { ...GREEDY, ...noEos(), maxTokens: 300, contextShift: true, keepTokens: 2 };
      const alone = await batched.completeWithMeta(PROMPT, options);
      expect(alone.stopReason).toBe("maxTokens");
      expect(alone.timings.discardedTokens).toBeGreaterThan(0);
      expect(alone.text).toBe((await single.completeWithMeta(PROMPT, options)).text);

      await batched.clear();
      const [a, b] = await Promise.all([batched.completeWithMeta(PROMPT, options), batched.completeWithMeta("The llama was", options)]);
      for (const result of [a, b]) {
        expect(result.stopReason).toBe("maxTokens");
        expect(result.tokens.length).toBe(300);
      }
      expect(a.timings.discardedTokens + b.timings.discardedTokens).toBeGreaterThan(0);
      expect(batched.decodeStats.maxSequencesPerDecode).toBe(2);

      // Without it, the cells run out and the request holding the most ends with contextFull.
      await batched.clear();
      const plain = { ...GREEDY, ...noEos(), maxTokens: 300 };
      const ended = await Promise.all([batched.completeWithMeta(PROMPT, plain), batched.completeWithMeta("The llama was", plain)]);
      expect(ended.map((r) => r.stopReason)).toContain("contextFull");
    } finally {
      await single.dispose();
      await batched.dispose();
    }
  });
});

describe("a chat that outgrows its context", () => {
  const MESSAGES = ["Tell me a story about a llama", "What happened next?", "And then?", "Was the llama happy?", "Tell me more", "How does it end?", "One more time", "Thanks"];

  async function converse(chat: ChatSession<LlamaModel>, maxTokens: number) {
    const results = [];
    for (const message of MESSAGES) results.push(await chat.sendWithMeta(message, { ...GREEDY, maxTokens, ignoreEos: true }));
    return results;
  }

  test("drops the oldest turns, keeps the system prompt, and reuses the rest of its KV cache", async () => {
    const chat = model.createChat({ systemPrompt: "You are a storyteller.", contextSize: 256 });
    try {
      const results = await converse(chat, 40);
      expect(results.every((r) => r.stopReason === "maxTokens")).toBe(true);
      expect(chat.droppedMessages).toBeGreaterThan(0);
      // The history keeps everything; only the model's context forgot the oldest turns.
      expect(chat.history).toHaveLength(1 + 2 * MESSAGES.length);
      expect(chat.history[0]).toEqual({ role: "system", content: "You are a storyteller." });

      const system = await model.tokenize(model.applyChatTemplate([chat.history[0]!], { addAssistantPrompt: false }), { parseSpecial: true });
      for (const [i, r] of results.entries()) {
        expect(r.timings.promptTokens + 40, `turn ${i} leaves room for its answer`).toBeLessThanOrEqual(256);
        // Every turn after the first finds its conversation in the cache, also right after turns were dropped: more
        // than the system prompt comes from the cache.
        if (i > 0) expect(r.timings.cachedTokens, `turn ${i}`).toBeGreaterThan(system.length);
      }

      // The turn after dropping equals a fresh chat that is given the kept window as its history... up to the KV
      // shift's rounding: the cache was reused, not evaluated again, so compare only that it is a sensible answer.
      expect(results.at(-1)!.text.length).toBeGreaterThan(0);
    } finally {
      await chat.dispose();
    }
  });

  test("contextShift: false keeps today's behaviour: the conversation is refused once it no longer fits", async () => {
    const chat = model.createChat({ systemPrompt: "You are a storyteller.", contextSize: 256, contextShift: false });
    try {
      const error = await converse(chat, 40).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(LlamaOciError);
      expect((error as LlamaOciError).message).toMatch(/the prompt is \d+ tokens but the context holds 256/);
      expect(chat.droppedMessages).toBe(0);
    } finally {
      await chat.dispose();
    }
  });

  test("on a model's shared parallel context too", async () => {
    const shared = await llama.loadModel(modelPath, { gpuLayers: 0, contextSize: 512, parallel: 2, threads: 1 });
    try {
      const chat = shared.createChat({ systemPrompt: "You are a storyteller." });
      const results = [];
      for (const message of MESSAGES) results.push(await chat.sendWithMeta(message, { ...GREEDY, maxTokens: 60, ignoreEos: true }));
      expect(chat.droppedMessages).toBeGreaterThan(0);
      expect(results.every((r) => r.stopReason === "maxTokens")).toBe(true);
      expect(results.at(-1)!.timings.cachedTokens).toBeGreaterThan(results.at(-1)!.timings.promptTokens / 2);
      await chat.dispose();
    } finally {
      await shared.dispose();
    }
  });

  test("a message too long for the context even alone is refused clearly", async () => {
    const chat = model.createChat({ systemPrompt: "S", contextSize: 256 });
    try {
      await expectError(chat.send("llama ".repeat(400), { maxTokens: 4 }), "INVALID_ARGUMENT", /the message does not fit the context: with the system prompt it is \d+ tokens but the context holds 256/);
    } finally {
      await chat.dispose();
    }
  });
});

describe("chat.save() and llama.restoreChat()", () => {
  const TURNS = ["Hi there!", "Tell me about llamas."];

  async function chatWithTurns(on: LlamaModel = model): Promise<ChatSession<LlamaModel>> {
    const chat = on.createChat({ systemPrompt: "You are terse." });
    for (const message of TURNS) await chat.send(message, { ...GREEDY, maxTokens: 12 });
    return chat;
  }

  test("a restored chat continues without evaluating the conversation again, exactly as the original would", async () => {
    const path = join(workDir, "chat.llchat");
    const original = await chatWithTurns();
    await original.save(path);
    const restored = await llama.restoreChat(model, path);
    try {
      expect(restored.history).toEqual(original.history);
      const next = await original.sendWithMeta("And then?", { ...GREEDY, maxTokens: 12 });
      const resumed = await restored.sendWithMeta("And then?", { ...GREEDY, maxTokens: 12 });
      expect(resumed.text).toBe(next.text);
      expect(resumed.timings.cachedTokens).toBe(next.timings.cachedTokens);
      // All of the conversation so far came from the restored cache.
      const before = await model.tokenize(model.applyChatTemplate(original.history.slice(0, 4)), { parseSpecial: true });
      expect(resumed.timings.cachedTokens).toBeGreaterThanOrEqual(before.length);
      expect(restored.history).toEqual(original.history);
    } finally {
      await original.dispose();
      await restored.dispose();
    }
  });

  test("between a parallel model's shared context and a context of its own, both ways", async () => {
    const parallel = await llama.loadModel(modelPath, { gpuLayers: 0, contextSize: 512, parallel: 2, threads: 1 });
    try {
      const onShared = await chatWithTurns(parallel);
      const fromShared = join(workDir, "shared.llchat");
      await onShared.save(fromShared);
      const own = await llama.restoreChat(model, fromShared);
      const a = await own.sendWithMeta("And then?", { ...GREEDY, maxTokens: 8 });
      expect(a.timings.cachedTokens).toBeGreaterThan(a.timings.promptTokens / 2);

      const fromOwn = join(workDir, "own.llchat");
      await own.save(fromOwn);
      const back = await llama.restoreChat(parallel, fromOwn);
      const b = await back.sendWithMeta("Goodbye", { ...GREEDY, maxTokens: 8 });
      expect(b.timings.cachedTokens).toBeGreaterThan(b.timings.promptTokens / 2);
      expect(back.history).toHaveLength(own.history.length + 2);
      await Promise.all([onShared.dispose(), own.dispose(), back.dispose()]);
    } finally {
      await parallel.dispose();
    }
  });

  test("a chat saved before its first turn restores its settings, with nothing cached", async () => {
    const path = join(workDir, "empty.llchat");
    const chat = model.createChat({ systemPrompt: "Be brief.", chatTemplate: CHAT_TEMPLATE });
    await chat.save(path);
    await chat.dispose();
    const restored = await llama.restoreChat(model, path);
    try {
      expect(restored.history).toEqual([{ role: "system", content: "Be brief." }]);
      const first = await restored.sendWithMeta("Hi", { ...GREEDY, maxTokens: 4 });
      expect(first.timings.cachedTokens).toBe(0);
    } finally {
      await restored.dispose();
    }
  });

  test("files of another model, truncated, corrupt or of another format are refused clearly, never a crash", async () => {
    const path = join(workDir, "good.llchat");
    const chat = await chatWithTurns();
    await chat.save(path);
    await chat.dispose();
    const bytes = await readFile(path);

    const other = await llama.loadModel(otherPath, { gpuLayers: 0, contextSize: 256, threads: 1 });
    try {
      await expectError(llama.restoreChat(other, path), "CHAT_FILE", /was saved with another model \(llama .+, \d+ bytes\), not llama .+ \(.*other\.gguf, \d+ bytes\)/);
    } finally {
      await other.dispose();
    }

    const write = async (name: string, content: Uint8Array) => {
      const file = join(workDir, name);
      await writeFile(file, content);
      return file;
    };
    await expectError(llama.restoreChat(model, await write("truncated.llchat", bytes.subarray(0, bytes.length - 1000))), "CHAT_FILE", /truncated or corrupt \(its checksum does not match\)/);
    await expectError(llama.restoreChat(model, await write("short.llchat", bytes.subarray(0, 20))), "CHAT_FILE", /truncated/);
    const flipped = Buffer.from(bytes);
    flipped[Math.floor(flipped.length / 2)]! ^= 0xff;
    await expectError(llama.restoreChat(model, await write("flipped.llchat", flipped)), "CHAT_FILE", /truncated or corrupt/);
    await expectError(llama.restoreChat(model, await write("other.bin", Buffer.from("GGUF and then some bytes"))), "CHAT_FILE", /not a chat saved by llama-oci/);
    const newer = Buffer.from(bytes);
    newer.writeUInt32LE(99, 8);
    await expectError(llama.restoreChat(model, await write("newer.llchat", newer)), "CHAT_FILE", /saved in format version 99; this llama-oci reads version 1/);
    await expectError(llama.restoreChat(model, join(workDir, "missing.llchat")), "NOT_FOUND", /saved chat not found/);

    // A file whose checksum is right but whose KV state is garbage: llama.cpp refuses it, the process lives on.
    const { createHash } = await import("node:crypto");
    const content = Buffer.from(bytes.subarray(0, bytes.length - 32));
    const headerSize = content.readUInt32LE(12);
    const header = JSON.parse(content.subarray(16, 16 + headerSize).toString("utf8")) as { tokenCount: number; stateBytes: number };
    const stateStart = 16 + headerSize + header.tokenCount * 4;
    for (let i = stateStart + 8; i < content.length; i += 7) content[i] = (content[i]! * 31 + 7) & 0xff;
    const forged = Buffer.concat([content, createHash("sha256").update(content).digest()]);
    const forgedPath = await write("forged.llchat", forged);
    const error = await llama.restoreChat(model, forgedPath).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LlamaOciError);
    expect((error as LlamaOciError).message).toMatch(/cannot restore the saved state|does not match its token record/);
    // The model still works.
    expect((await model.completeWithMeta(PROMPT, { ...GREEDY, maxTokens: 2 })).tokens.length).toBe(2);
  });
});
