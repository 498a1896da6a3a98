/**
 * Public option types of the inference API, their defaults, and their translation into the addon's options.
 * Defaults follow llama.cpp's command-line tools where they have one.
 */
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { LlamaOciError } from "../errors.js";
import type { ChatGrammar } from "./chat-format.js";
import type { NativeContextOptions, NativeModelOptions, NativeSamplingOptions } from "./native-types.js";

export interface LoadModelOptions {
  /** Layers to offload to the GPU: "max" = all. Default "max" when the addon has a GPU backend, else 0. */
  gpuLayers?: "max" | number;
  /** Map the file instead of reading it into memory (default true). */
  useMmap?: boolean;
  /** Lock the model in RAM (default false). */
  useMlock?: boolean;
  /** Load progress, a fraction from 0 to 1. */
  onLoadProgress?: (fraction: number) => void;
  /** Aborts the load; loadModel then rejects with code ABORTED. */
  signal?: AbortSignal;
  /**
   * llama.cpp RPC servers (`ggml-rpc-server`, "host:port") to split the model over, as llama.cpp's `--rpc`: their
   * devices come after the machine's own GPUs, and `gpuLayers` are spread over all of them. Unauthenticated: for
   * trusted networks only.
   */
  rpcServers?: string[];
  /**
   * A multimodal projector (mmproj GGUF) to load with the model, so that chats take images; llama.fromDocker()
   * uses the artifact's mmproj layer when this is not given.
   */
  projector?: string;
}

export type FlashAttention = "auto" | "on" | "off" | boolean;

export interface ContextOptions {
  /** Tokens the context holds (prompt plus generated). Default min(the model's training context, 4096). */
  contextSize?: number;
  /** Logical batch size for prompt processing (default 512, at most contextSize). */
  batchSize?: number;
  /** Physical batch size (default min(batchSize, 512)). */
  ubatchSize?: number;
  /** CPU threads for generation. Default: the number of physical cores available to this process. */
  threads?: number;
  /** CPU threads for prompt processing (default: threads). */
  threadsBatch?: number;
  /** Flash attention (default "auto": on where the backend supports it). */
  flashAttention?: FlashAttention;
  /**
   * Sequences the context generates at once (default 1): concurrent requests are decoded together, one batch per
   * step, instead of one after the other. The context's `contextSize` cells must hold at least
   * MIN_TOKENS_PER_SEQUENCE (64) tokens per sequence (see `kvUnified` for how the sequences share them). An integer
   * from 1 to 256.
   */
  parallel?: number;
  /**
   * With parallel > 1: true (default) puts the sequences in one unified KV cache, whose `contextSize` cells they
   * share (a long conversation may take what idle ones leave; their caches are dropped, least recently used first);
   * false gives each sequence its own `contextSize / parallel` cells (llama.cpp rounds them up to a multiple of 256;
   * `context.sequenceSize` says how many), as llama-server does by default. A step then attends only to each
   * sequence's own cells, which makes it faster with many sequences (bench/serve: about 15% at 8).
   */
  kvUnified?: boolean;
}

export interface ModelOptions extends LoadModelOptions, ContextOptions {}

