/**
 * Inputs that used to reach a GGML_ASSERT / GGML_ABORT inside llama.cpp (which ends the whole process) or an endless
 * loop, each refused now with a LlamaOciError before the native call. Every case runs in a child process
 * (test/fixtures/robustness-child.mjs): a regression shows up as a failed test with the child's signal, not as a dead
 * test runner. The library comes from dist/ (test/global-setup.ts keeps it current), the addon from build/Release.
 */
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { parseGgufHeader } from "../src/gguf/reader.js";
import { GgmlType, GgufValueType } from "../src/gguf/types.js";
import { GgufWriter } from "../src/gguf/writer.js";
import { llama, LlamaOciError } from "../src/index.js";
import { ROOT_DIR } from "./helpers/cli.js";
import { setScalar, setString, setTensorType } from "./helpers/gguf-mutator.js";
import { makeTinyBert } from "./helpers/tiny-bert.js";
import { makeTinyLlama, toFloat16 } from "./helpers/tiny-model.js";
import { SPM_TOKENS, WPM_TOKENS, writeTinyVocab } from "./helpers/tiny-vocab.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const CHILD = join(ROOT_DIR, "test", "fixtures", "robustness-child.mjs");
const DIST = join(ROOT_DIR, "dist", "esm");
const ADDON = join(ROOT_DIR, "build", "Release", "llama_oci.node");
const TINY = { nLayer: 1, nEmbd: 16, nHead: 2, nHeadKv: 1, nFf: 32, contextLength: 256 } as const;

let dir: string;
let base: Buffer;
const files: Record<string, string> = {};

interface StepResult {
  op: string;
  ok: boolean;
  value?: unknown;
  code?: string;
  name?: string;
  message?: string;
}

/** Runs `ops` on `file` in a child; fails the test if the child dies (a signal, an abort) or hangs. */
async function run(file: string, ops: Record<string, unknown>[]): Promise<StepResult[]> {
  const { stdout } = await promisify(execFile)(process.execPath, [CHILD, file, JSON.stringify(ops)], {
    env: { ...process.env, LLAMA_OCI_DIST: DIST, LLAMA_OCI_ADDON: ADDON },
    timeout: 30_000,
    killSignal: "SIGKILL",
    maxBuffer: 1 << 20,
  }).catch((error: { signal?: string; code?: number; stderr?: string; killed?: boolean }) => {
    throw new Error(`the child died (${error.signal ?? `exit ${String(error.code)}`}${error.killed ? ", killed after 30 s" : ""}): ${error.stderr ?? ""}`);
  });
  const lines = stdout.trim().split("\n").map((line) => JSON.parse(line) as StepResult & { done?: boolean });
  expect(lines.at(-1)).toEqual({ done: true });
  return lines.slice(0, -1);
}

async function save(name: string, bytes: Buffer): Promise<string> {
  const path = join(dir, `${name}.gguf`);
  await writeFile(path, bytes);
  files[name] = path;
  return path;
}

/**
 * The base model written again: with `alignment` (and a padding key of `pad` bytes), and with the F32 tensor
 * `f16` converted to F16, data included, so that the file is well-formed.
 */
async function rewrite(options: { alignment?: number; pad?: number; f16?: string }): Promise<Buffer> {
  const header = parseGgufHeader(base);
  const writer = new GgufWriter();
  if (options.alignment !== undefined) writer.addMetadata("general.alignment", GgufValueType.UINT32, options.alignment);
  for (const [key, entry] of header.metadata) writer.addMetadata(key, entry.type, entry.value);
  if (options.pad !== undefined) writer.addMetadata("test.padding", GgufValueType.STRING, "x".repeat(options.pad));
  for (const t of header.tensors) {
    const data = base.subarray(header.dataOffset + t.offset, header.dataOffset + t.offset + t.size!);
    if (t.name === options.f16) {
      const floats = new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
      writer.addTensor(t.name, t.shape, GgmlType.F16, toFloat16(floats));
    } else {
      writer.addTensor(t.name, t.shape, t.type, data);
    }
  }
  const path = join(dir, "rewritten.gguf");
  await writer.write(path);
  return readFile(path);
}

