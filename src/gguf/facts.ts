/**
 * What a user wants to know about a GGUF model, from its header(s): architecture, size, quantization and the
 * hyperparameters llama.cpp prints when it loads the model. A sharded model passes every shard's header; the
 * metadata comes from the first, counts are totals.
 */
import { ggmlTypeName, GgmlType, GgufValueType, ggufValueTypeName, type GgufArray, type GgufEntry, type GgufHeader, type GgufScalar } from "./types.js";

/** llama.cpp's llama_ftype (include/llama.h), as the short names llama-quantize takes. Gaps were removed. */
const FILE_TYPE_NAMES: Record<number, string> = {
  0: "F32",
  1: "F16",
  2: "Q4_0",
  3: "Q4_1",
  4: "Q4_1_SOME_F16",
  7: "Q8_0",
  8: "Q5_0",
  9: "Q5_1",
  10: "Q2_K",
  11: "Q3_K_S",
  12: "Q3_K_M",
  13: "Q3_K_L",
  14: "Q4_K_S",
  15: "Q4_K_M",
  16: "Q5_K_S",
  17: "Q5_K_M",
  18: "Q6_K",
  19: "IQ2_XXS",
  20: "IQ2_XS",
  21: "Q2_K_S",
  22: "IQ3_XS",
  23: "IQ3_XXS",
  24: "IQ1_S",
  25: "IQ4_NL",
  26: "IQ3_S",
  27: "IQ3_M",
  28: "IQ2_S",
  29: "IQ2_M",
  30: "IQ4_XS",
  31: "IQ1_M",
  32: "BF16",
  33: "Q4_0_4_4",
  34: "Q4_0_4_8",
  35: "Q4_0_8_8",
  36: "TQ1_0",
  37: "TQ2_0",
  38: "MXFP4_MOE",
  39: "NVFP4",
  40: "Q1_0",
  41: "Q2_0",
};

/** The file type llama.cpp guesses from the most common tensor type when general.file_type is missing. */
const GUESSED_FROM_TENSOR_TYPE: Partial<Record<number, string>> = {
  [GgmlType.Q3_K]: "Q3_K_M",
  [GgmlType.Q4_K]: "Q4_K_M",
  [GgmlType.Q5_K]: "Q5_K_M",
};

export function fileTypeName(fileType: number): string {
  return FILE_TYPE_NAMES[fileType] ?? `unknown (${fileType})`;
}

/** A metadata value in JSON: 64-bit integers beyond 2^53 as strings, long arrays as their type and length. */
export type GgufJsonValue = string | number | boolean | GgufJsonValue[] | { itemType: string; length: number };

export interface GgufFacts {
  architecture?: string;
  /** general.name */
  name?: string;
  /** Total over all shards: general.parameter_count when the file has it, else the elements of every tensor. */
  parameterCount: number;
  /** general.file_type (llama_ftype), when present. */
  fileType?: number;
  /** "Q4_K_M", "F16", ...: from general.file_type, else guessed from the dominant tensor type as llama.cpp does. */
  quantization?: string;
  quantizationGuessed: boolean;
  /** The ggml type holding the most parameters, e.g. "Q4_K". */
  dominantTensorType?: string;
  /** <arch>.context_length: the context the model was trained for. */
  contextLength?: number;
  embeddingLength?: number;
  /** <arch>.block_count: the number of layers. */
  blockCount?: number;
  headCount?: number;
  headCountKv?: number;
  vocabularySize?: number;
  /** tokenizer.chat_template, in full. */
  chatTemplate?: string;
  /** Tensors in all shards together. */
  tensorCount: number;
  /** GGUF format version of the first file. */
  version: number;
  shards: number;
  /** Bytes of the first file's header (up to where the tensor data starts). */
  headerBytes: number;
  /** Every key-value pair of the first file. */
  metadata: Record<string, GgufJsonValue>;
}

/** Arrays up to this long are shown whole; longer ones (vocabularies) as type and length. */
export const SHOWN_ARRAY_ITEMS = 64;