export interface SamplingOptions {
  /** 0 = greedy (always the most likely token). Default 0.8. */
  temperature?: number;
  /** Default 40; 0 = off. */
  topK?: number;
  /** Default 0.95; 1 = off. */
  topP?: number;
  /** Default 0.05; 0 = off. */
  minP?: number;
  /** Penalty for repeating recent tokens; default 1.0 = off. */
  repeatPenalty?: number;
  /** How many recent tokens the penalties look at (default 64). */
  repeatLastN?: number;
  /** Default 0 = off. */
  frequencyPenalty?: number;
  /** Default 0 = off. */
  presencePenalty?: number;
  /** Sampling seed; default random. With the same seed, prompt and options, output repeats. */
  seed?: number;
  /** Locally typical sampling: keep the tokens whose surprise is closest to the expected one, up to this mass. Default 1 = off. */
  typicalP?: number;
  /** Keep only the tokens within n standard deviations of the most likely one (top-n-sigma). Default off (0 or less). */
  topNSigma?: number;
  /** XTC ("exclude top choices"): with this probability, drop every token above xtcThreshold but the least likely of them. Default 0 = off. */
  xtcProbability?: number;
  /** XTC's threshold, 0 to 1 (default 0.1; above 0.5 XTC is off). */
  xtcThreshold?: number;
  /** DRY ("don't repeat yourself") penalty multiplier for tokens that would extend a repetition; default 0 = off. */
  dryMultiplier?: number;
  /** DRY's base (at least 1; default 1.75): the penalty is multiplier * base^(repetition length - dryAllowedLength). */
  dryBase?: number;
  /** Repetitions up to this many tokens are not penalised by DRY (default 2). */
  dryAllowedLength?: number;
  /** How many recent tokens DRY looks at (default 64; -1 = the whole context; 0 = off). */
  dryPenaltyLastN?: number;
  /** Text that ends a repetition for DRY (default ["\n", ":", "\"", "*"]); [] = none. */
  drySequenceBreakers?: string[];
  /** Mirostat: 0 = off (default), 1 = Mirostat, 2 = Mirostat 2.0. It replaces the penalties and top-k/top-p/min-p/... samplers. */
  mirostat?: 0 | 1 | 2;
  /** Mirostat's target entropy (tau, default 5). */
  mirostatTau?: number;
  /** Mirostat's learning rate (eta, default 0.1). */
  mirostatEta?: number;
  /**
   * Added to tokens' logits before sampling: `{ 15043: 2.5 }` by token id, or `[[15043, 2.5], [" Hello", -1]]`
   * where text means each of its tokens; a bias of `false` (or -Infinity) bans the token. OpenAI's logit_bias.
   */
  logitBias?: LogitBias;
}

/** Token id (or text, meaning its tokens) to the bias added to its logit; false = never sample it. */
export type LogitBias = Readonly<Record<number | string, number | false>> | ReadonlyArray<readonly [token: number | string, bias: number | false]>;

export interface GenerationOptions extends SamplingOptions {
  /** Most tokens to generate (default 256). */
  maxTokens?: number;
  /** Generation stops when the output ends with one of these; the stop string is left out of the result. */
  stop?: string[];
  /** Constrain the output with a GBNF grammar. */
  grammar?: string;
  /** Constrain the output to JSON matching this JSON schema (converted to a grammar by llama.cpp). */
  jsonSchema?: object;
  /** Keep generating past end-of-generation tokens until maxTokens (benchmarks; llama-server's ignore_eos). */
  ignoreEos?: boolean;
  /**
   * When the context fills while generating: drop half of the tokens after the first `keepTokens` from the KV cache
   * and shift the rest down (llama-server's context shift), then go on, instead of stopping with stopReason
   * "contextFull". Default false; chats default to true and keep their system prompt. Models whose memory cannot
   * shift (recurrent ones) stop with "contextFull" as before.
   */
  contextShift?: boolean;
  /** Tokens at the start of the prompt a context shift never drops (default 0; a leading BOS is always kept). */
  keepTokens?: number;
  /**
   * Chunks of at least this many cached tokens that the prompt continues with after the part it shares with the
   * cache are shifted into place instead of evaluated again (llama-server's cache_reuse). Default 0 = off; chats
   * use 16, so that a conversation whose oldest turns were dropped still reuses the rest of its cache.
   */
  cacheReuse?: number;
  /**
   * Stops generation between tokens and interrupts prompt evaluation. An aborted request does not reject: it
   * resolves with the text generated so far and stopReason "abort" (also when it was still waiting its turn).
   */
  signal?: AbortSignal;
  /** Each piece of text as it is generated (whole UTF-8 characters only). */
  onTextChunk?: (text: string) => void;
  /**
   * @internal The tool-call grammar a chat template gives (ChatSession and the server set it): lazy or eager, its
   * triggers, and the tokens that must come out as text.
   */
  chatGrammar?: ChatGrammar;
}

export const GENERATION_DEFAULTS = {
  maxTokens: 256,
  temperature: 0.8,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  repeatPenalty: 1.0,
  repeatLastN: 64,
  frequencyPenalty: 0,
  presencePenalty: 0,
  typicalP: 1,
  topNSigma: -1,
  xtcProbability: 0,
  xtcThreshold: 0.1,
  dryMultiplier: 0,
  dryBase: 1.75,
  dryAllowedLength: 2,
  dryPenaltyLastN: 64,
  drySequenceBreakers: ["\n", ":", "\"", "*"] as readonly string[],
  mirostat: 0,
  mirostatTau: 5,
  mirostatEta: 0.1,
} as const;