/** The base model with general.alignment 8 and its tensor data starting off a 32-byte boundary. */
async function misaligned(): Promise<Buffer> {
  for (let pad = 0; pad < 64; pad++) {
    const bytes = await rewrite({ alignment: 8, pad });
    if (parseGgufHeader(bytes).dataOffset % 32 !== 0) return bytes;
  }
  throw new Error("could not build a misaligned file");
}

beforeAll(async () => {
  dir = await makeTempDir("llama-oci-robust");
  const vocab = join(dir, "vocab.gguf");
  await writeTinyVocab(vocab);
  await makeTinyLlama(join(dir, "base.gguf"), { vocabFrom: vocab, ...TINY });
  base = await readFile(join(dir, "base.gguf"));
  files.base = join(dir, "base.gguf");

  const duplicated = [...SPM_TOKENS];
  duplicated[duplicated.length - 1] = duplicated[260]!;
  await writeTinyVocab(join(dir, "dup-vocab.gguf"), { tokens: duplicated });
  await makeTinyLlama((files.duplicateTokens = join(dir, "duplicate-tokens.gguf")), { vocabFrom: join(dir, "dup-vocab.gguf"), ...TINY });

  const bertIds = {
    "tokenizer.ggml.padding_token_id": 0,
    "tokenizer.ggml.unknown_token_id": 1,
    "tokenizer.ggml.bos_token_id": 2,
    "tokenizer.ggml.seperator_token_id": 3,
    "tokenizer.ggml.mask_token_id": 4,
  };
  await writeTinyVocab(join(dir, "wpm-vocab.gguf"), { model: "bert", ids: bertIds });
  await makeTinyBert((files.bert = join(dir, "bert.gguf")), { vocabFrom: join(dir, "wpm-vocab.gguf") });
  // Without the ids llama.cpp's defaults (CLS 101, SEP 102) lie outside these 45 tokens and are dropped.
  await writeTinyVocab(join(dir, "wpm-bare.gguf"), { model: "bert", tokens: WPM_TOKENS, ids: {} });
  await makeTinyLlama((files.wpmWithoutSpecials = join(dir, "wpm-without-specials.gguf")), { vocabFrom: join(dir, "wpm-bare.gguf"), ...TINY });

  await save("nonCausal", setScalar(base, "llama.attention.causal", GgufValueType.BOOL, false));
  await save("noTokenizer", setString(base, "tokenizer.ggml.model", "none"));
  await save("rwkvLoop", setString(base, "tokenizer.ggml.model", "rwkv"));
  await save("wpmByteTokens", setString(base, "tokenizer.ggml.model", "bert"));
  await save("zeroLayers", setScalar(base, "llama.block_count", GgufValueType.UINT32, 0));
  await save("tooManyLayers", setScalar(base, "llama.block_count", GgufValueType.UINT32, 100000));
  await save("expertsUsed", setScalar(base, "llama.expert_used_count", GgufValueType.UINT32, 2));
  await save("negativeEps", setScalar(base, "llama.attention.layer_norm_rms_epsilon", GgufValueType.FLOAT32, -1));
  await save("nanEps", setScalar(base, "llama.attention.layer_norm_rms_epsilon", GgufValueType.FLOAT32, NaN));
  await save("ropeScaling", setString(base, "llama.rope.scaling.type", "sideways"));
  await save("pooling", setScalar(base, "llama.pooling_type", GgufValueType.UINT32, 99));
  await save("intNorm", setTensorType(base, "output_norm.weight", GgmlType.I32));
  await save("intMatrix", setTensorType(base, "blk.0.ffn_up.weight", GgmlType.I32));
  await save("f16Norm", await rewrite({ f16: "blk.0.attn_norm.weight" }));
  await save("misaligned", await misaligned());
}, 60_000);

afterAll(async () => {
  if (dir) await removeDir(dir);
});

const refusedLoad = (message: RegExp) => ({ op: "load", ok: false, code: "MODEL_LOAD", message: expect.stringMatching(message) as unknown });

