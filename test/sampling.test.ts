// The samplers users set (logit bias, DRY, XTC, typical-p, top-n-sigma, Mirostat 1 and 2) and the lazily applied
// grammar, through real llama.cpp inference on a generated model: seeded sampled generations equal llama.cpp's own
// llama-completion with the same flags token for token (the same chain, in common_sampler's order, with the same
// seed); the grammar is checked against the sampled token first, as common_sampler does, and gives what the
// grammar-first chain gives when greedy; both generation paths (parallel 1 and the batched sequence engine) agree;
// and every option is validated with a clear error.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { llama, LlamaOciError, type GenerationOptions, type LlamaModel } from "../src/index.js";
import { getBinding } from "../src/llama/binding.js";
import type { NativeContext, NativeSamplingOptions } from "../src/llama/native-types.js";
import { ROOT_DIR } from "./helpers/cli.js";
import { DEFAULT_TINY_VOCAB, makeTinyLlama } from "./helpers/tiny-model.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const run = promisify(execFile);
const COMPLETION = join(ROOT_DIR, "build", "bin", "llama-completion");
const PROMPT = "Once upon a time";
const N = 32;

let workDir: string;
let modelPath: string;
let model: LlamaModel;

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-sampling");
  modelPath = join(workDir, "tiny.gguf");
  await makeTinyLlama(modelPath, { vocabFrom: DEFAULT_TINY_VOCAB, seed: 21, nLayer: 2, nEmbd: 128, nHead: 4, nHeadKv: 2, nFf: 256, contextLength: 1024 });
  // One thread, as llama-completion below: ggml's reductions then run in one fixed order.
  model = await llama.loadModel(modelPath, { gpuLayers: 0, contextSize: 512, threads: 1, threadsBatch: 1 });
});

afterAll(async () => {
  await model?.dispose();
  if (workDir) await removeDir(workDir);
});

async function expectInvalid(promise: Promise<unknown>, message: RegExp): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, "should reject").toBeInstanceOf(LlamaOciError);
  expect((error as LlamaOciError).code).toBe("INVALID_ARGUMENT");
  expect((error as LlamaOciError).message).toMatch(message);
}

/** What llama-completion generates after the prompt it echoes (and before the " [end of text]" it prints at EOS). */
async function completion(prompt: string, args: string[], tokens: number): Promise<string> {
  const { stdout } = await run(
    COMPLETION,
    ["-m", modelPath, "-p", prompt, "-n", String(tokens), "-c", "512", "-t", "1", "-tb", "1", "-no-cnv", "--no-warmup", "-ngl", "0", ...args],
    { maxBuffer: 1 << 20 },
  );
  const start = stdout.indexOf(prompt);
  expect(start, `llama-completion should echo the prompt: ${JSON.stringify(stdout.slice(0, 300))}`).toBeGreaterThanOrEqual(0);
  return stdout
    .slice(start + prompt.length)
    .replace(/ \[end of text\]\n*$/, "")
    .replace(/\n+$/, "");
}

/** A prompt that repeats itself, for DRY to have repetitions to penalise. */
const REPETITIVE = "the llama was a llama, the llama was a llama, the llama was";