export function ggufFacts(headers: readonly GgufHeader[]): GgufFacts {
  const first = headers[0];
  if (first === undefined) throw new Error("ggufFacts needs at least one header");
  const meta = first.metadata;
  const architecture = stringOf(meta.get("general.architecture"));
  const archKey = (key: string) => (architecture === undefined ? undefined : numberOf(meta.get(`${architecture}.${key}`)));

  const elementsByType = new Map<number, number>();
  let elements = 0;
  let tensorCount = 0;
  for (const header of headers) {
    tensorCount += header.tensors.length;
    for (const tensor of header.tensors) {
      const n = tensor.shape.reduce((product, dim) => product * dim, 1);
      elements += n;
      elementsByType.set(tensor.type, (elementsByType.get(tensor.type) ?? 0) + n);
    }
  }
  const dominant = [...elementsByType].sort((a, b) => b[1] - a[1])[0]?.[0];
  const fileType = numberOf(meta.get("general.file_type"));
  const guessed = dominant === undefined ? undefined : (GUESSED_FROM_TENSOR_TYPE[dominant] ?? ggmlTypeName(dominant));
  const tokens = meta.get("tokenizer.ggml.tokens");

  const facts: GgufFacts = {
    parameterCount: numberOf(meta.get("general.parameter_count")) ?? elements,
    quantizationGuessed: fileType === undefined && guessed !== undefined,
    tensorCount,
    version: first.version,
    shards: headers.length,
    headerBytes: first.dataOffset,
    metadata: metadataJson(meta),
  };
  assignDefined(facts, {
    architecture,
    name: stringOf(meta.get("general.name")),
    fileType,
    quantization: fileType !== undefined ? fileTypeName(fileType) : guessed,
    dominantTensorType: dominant === undefined ? undefined : ggmlTypeName(dominant),
    contextLength: archKey("context_length"),
    embeddingLength: archKey("embedding_length"),
    blockCount: archKey("block_count"),
    headCount: archKey("attention.head_count"),
    headCountKv: archKey("attention.head_count_kv"),
    vocabularySize: tokens?.type === GgufValueType.ARRAY ? tokens.value.length : archKey("vocab_size"),
    chatTemplate: stringOf(meta.get("tokenizer.chat_template")),
  });
  return facts;
}

function assignDefined<T extends object>(target: T, values: Partial<T>): void {
  for (const [key, value] of Object.entries(values)) {
    if (value !== undefined) (target as Record<string, unknown>)[key] = value;
  }
}

function stringOf(entry: GgufEntry | undefined): string | undefined {
  return entry?.type === GgufValueType.STRING ? (entry.value as string) : undefined;
}

/** An integer or float value as a number; an array (per-layer values in some architectures) by its first item. */
function numberOf(entry: GgufEntry | undefined): number | undefined {
  if (entry === undefined) return undefined;
  const value = entry.type === GgufValueType.ARRAY ? entry.value.items[0] : entry.value;
  if (typeof value === "number") return value;
  if (typeof value === "bigint") return Number(value);
  return undefined;
}

function metadataJson(metadata: Map<string, GgufEntry>): Record<string, GgufJsonValue> {
  const out: Record<string, GgufJsonValue> = {};
  for (const [key, entry] of metadata) {
    out[key] = entry.type === GgufValueType.ARRAY ? arrayJson(entry.value) : scalarJson(entry.value);
  }
  return out;
}

function arrayJson(array: GgufArray): GgufJsonValue {
  if (array.length > SHOWN_ARRAY_ITEMS || array.items.length < array.length) {
    return { itemType: ggufValueTypeName(array.itemType), length: array.length };
  }
  return array.items.map((item) => (typeof item === "object" ? arrayJson(item) : scalarJson(item)));
}

function scalarJson(value: GgufScalar): GgufJsonValue {
  return typeof value === "bigint" ? value.toString() : value;
}
