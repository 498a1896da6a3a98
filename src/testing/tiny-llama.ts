/**
 * Generates tiny but complete llama-architecture GGUF models: random weights from a seeded PRNG, every tensor and
 * hyperparameter llama.cpp's LLM_ARCH_LLAMA loader requires, and the tokenizer of a real vocab-only GGUF. Used by
 * the tests, `npm run demo`, bench/inference and scripts/pack-test.mjs, which run from dist/, so it lives in src/
 * (not exported from the package entry point).
 */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { LlamaOciError } from "../errors.js";
import { readGgufHeader } from "../gguf/reader.js";
import { GgmlType, GgufValueType } from "../gguf/types.js";
import { GgufWriter } from "../gguf/writer.js";
import { moduleDir } from "../llama/module-dir.js";

/** llama.cpp's source (LLAMA_CPP_DIR, else deps/llama.cpp of this checkout), whose models/ holds vocab-only GGUFs. */
export const LLAMA_CPP_SOURCE_DIR = process.env.LLAMA_CPP_DIR ?? findCheckoutLlamaCpp(moduleDir);
/** A vocab-only GGUF from llama.cpp's models/ directory (SentencePiece, 32000 tokens). */
export const DEFAULT_TINY_VOCAB = join(LLAMA_CPP_SOURCE_DIR, "models", "ggml-vocab-llama-spm.gguf");

/** The nearest deps/llama.cpp above `start` (src/llama, dist/esm/llama or dist/cjs/llama all sit under the root). */
function findCheckoutLlamaCpp(start: string): string {
  for (let dir = start; ; dir = dirname(dir)) {
    const candidate = join(dir, "deps", "llama.cpp");
    if (existsSync(join(candidate, "models"))) return candidate;
    if (dirname(dir) === dir) return join(start, "..", "..", "deps", "llama.cpp");
  }
}

export interface TinyModelOptions {
  /** Seeds the weights: the same seed and options give a byte-identical file. Default 1. */
  seed?: number;
  /** Path of the GGUF whose `tokenizer.*` keys are copied. Default DEFAULT_TINY_VOCAB. */
  vocabFrom?: string;
  nLayer?: number;
  nEmbd?: number;
  nHead?: number;
  nHeadKv?: number;
  nFf?: number;
  contextLength?: number;
  /** Stored as tokenizer.chat_template, replacing the vocab file's template if it has one. */
  chatTemplate?: string;
  /** Type of the 2-D weights; the 1-D norm weights stay F32 as llama.cpp's converter keeps them. Default "f32". */
  tensorType?: "f32" | "f16";
  /** Leave out output.weight so llama.cpp reuses token_embd.weight for the output projection. Default false. */
  tieEmbeddings?: boolean;
  /** general.name. Default "tiny-llama". */
  name?: string;
}

export interface TinyModelTensor {
  name: string;
  /** ggml order (ne[]): shape[0] is the contiguous dimension. */
  shape: number[];
  type: GgmlType;
}

export interface TinyModel {
  path: string;
  vocabSize: number;
  tensors: TinyModelTensor[];
}

const RMS_EPS = 1e-5;
const ROPE_FREQ_BASE = 10000;
/** Weights are uniform in ±WEIGHT_RANGE: small enough to keep activations tame, large enough for distinct logits. */
const WEIGHT_RANGE = 0.08;