/** Each sampler (and some together) as our option and as llama-completion's flags; every case is seeded. */
const CASES: { name: string; ours: GenerationOptions; flags: string[]; prompt?: string }[] = [
  { name: "the default chain", ours: {}, flags: [] },
  { name: "typical-p", ours: { typicalP: 0.8 }, flags: ["--typical", "0.8"] },
  { name: "top-n-sigma", ours: { topNSigma: 1.2, topK: 0 }, flags: ["--top-nsigma", "1.2", "--top-k", "0"] },
  { name: "XTC", ours: { xtcProbability: 0.7, xtcThreshold: 0.02 }, flags: ["--xtc-probability", "0.7", "--xtc-threshold", "0.02"] },
  {
    name: "DRY",
    ours: { dryMultiplier: 3, dryBase: 2, dryAllowedLength: 1, dryPenaltyLastN: -1, temperature: 0.3 },
    flags: ["--dry-multiplier", "3", "--dry-base", "2", "--dry-allowed-length", "1", "--dry-penalty-last-n", "512", "--temp", "0.3"],
    prompt: REPETITIVE,
  },
  { name: "Mirostat", ours: { mirostat: 1, mirostatTau: 4, mirostatEta: 0.2 }, flags: ["--mirostat", "1", "--mirostat-ent", "4", "--mirostat-lr", "0.2"] },
  { name: "Mirostat 2.0", ours: { mirostat: 2, mirostatTau: 3 }, flags: ["--mirostat", "2", "--mirostat-ent", "3"] },
  { name: "logit bias", ours: { logitBias: { 450: 6, 278: false } }, flags: ["--logit-bias", "450+6", "--logit-bias", "278-inf"] },
  {
    name: "penalties, DRY, typical-p, top-n-sigma and XTC together",
    ours: { repeatPenalty: 1.2, frequencyPenalty: 0.3, dryMultiplier: 0.8, typicalP: 0.95, topNSigma: 2, xtcProbability: 0.5, xtcThreshold: 0.05, temperature: 1.1 },
    flags: ["--repeat-penalty", "1.2", "--frequency-penalty", "0.3", "--dry-multiplier", "0.8", "--typical", "0.95", "--top-nsigma", "2", "--xtc-probability", "0.5", "--xtc-threshold", "0.05", "--temp", "1.1"],
  },
  {
    name: "a grammar, checked lazily",
    ours: { grammar: 'root ::= ("a" | "the" | " " | "llama" | "was")+' },
    flags: ["--grammar", 'root ::= ("a" | "the" | " " | "llama" | "was")+'],
  },
  {
    name: "a JSON schema",
    ours: { jsonSchema: { type: "object", properties: { name: { type: "string" }, age: { type: "integer" } }, required: ["name", "age"] } },
    flags: ["--json-schema", JSON.stringify({ type: "object", properties: { name: { type: "string" }, age: { type: "integer" } }, required: ["name", "age"] })],
  },
];

describe("seeded sampling equals llama-completion", () => {
  beforeAll(() => {
    if (!existsSync(COMPLETION)) throw new Error(`${COMPLETION} is missing: run 'LLAMA_OCI_BUILD_TOOLS=1 node scripts/build-native.mjs'`);
  });

  test.each(CASES)("$name", async ({ ours, flags, prompt = PROMPT }) => {
    const seed = 1234;
    const result = await model.completeWithMeta(prompt, { maxTokens: N, seed, ...ours });
    expect(result.tokens.length).toBeGreaterThan(0);
    const theirs = await completion(prompt, ["--seed", String(seed), ...flags], result.tokens.length);
    expect(result.text.length).toBeGreaterThan(0);
    expect(theirs).toBe(result.text);
  });

  test("the samplers change what is sampled (the cases above are not all the default chain)", async () => {
    for (const { name, ours, prompt = PROMPT } of CASES.slice(1)) {
      // DRY alone (its case runs at a low temperature, where the default chain would repeat the prompt).
      const { dryMultiplier, ...without } = ours;
      const base = (await model.completeWithMeta(prompt, { maxTokens: N, seed: 1234, ...(dryMultiplier === undefined || ours.typicalP !== undefined ? {} : without) })).text;
      expect((await model.completeWithMeta(prompt, { maxTokens: N, seed: 1234, ...ours })).text, name).not.toBe(base);
    }
  });
});