export const DEFAULT_CONTEXT_SIZE = 4096;
/** ggml.h: GGML_MAX_N_THREADS. */
export const MAX_THREADS = 512;
export const DEFAULT_BATCH_SIZE = 512;
/** llama.cpp's LLAMA_MAX_SEQ. */
export const MAX_PARALLEL = 256;
/** The least room in the KV cache each of a context's parallel sequences must have: contextSize >= parallel * 64. */
export const MIN_TOKENS_PER_SEQUENCE = 64;

export function invalid(message: string, hint?: string): LlamaOciError {
  return new LlamaOciError("INVALID_ARGUMENT", message, { hint });
}

function checkNumber(name: string, value: number | undefined, min: number, options: { integer?: boolean; max?: number; finite?: boolean } = {}): void {
  if (value === undefined) return;
  const ok = typeof value === "number" && !Number.isNaN(value) && value >= min && value <= (options.max ?? Infinity) && (!options.finite || Number.isFinite(value));
  if (!ok || (options.integer && !Number.isInteger(value) && value !== Infinity)) {
    const kind = options.integer ? "an integer" : options.finite ? "a finite number" : "a number";
    const range = `${min === -Infinity ? "" : ` >= ${min}`}${options.max === undefined ? "" : ` and <= ${options.max}`}`;
    throw invalid(`${name} must be ${kind}${range} (got ${String(value)})`);
  }
}

export function toNativeModelOptions(options: LoadModelOptions, hasGpu: boolean): NativeModelOptions {
  const gpuLayers = options.gpuLayers ?? (hasGpu ? "max" : 0);
  if (gpuLayers !== "max") checkNumber("gpuLayers", gpuLayers, 0, { integer: true });
  return {
    gpuLayers: gpuLayers === "max" ? -1 : gpuLayers,
    useMmap: options.useMmap ?? true,
    useMlock: options.useMlock ?? false,
    vocabOnly: false,
    ...(options.rpcServers !== undefined && options.rpcServers.length > 0 ? { rpcServers: [...options.rpcServers] } : {}),
  };
}

/** Context options with every default filled in; `trainContextLength` caps the default size. */
export function resolveContextOptions(options: ContextOptions, trainContextLength: number): Required<ContextOptions> {
  checkNumber("contextSize", options.contextSize, 1, { integer: true });
  checkNumber("batchSize", options.batchSize, 1, { integer: true });
  checkNumber("ubatchSize", options.ubatchSize, 1, { integer: true });
  // ggml's CPU backend has room for GGML_MAX_N_THREADS (512) threads.
  checkNumber("threads", options.threads, 1, { integer: true, max: MAX_THREADS });
  checkNumber("threadsBatch", options.threadsBatch, 1, { integer: true, max: MAX_THREADS });
  checkNumber("parallel", options.parallel, 1, { integer: true, max: MAX_PARALLEL });
  const contextSize = options.contextSize ?? (trainContextLength > 0 ? Math.min(trainContextLength, DEFAULT_CONTEXT_SIZE) : DEFAULT_CONTEXT_SIZE);
  const batchSize = Math.min(options.batchSize ?? DEFAULT_BATCH_SIZE, contextSize);
  const threads = options.threads ?? defaultThreads();
  const parallel = options.parallel ?? 1;
  if (parallel > 1) checkParallel(parallel, contextSize, batchSize, options.contextSize !== undefined);
  return {
    contextSize,
    batchSize,
    ubatchSize: Math.min(options.ubatchSize ?? DEFAULT_BATCH_SIZE, batchSize),
    threads,
    threadsBatch: options.threadsBatch ?? threads,
    flashAttention: options.flashAttention ?? "auto",
    parallel,
    kvUnified: options.kvUnified ?? true,
  };
}

/**
 * The sequences of a parallel context share its cells: each must have room for a prompt and an answer when all are
 * busy (at least MIN_TOKENS_PER_SEQUENCE), and every step decodes a token of each, so the batch holds them all.
 */
function checkParallel(parallel: number, contextSize: number, batchSize: number, sizeGiven: boolean): void {
  const needed = parallel * MIN_TOKENS_PER_SEQUENCE;
  if (contextSize < needed) {
    throw invalid(
      `a context of ${contextSize} tokens is too small for ${parallel} parallel sequences: the sequences share the context, ` +
        `which must hold at least ${MIN_TOKENS_PER_SEQUENCE} tokens per sequence (contextSize >= parallel * ${MIN_TOKENS_PER_SEQUENCE} = ${needed})`,
      sizeGiven ? `use contextSize >= ${needed} or fewer sequences` : `pass contextSize >= ${needed} (the default is the model's training context, at most ${DEFAULT_CONTEXT_SIZE})`,
    );
  }
  if (batchSize < parallel) {
    throw invalid(`batchSize (${batchSize}) must be at least parallel (${parallel}): each step decodes one token of every sequence`);
  }
}