describe("the files llama.cpp would abort on are refused when loading", () => {
  test("the base model works, so the cases below fail for their one difference", async () => {
    const [load, complete, embed] = await run(files.base!, [{ op: "load" }, { op: "complete" }, { op: "embed" }]);
    expect(load).toMatchObject({ ok: true, value: { causalAttention: true, vocabType: "spm" } });
    expect(complete).toMatchObject({ ok: true });
    expect(embed).toMatchObject({ ok: true, value: 16 });
  });

  test("a vocabulary with duplicate token texts (llama-vocab.cpp asserts id_to_token.size() == token_to_id.size())", async () => {
    const results = await run(files.duplicateTokens!, [{ op: "load" }, { op: "rawLoad" }]);
    expect(results[0]).toMatchObject(refusedLoad(/its vocabulary is invalid: tokens 260 and 276 are both "▁the" \(token texts must be unique\)/));
    // The addon checks the raw strings itself, for callers of the binding.
    expect(results[1]).toMatchObject({ ok: false, message: expect.stringMatching(/tokens 260 and 276 have the same text/) as unknown });
  });

  test.each([
    ["zeroLayers", /llama\.block_count is 0; llama\.cpp supports 1 to 512 layers/],
    ["tooManyLayers", /llama\.block_count is 100000/],
    ["expertsUsed", /llama\.expert_used_count is 2, more than the 0 experts/],
    ["negativeEps", /llama\.attention\.layer_norm_rms_epsilon is -1; a norm epsilon must be a number >= 0/],
    ["nanEps", /layer_norm_rms_epsilon is NaN/],
    ["ropeScaling", /llama\.rope\.scaling\.type is "sideways", not one of none, linear, yarn, longrope/],
    ["pooling", /llama\.pooling_type is 99, not one of llama\.cpp's pooling types/],
    ["intNorm", /tensor "output_norm\.weight" has type I32; weights must be floating-point or quantized/],
    ["intMatrix", /tensor "blk\.0\.ffn_up\.weight" has type I32/],
    ["f16Norm", /tensor "blk\.0\.attn_norm\.weight" is a 1-D weight of type F16; llama\.cpp computes with 1-D weights in F32 only/],
    ["wpmByteTokens", /token 3 is a byte token, which a WordPiece \("bert"\) tokenizer cannot have/],
    ["rwkvLoop", /RWKV vocabulary has tokens that begin with byte 0x3c but no token for that byte alone/],
  ])("%s", async (name, message) => {
    const [load] = await run(files[name]!, [{ op: "load" }, { op: "complete" }]);
    expect(load).toMatchObject(refusedLoad(message));
  });

  test("tensor data off a 32-byte boundary is refused for a memory-mapped load and works without mmap", async () => {
    const results = await run(files.misaligned!, [{ op: "load" }, { op: "load", options: { useMmap: false } }, { op: "complete" }]);
    expect(results[0]).toMatchObject(refusedLoad(/not on a 32-byte boundary, so it cannot be memory-mapped \(load it with useMmap: false\)/));
    expect(results.slice(1).map((r) => r.ok)).toEqual([true, true]);
  });
});

describe("models that cannot generate are refused before decoding", () => {
  const nonCausal = /this model cannot generate text: it is an embedding model with non-causal attention/;

  test("a model whose GGUF turns causal attention off embeds, but generation, chats and bench are refused", async () => {
    const results = await run(files.nonCausal!, [
      { op: "load" },
      { op: "complete" },
      { op: "generate" },
      { op: "chat" },
      { op: "contextComplete", length: 200, context: { ubatchSize: 32 } },
      { op: "bench" },
      { op: "embed" },
      // Longer than the micro-batch: llama.cpp asserts "non-causal attention requires n_ubatch >= n_tokens".
      { op: "embed", text: "once upon a time the llama was ".repeat(8), context: { contextSize: 256, batchSize: 256, ubatchSize: 16 } },
      // The addon refuses on its own too: a 200-token prompt in ubatches of 32 used to abort the process.
      { op: "rawLoad" },
      { op: "rawGenerate", length: 200, context: { ubatchSize: 32 } },
      { op: "rawBench", context: { ubatchSize: 32 } },
      { op: "rawEmbed", length: 100, context: { ubatchSize: 32 } },
    ]);
    expect(results[0]).toMatchObject({ ok: true, value: { causalAttention: false } });
    for (const step of results.slice(1, 5)) expect(step).toMatchObject({ ok: false, code: "INVALID_ARGUMENT", message: expect.stringMatching(nonCausal) as unknown });
    expect(results[5]).toMatchObject({ ok: false, code: "INVALID_ARGUMENT", message: expect.stringMatching(/cannot be benchmarked: it is an embedding model/) as unknown });
    expect(results[6]).toMatchObject({ ok: true, value: 16 });
    expect(results[7]).toMatchObject({ ok: false, code: "INVALID_ARGUMENT", message: expect.stringMatching(/the text is \d+ tokens but the embedding context takes at most 16 at once/) as unknown });
    expect(results[9]).toMatchObject({ ok: false, message: expect.stringMatching(/cannot generate text with this model: it is an embedding model with non-causal attention/) as unknown });
    expect(results[10]).toMatchObject({ ok: false, message: expect.stringMatching(/cannot benchmark with this model/) as unknown });
    expect(results[11]).toMatchObject({ ok: false, message: expect.stringMatching(/input of 100 tokens does not fit the embedding context's batch of 32 tokens/) as unknown });
  });

  test("a BERT-like model (no KV cache) embeds but does not generate", async () => {
    const results = await run(files.bert!, [
      { op: "load" },
      { op: "embed", text: "hello llama" },
      { op: "complete" },
      { op: "rawLoad" },
      { op: "rawGenerate", length: 8 },
    ]);
    expect(results[0]).toMatchObject({ ok: true, value: { causalAttention: false, vocabType: "wpm" } });
    expect(results[1]).toMatchObject({ ok: true, value: 16 });
    expect(results[2]).toMatchObject({ ok: false, code: "INVALID_ARGUMENT", message: expect.stringMatching(nonCausal) as unknown });
    expect(results[4]).toMatchObject({ ok: false, message: expect.stringMatching(/embedding model with non-causal attention and no KV cache/) as unknown });
  });

  test("a model without a tokenizer (tokenizer.ggml.model \"none\") neither tokenizes nor generates", async () => {
    const results = await run(files.noTokenizer!, [{ op: "load" }, { op: "tokenize" }, { op: "complete" }, { op: "rawLoad" }, { op: "rawGenerate", length: 4 }]);
    expect(results[0]).toMatchObject({ ok: true, value: { vocabType: "none" } });
    expect(results[1]).toMatchObject({ ok: false, code: "INFERENCE", message: expect.stringMatching(/the model has no tokenizer/) as unknown });
    expect(results[2]).toMatchObject({ ok: false, code: "INVALID_ARGUMENT", message: expect.stringMatching(/cannot generate text: it has no tokenizer/) as unknown });
    expect(results[4]).toMatchObject({ ok: false, message: expect.stringMatching(/the model has no tokenizer/) as unknown });
  });

  test("special tokens a vocabulary lacks are refused when tokenizing with addSpecial, and fine without", async () => {
    const results = await run(files.wpmWithoutSpecials!, [
      { op: "load" },
      { op: "tokenize", text: "hello" },
      { op: "tokenize", text: "hello", options: { addSpecial: false } },
      { op: "rawLoad" },
      { op: "rawTokenize", text: "hello", addSpecial: true },
    ]);
    const missing = /cannot add the model's special tokens: its vocabulary has no CLS \(BOS\) token/;
    expect(results[1]).toMatchObject({ ok: false, code: "INFERENCE", message: expect.stringMatching(missing) as unknown });
    expect(results[2]).toMatchObject({ ok: true, value: 1 });
    expect(results[4]).toMatchObject({ ok: false, message: expect.stringMatching(missing) as unknown });
  });
});

describe("absurd options are refused", () => {
  test("thread counts beyond ggml's 512, and sizes of 0", async () => {
    const model = await llama.loadModel(files.base!, { gpuLayers: 0, threads: 1 });
    try {
      for (const options of [{ threads: 513 }, { threadsBatch: 100000 }, { contextSize: 0 }, { batchSize: 0 }, { ubatchSize: -1 }]) {
        const error = await model.createContext(options).then(() => undefined, (e: unknown) => e);
        expect(error).toBeInstanceOf(LlamaOciError);
        expect((error as LlamaOciError).code).toBe("INVALID_ARGUMENT");
      }
    } finally {
      await model.dispose();
    }
  });
});
