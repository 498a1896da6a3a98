// The whole-vocabulary grammar check through the model's token tree (native/token-tree.h): when the grammar rejects
// the sampled token, the tokens under a rejected token are rejected without being checked. It must give exactly the
// tokens that checking every token (llama.cpp's grammar sampler) gives: same seeds, same JSON-schema grammars (ASCII
// and non-ASCII literals), greedy and sampled over the whole vocabulary, on an SPM and two BPE vocabularies, on the
// one-sequence worker and the batched sequence engine; and the rejections really happened (grammarResamples).
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { getBinding } from "../src/llama/binding.js";
import { toNativeSampling } from "../src/llama/options.js";
import type { NativeContext, NativeModel, NativeSamplingOptions } from "../src/llama/native-types.js";
import { llama, type LlamaModel } from "../src/index.js";
import { ROOT_DIR } from "./helpers/cli.js";
import { DEFAULT_TINY_VOCAB, makeTinyLlama } from "./helpers/tiny-model.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const VOCABS: Array<[string, string]> = [
  ["llama SPM", DEFAULT_TINY_VOCAB],
  ["StarCoder BPE (49152 tokens)", join(ROOT_DIR, "deps", "llama.cpp", "models", "ggml-vocab-starcoder.gguf")],
  ["Qwen2 BPE", join(ROOT_DIR, "deps", "llama.cpp", "models", "ggml-vocab-qwen2.gguf")],
];

const SCHEMA = {
  type: "object",
  properties: {
    title: { type: "string" },
    year: { type: "integer" },
    mood: { enum: ["café", "日本語", "naïve ☕"] },
    tags: { type: "array", items: { type: "string" } },
  },
  required: ["title", "year", "mood", "tags"],
};

let workDir: string;
beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-grammar-tree");
});
afterAll(async () => {
  if (workDir) await removeDir(workDir);
});

describe.each(VOCABS)("token tree on the %s vocabulary", (name, vocab) => {
  let model: LlamaModel;
  let nativeModel: NativeModel;
  let single: NativeContext;
  let batched: NativeContext;
  let grammar: string;

  beforeAll(async () => {
    const path = join(workDir, `${name.replace(/\W+/g, "-")}.gguf`);
    await makeTinyLlama(path, { vocabFrom: vocab, seed: 5, nLayer: 2, nEmbd: 64, nHead: 4, nHeadKv: 2, nFf: 128, contextLength: 512 });
    model = await llama.loadModel(path, { gpuLayers: 0, contextSize: 256, threads: 1, threadsBatch: 1 });
    grammar = model.jsonSchemaToGrammar(SCHEMA);
    const binding = getBinding();
    nativeModel = await binding.loadModel(path, { gpuLayers: 0, useMmap: true, useMlock: false, vocabOnly: false }, null, binding.createAbortFlag());
    const options = { batchSize: 256, ubatchSize: 256, threads: 1, threadsBatch: 1, flashAttention: "auto", embeddings: false, pooling: "unspecified" } as const;
    single = await nativeModel.createContext({ ...options, contextSize: 256 });
    batched = await nativeModel.createContext({ ...options, contextSize: 512, parallel: 2 });
  });

  afterAll(async () => {
    single?.dispose();
    batched?.dispose();
    nativeModel?.dispose();
    await model?.dispose();
  });

  // The library's own mapping of generation options, then the native knobs under test.
  const sampling = (extra: Partial<NativeSamplingOptions>): NativeSamplingOptions => ({
    ...toNativeSampling({ temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05, repeatPenalty: 1, seed: 1 }, grammar),
    ...extra,
  });

  const run = async (context: NativeContext, extra: Partial<NativeSamplingOptions>) => {
    const tokens = await model.tokenize("A film as JSON:\n");
    return context.generate({ tokens, maxTokens: 48, sampling: sampling(extra), stop: [], ignoreEos: false, abort: getBinding().createAbortFlag(), onText: () => {} });
  };

  const SETTINGS: Array<[string, Partial<NativeSamplingOptions>]> = [
    ["greedy", { temperature: 0 }],
    ["temperature 0.8, top-k 40, seed 1", { seed: 1 }],
    ["temperature 0.8, top-k 40, seed 2", { seed: 2 }],
    ["the whole vocabulary at temperature 1.5, seed 3", { temperature: 1.5, topK: 0, topP: 1, minP: 0, seed: 3 }],
    ["the whole vocabulary at temperature 1.5, seed 4", { temperature: 1.5, topK: 0, topP: 1, minP: 0, seed: 4 }],
  ];

  test.each(SETTINGS)("%s: the same tokens as checking every token, on both generation paths", async (_, extra) => {
    const reference = await run(single, { ...extra, grammarTree: false });
    expect(reference.grammarResamples).toBeGreaterThan(0);
    for (const [path, context] of [["one sequence", single], ["batched", batched]] as const) {
      const tree = await run(context, { ...extra, grammarTree: true });
      expect([...tree.tokens], path).toEqual([...reference.tokens]);
      expect(tree.text, path).toBe(reference.text);
      expect(tree.grammarResamples, path).toBe(reference.grammarResamples);
    }
    // What came out follows the schema as far as it got.
    expect(reference.text).toMatch(/^\{\s*"title"\s*:\s*"/);
  });
});