export function toNativeContextOptions(
  options: Required<ContextOptions>,
  purpose: { embeddings: boolean; pooling?: NativeContextOptions["pooling"] } = { embeddings: false },
): NativeContextOptions {
  const fa = options.flashAttention;
  return {
    contextSize: options.contextSize,
    batchSize: options.batchSize,
    ubatchSize: options.ubatchSize,
    threads: options.threads,
    threadsBatch: options.threadsBatch,
    flashAttention: fa === true ? "on" : fa === false ? "off" : fa,
    parallel: options.parallel,
    kvUnified: options.kvUnified,
    embeddings: purpose.embeddings,
    pooling: purpose.pooling ?? "unspecified",
  };
}

/**
 * Checks logitBias and lists it as [token or text, bias] pairs (bias -Infinity for false), in the order given; the
 * caller tokenizes the text entries (resolveLogitBias).
 */
export function checkLogitBias(bias: LogitBias | undefined, vocabSize: number): Array<[number | string, number]> {
  if (bias === undefined || bias === null) return [];
  if (typeof bias !== "object") throw invalid("logitBias must be an object of token id to bias, or an array of [token, bias] pairs");
  const entries: ReadonlyArray<readonly [unknown, unknown]> = Array.isArray(bias)
    ? (bias as ReadonlyArray<readonly [unknown, unknown]>)
    : Object.entries(bias).map(([key, value]) => [/^\d+$/.test(key) ? Number(key) : key, value] as const);
  return entries.map((entry, i) => {
    if (!Array.isArray(entry) || entry.length !== 2) throw invalid(`logitBias[${i}] must be a [token, bias] pair`);
    const [token, value] = entry as [unknown, unknown];
    // Named only for an entry that is wrong: a request may bias thousands of tokens (benchmarks ban every partial
    // character).
    const name = () => (typeof token === "string" ? `logitBias[${JSON.stringify(token.slice(0, 40))}]` : `logitBias[${String(token)}]`);
    if (typeof token === "number") {
      if (!Number.isInteger(token) || token < 0 || token >= vocabSize) throw invalid(`${name()}: ${String(token)} is not a token of this model (0 to ${vocabSize - 1})`);
    } else if (typeof token !== "string" || token === "") {
      throw invalid(`logitBias[${i}]: the token must be a token id or a non-empty text`);
    }
    if (value === false || value === -Infinity) return [token, -Infinity];
    if (typeof value !== "number" || !Number.isFinite(value)) throw invalid(`${name()} must be a finite number or false (got ${String(value)})`);
    return [token, value];
  });
}

function checkSequenceBreakers(breakers: readonly string[] | undefined): void {
  if (breakers === undefined) return;
  if (!Array.isArray(breakers) || breakers.some((b) => typeof b !== "string" || b === "")) {
    throw invalid("drySequenceBreakers must be an array of non-empty strings");
  }
}