export async function makeTinyLlama(path: string, options: TinyModelOptions = {}): Promise<TinyModel> {
  const seed = options.seed ?? 1;
  const nLayer = positive("nLayer", options.nLayer ?? 2);
  const nEmbd = positive("nEmbd", options.nEmbd ?? 64);
  const nHead = positive("nHead", options.nHead ?? 4);
  const nHeadKv = positive("nHeadKv", options.nHeadKv ?? 2);
  const nFf = positive("nFf", options.nFf ?? 128);
  const contextLength = positive("contextLength", options.contextLength ?? 256);
  if (nEmbd % nHead !== 0 || (nEmbd / nHead) % 2 !== 0) throw invalid(`nEmbd ${nEmbd} must split into ${nHead} heads of even size`);
  if (nHead % nHeadKv !== 0) throw invalid(`nHead ${nHead} must be a multiple of nHeadKv ${nHeadKv}`);
  const headDim = nEmbd / nHead;
  const weightType = options.tensorType === "f16" ? GgmlType.F16 : GgmlType.F32;

  const vocab = await readGgufHeader(options.vocabFrom ?? DEFAULT_TINY_VOCAB);
  const tokens = vocab.metadata.get("tokenizer.ggml.tokens");
  if (tokens?.type !== GgufValueType.ARRAY || tokens.value.itemType !== GgufValueType.STRING) {
    throw invalid(`${options.vocabFrom ?? DEFAULT_TINY_VOCAB} has no tokenizer.ggml.tokens string array`);
  }
  const vocabSize = tokens.value.length;

  const writer = new GgufWriter();
  const arch = "llama";
  writer
    .addMetadata("general.architecture", GgufValueType.STRING, arch)
    .addMetadata("general.name", GgufValueType.STRING, options.name ?? "tiny-llama")
    .addMetadata("general.file_type", GgufValueType.UINT32, weightType === GgmlType.F16 ? 1 : 0)
    .addMetadata(`${arch}.vocab_size`, GgufValueType.UINT32, vocabSize)
    .addMetadata(`${arch}.context_length`, GgufValueType.UINT32, contextLength)
    .addMetadata(`${arch}.embedding_length`, GgufValueType.UINT32, nEmbd)
    .addMetadata(`${arch}.block_count`, GgufValueType.UINT32, nLayer)
    .addMetadata(`${arch}.feed_forward_length`, GgufValueType.UINT32, nFf)
    .addMetadata(`${arch}.attention.head_count`, GgufValueType.UINT32, nHead)
    .addMetadata(`${arch}.attention.head_count_kv`, GgufValueType.UINT32, nHeadKv)
    .addMetadata(`${arch}.attention.layer_norm_rms_epsilon`, GgufValueType.FLOAT32, RMS_EPS)
    .addMetadata(`${arch}.rope.dimension_count`, GgufValueType.UINT32, headDim)
    .addMetadata(`${arch}.rope.freq_base`, GgufValueType.FLOAT32, ROPE_FREQ_BASE);
  for (const [key, entry] of vocab.metadata) {
    if (!key.startsWith("tokenizer.")) continue;
    if (key === "tokenizer.chat_template" && options.chatTemplate !== undefined) continue;
    writer.addMetadata(key, entry.type, entry.value);
  }
  if (options.chatTemplate !== undefined) writer.addMetadata("tokenizer.chat_template", GgufValueType.STRING, options.chatTemplate);

  const tensors: TinyModelTensor[] = [];
  const add = (name: string, shape: number[], norm = false): void => {
    const type = norm ? GgmlType.F32 : weightType;
    const values = randomWeights(seed, name, shape.reduce((a, b) => a * b, 1), norm ? 1 : 0);
    writer.addTensor(name, shape, type, type === GgmlType.F16 ? toFloat16(values) : values);
    tensors.push({ name, shape, type });
  };
  add("token_embd.weight", [nEmbd, vocabSize]);
  add("output_norm.weight", [nEmbd], true);
  if (!options.tieEmbeddings) add("output.weight", [nEmbd, vocabSize]);
  for (let i = 0; i < nLayer; i++) {
    add(`blk.${i}.attn_norm.weight`, [nEmbd], true);
    add(`blk.${i}.attn_q.weight`, [nEmbd, nHead * headDim]);
    add(`blk.${i}.attn_k.weight`, [nEmbd, nHeadKv * headDim]);
    add(`blk.${i}.attn_v.weight`, [nEmbd, nHeadKv * headDim]);
    add(`blk.${i}.attn_output.weight`, [nHead * headDim, nEmbd]);
    add(`blk.${i}.ffn_norm.weight`, [nEmbd], true);
    add(`blk.${i}.ffn_gate.weight`, [nEmbd, nFf]);
    add(`blk.${i}.ffn_down.weight`, [nFf, nEmbd]);
    add(`blk.${i}.ffn_up.weight`, [nEmbd, nFf]);
  }

  await writer.write(path);
  return { path, vocabSize, tensors };
}

/** center ± WEIGHT_RANGE, from a mulberry32 stream seeded by the model seed and the tensor name. */
export function randomWeights(seed: number, name: string, count: number, center = 0): Float32Array {
  let state = (hashName(name) ^ Math.imul(seed | 0, 0x9e3779b1)) >>> 0;
  const values = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    const unit = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    values[i] = center + (unit * 2 - 1) * WEIGHT_RANGE;
  }
  return values;
}

function hashName(name: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) hash = Math.imul(hash ^ name.charCodeAt(i), 0x01000193);
  return hash >>> 0;
}

const f32 = new Float32Array(1);
const f32Bits = new Uint32Array(f32.buffer);

/** IEEE half-precision bits of each value, rounded to nearest even. */
export function toFloat16(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = halfBits(values[i]!);
  return out;
}

function halfBits(value: number): number {
  f32[0] = value;
  const bits = f32Bits[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa !== 0 ? 0x200 : 0);
  const e = exponent - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const full = mantissa | 0x800000;
    const shift = 14 - e;
    return sign | roundShift(full, shift);
  }
  // A carry out of the mantissa correctly bumps the exponent (and overflows to infinity at the top).
  return sign | (((e << 10) | (mantissa >>> 13)) + roundUp(mantissa, 13, mantissa >>> 13));
}

function roundShift(value: number, shift: number): number {
  const kept = value >>> shift;
  return kept + roundUp(value, shift, kept);
}

/** 1 when the bits shifted out round the kept part up (to nearest, ties to even). */
function roundUp(value: number, shift: number, kept: number): number {
  const rest = value & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return rest > half || (rest === half && (kept & 1) === 1) ? 1 : 0;
}

function positive(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0) throw invalid(`${name} must be a positive integer, got ${value}`);
  return value;
}

function invalid(message: string): LlamaOciError {
  return new LlamaOciError("INVALID_ARGUMENT", message);
}