describe("the grammar is applied lazily", () => {
  let native: NativeContext;
  const GRAMMAR = 'root ::= "{" ws "\\"a\\":" ws [0-9]+ ws "}" ws\nws ::= [ \\t\\n]*';

  beforeAll(async () => {
    const nativeModel = await getBinding().loadModel(modelPath, { gpuLayers: 0, useMmap: true, useMlock: false, vocabOnly: false }, null, getBinding().createAbortFlag());
    native = await nativeModel.createContext({ contextSize: 256, batchSize: 256, ubatchSize: 256, threads: 1, threadsBatch: 1, flashAttention: "auto", embeddings: false, pooling: "unspecified" });
  });

  afterAll(() => native?.dispose());

  const sampling = (extra: Partial<NativeSamplingOptions>): NativeSamplingOptions => ({
    temperature: 0,
    topK: 40,
    topP: 0.95,
    minP: 0.05,
    repeatPenalty: 1,
    repeatLastN: 64,
    frequencyPenalty: 0,
    presencePenalty: 0,
    seed: 3,
    grammar: GRAMMAR,
    grammarRoot: "root",
    ...extra,
  });
  const generate = async (extra: Partial<NativeSamplingOptions>) => {
    const tokens = await model.tokenize(PROMPT);
    return native.generate({ tokens, maxTokens: 24, sampling: sampling(extra), stop: [], ignoreEos: false, abort: getBinding().createAbortFlag(), onText: () => {} });
  };

  test("greedy: checking the sampled token first gives what constraining every candidate first gives", async () => {
    const lazy = await generate({});
    const eager = await generate({ grammarFirst: true });
    expect(lazy.text).toMatch(/^\{\s*"a":\s*[0-9]+/);
    expect(lazy.text).toBe(eager.text);
    expect([...lazy.tokens]).toEqual([...eager.tokens]);
  });

  test("sampled output always satisfies the grammar", async () => {
    for (const seed of [1, 2, 3, 4]) {
      const result = await generate({ temperature: 1.5, topK: 0, topP: 1, minP: 0, seed });
      expect(result.text, `seed ${seed}`).toMatch(/^\{\s*"a":\s*[0-9]*/);
      if (result.stopReason === "eos") expect(result.text).toMatch(/^\{\s*"a":\s*[0-9]+\s*\}\s*$/);
    }
  });

  test("a grammar that logit bias leaves no token for is an error, not a crash", async () => {
    // "{" as a token of its own (not "▁{", which tokenizing "{" alone gives) and as the byte-fallback token <0x7B>
    // (SPM's byte tokens start at 3).
    const open = [(await model.tokenize("a{", { addSpecial: false })).at(-1)!, 3 + 0x7b];
    const bans: Array<[number, number]> = open.map((t) => [t, -Infinity]);
    await expect(generate({ logitBias: bans, grammar: 'root ::= "{"' })).rejects.toThrow(/no token|chose no token/);
    expect(await model.detokenize([open[0]!])).toBe("{");
  });
});

describe("logit bias", () => {
  const GREEDY = { temperature: 0, maxTokens: 8 } as const;

  test("banning the greedy choice changes it; a large bias forces a token; text means its tokens", async () => {
    const base = await model.completeWithMeta(PROMPT, GREEDY);
    const first = base.tokens[0]!;
    const banned = await model.completeWithMeta(PROMPT, { ...GREEDY, logitBias: { [first]: false } });
    expect(banned.tokens[0]).not.toBe(first);
    expect([...banned.tokens]).not.toContain(first);
    // The array form, with -Infinity, is the same thing.
    expect((await model.completeWithMeta(PROMPT, { ...GREEDY, logitBias: [[first, -Infinity]] })).text).toBe(banned.text);

    const llamaTokens = [...(await model.tokenize("llama", { addSpecial: false }))];
    const forced = await model.completeWithMeta(PROMPT, { ...GREEDY, logitBias: [[llamaTokens[0]!, 100]] });
    expect([...forced.tokens]).toEqual(new Array(8).fill(llamaTokens[0]));
    // Text: each of its tokens gets the bias.
    const byText = await model.completeWithMeta(PROMPT, { ...GREEDY, logitBias: [["llama", 100]] });
    for (const token of byText.tokens) expect(llamaTokens).toContain(token);
  });

  test("invalid entries are refused before anything runs", async () => {
    await expectInvalid(model.complete(PROMPT, { logitBias: { 99999999: 1 } }), /logitBias\[99999999\]: 99999999 is not a token of this model/);
    await expectInvalid(model.complete(PROMPT, { logitBias: [[1, Number.NaN]] }), /logitBias\[1\] must be a finite number or false/);
    await expectInvalid(model.complete(PROMPT, { logitBias: [[1.5, 1]] }), /not a token of this model/);
    await expectInvalid(model.complete(PROMPT, { logitBias: [["", 1]] }), /non-empty text/);
    await expectInvalid(model.complete(PROMPT, { logitBias: [["llama", "x" as unknown as number]] }), /logitBias\["llama"\] must be a finite number or false \(got x\)/);
    await expectInvalid(model.complete(PROMPT, { logitBias: "x" as never }), /logitBias must be/);
  });
});

describe("DRY", () => {
  /** Whether some run of n tokens occurs twice. */
  const repeats = (tokens: number[], n: number) => {
    const seen = new Set<string>();
    for (let i = 0; i + n <= tokens.length; i++) {
      const key = tokens.slice(i, i + n).join(",");
      if (seen.has(key)) return true;
      seen.add(key);
    }
    return false;
  };

  test("with a strong multiplier, greedy output never repeats a run longer than dryAllowedLength; without, it loops", async () => {
    const prompt = await model.tokenize(PROMPT);
    const plain = await model.completeWithMeta(PROMPT, { temperature: 0, maxTokens: 64, ignoreEos: true });
    expect(repeats([...prompt, ...plain.tokens], 3), "the random model loops when greedy").toBe(true);
    const dry = await model.completeWithMeta(PROMPT, {
      temperature: 0,
      maxTokens: 64,
      ignoreEos: true,
      dryMultiplier: 1000,
      dryBase: 2,
      dryAllowedLength: 2,
      dryPenaltyLastN: -1,
      drySequenceBreakers: [],
    });
    expect(repeats([...prompt, ...dry.tokens], 3)).toBe(false);
  });
});

describe("the batched sequence engine samples the same way", () => {
  test("seeded generations with every sampler equal those of a parallel-1 context; batched ones keep to the grammar", async () => {
    const parallel = await model.createContext({ parallel: 2, contextSize: 512 });
    const single = await model.createContext({ parallel: 1, contextSize: 512 });
    try {
      for (const { name, ours, prompt = PROMPT } of CASES) {
        // One at a time: one sequence per llama_decode, the same arithmetic as the parallel-1 worker.
        const options = { maxTokens: 16, seed: 99, ...ours };
        expect((await parallel.completeWithMeta(prompt, options)).text, name).toBe((await single.completeWithMeta(prompt, options)).text);
      }
      // Batched, the logits differ in their last bits (another split of the work), so only the grammar is checked.
      const grammar = 'root ::= ("a" | "the" | " " | "llama" | "was")+';
      const batched = await Promise.all([PROMPT, "The llama was"].map((p) => parallel.completeWithMeta(p, { maxTokens: 16, seed: 5, grammar })));
      // (maxTokens may end it inside a word)
      for (const result of batched) expect(result.text).toMatch(/^(a|the| |llama|was)*(t|th|l|ll|lla|llam|w|wa)?$/);
      expect(parallel.decodeStats.maxSequencesPerDecode).toBe(2);
    } finally {
      await parallel.dispose();
      await single.dispose();
    }
  });
});

describe("validation", () => {
  test.each([
    [{ typicalP: 1.5 }, /typicalP must be a number >= 0 and <= 1/],
    [{ xtcProbability: -0.1 }, /xtcProbability must be a number >= 0 and <= 1/],
    [{ xtcThreshold: 2 }, /xtcThreshold must be a number >= 0 and <= 1/],
    [{ topNSigma: Number.NaN }, /topNSigma must be a finite number \(got NaN\)/],
    [{ dryMultiplier: -1 }, /dryMultiplier must be a finite number >= 0/],
    [{ dryBase: 0.5 }, /dryBase must be a finite number >= 1/],
    [{ dryAllowedLength: 1.5 }, /dryAllowedLength must be an integer >= 0/],
    [{ dryPenaltyLastN: -2 }, /dryPenaltyLastN must be an integer >= -1/],
    [{ drySequenceBreakers: ["\n", ""] }, /drySequenceBreakers must be an array of non-empty strings/],
    [{ mirostat: 3 as never }, /mirostat must be 0 \(off\), 1 \(Mirostat\) or 2 \(Mirostat 2.0\) \(got 3\)/],
    [{ mirostatTau: -1 }, /mirostatTau must be a finite number >= 0/],
    [{ mirostatEta: Infinity }, /mirostatEta must be a finite number >= 0 \(got Infinity\)/],
  ] as [GenerationOptions, RegExp][])("%j", async (options, message) => {
    await expectInvalid(model.complete(PROMPT, options), message);
  });
});