export function toNativeSampling(options: GenerationOptions, grammar: string | null, logitBias: Array<[number, number]> = []): NativeSamplingOptions {
  checkNumber("temperature", options.temperature, 0);
  checkNumber("topK", options.topK, 0, { integer: true });
  checkNumber("topP", options.topP, 0, { max: 1 });
  checkNumber("minP", options.minP, 0, { max: 1 });
  checkNumber("repeatPenalty", options.repeatPenalty, 0);
  checkNumber("repeatLastN", options.repeatLastN, -1, { integer: true });
  checkNumber("frequencyPenalty", options.frequencyPenalty, -Infinity);
  checkNumber("presencePenalty", options.presencePenalty, -Infinity);
  checkNumber("seed", options.seed, 0, { integer: true, max: 0xfffffffe });
  checkNumber("typicalP", options.typicalP, 0, { max: 1 });
  checkNumber("topNSigma", options.topNSigma, -Infinity, { finite: true });
  checkNumber("xtcProbability", options.xtcProbability, 0, { max: 1 });
  checkNumber("xtcThreshold", options.xtcThreshold, 0, { max: 1 });
  checkNumber("dryMultiplier", options.dryMultiplier, 0, { finite: true });
  checkNumber("dryBase", options.dryBase, 1, { finite: true });
  checkNumber("dryAllowedLength", options.dryAllowedLength, 0, { integer: true, finite: true });
  checkNumber("dryPenaltyLastN", options.dryPenaltyLastN, -1, { integer: true });
  checkSequenceBreakers(options.drySequenceBreakers);
  if (options.mirostat !== undefined && options.mirostat !== 0 && options.mirostat !== 1 && options.mirostat !== 2) {
    throw invalid(`mirostat must be 0 (off), 1 (Mirostat) or 2 (Mirostat 2.0) (got ${String(options.mirostat)})`);
  }
  checkNumber("mirostatTau", options.mirostatTau, 0, { finite: true });
  checkNumber("mirostatEta", options.mirostatEta, 0, { finite: true });
  const d = GENERATION_DEFAULTS;
  return {
    temperature: options.temperature ?? d.temperature,
    topK: options.topK ?? d.topK,
    topP: options.topP ?? d.topP,
    minP: options.minP ?? d.minP,
    repeatPenalty: options.repeatPenalty ?? d.repeatPenalty,
    repeatLastN: options.repeatLastN ?? d.repeatLastN,
    frequencyPenalty: options.frequencyPenalty ?? d.frequencyPenalty,
    presencePenalty: options.presencePenalty ?? d.presencePenalty,
    // 0xFFFFFFFF is llama.cpp's "pick a random seed"; choosing here keeps the seed in JS's hands.
    seed: options.seed ?? Math.floor(Math.random() * 0xffffffff),
    typicalP: options.typicalP ?? d.typicalP,
    topNSigma: options.topNSigma ?? d.topNSigma,
    xtcProbability: options.xtcProbability ?? d.xtcProbability,
    xtcThreshold: options.xtcThreshold ?? d.xtcThreshold,
    dryMultiplier: options.dryMultiplier ?? d.dryMultiplier,
    dryBase: options.dryBase ?? d.dryBase,
    dryAllowedLength: options.dryAllowedLength ?? d.dryAllowedLength,
    dryPenaltyLastN: options.dryPenaltyLastN === Infinity ? -1 : (options.dryPenaltyLastN ?? d.dryPenaltyLastN),
    drySequenceBreakers: [...(options.drySequenceBreakers ?? d.drySequenceBreakers)],
    mirostat: options.mirostat ?? d.mirostat,
    mirostatTau: options.mirostatTau ?? d.mirostatTau,
    mirostatEta: options.mirostatEta ?? d.mirostatEta,
    logitBias,
    grammar: options.chatGrammar ? options.chatGrammar.grammar : grammar,
    grammarRoot: "root",
    ...(options.chatGrammar
      ? {
          grammarLazy: options.chatGrammar.lazy,
          grammarTriggers: options.chatGrammar.triggers,
          grammarPrefill: options.chatGrammar.prefill,
          thinkingStart: options.chatGrammar.thinkingStart,
          thinkingEnd: options.chatGrammar.thinkingEnd,
          preservedTokens: options.chatGrammar.preservedTokens,
        }
      : {}),
  };
}

/** maxTokens with its default; Infinity means "until the context is full". */
export function resolveMaxTokens(options: GenerationOptions, contextSize: number): number {
  checkNumber("maxTokens", options.maxTokens, 0, { integer: true });
  const maxTokens = options.maxTokens ?? GENERATION_DEFAULTS.maxTokens;
  return maxTokens === Infinity ? contextSize : maxTokens;
}

let physicalCores: number | undefined;

/**
 * Threads that help generation: one per physical core (hyper-threads slow llama.cpp down), bounded by the CPUs
 * this process may use. Falls back to availableParallelism() where cores cannot be told apart.
 */
export function defaultThreads(): number {
  physicalCores ??= countPhysicalCores();
  const available = availableParallelism();
  return Math.max(1, physicalCores > 0 ? Math.min(physicalCores, available) : available);
}

function countPhysicalCores(): number {
  if (process.platform !== "linux") return 0;
  try {
    const cores = new Set<string>();
    for (const block of readFileSync("/proc/cpuinfo", "utf8").split(/\n\s*\n/)) {
      if (!/^processor\s*:/m.test(block)) continue;
      const physical = /^physical id\s*:\s*(\d+)/m.exec(block)?.[1];
      const core = /^core id\s*:\s*(\d+)/m.exec(block)?.[1];
      if (physical === undefined || core === undefined) return 0;
      cores.add(`${physical}:${core}`);
    }
    return cores.size;
  } catch {
    return 0;
  }
}
