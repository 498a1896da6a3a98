/**
 * The model config blob, both ways: written for a packaged model from the facts in its GGUF headers (Docker's
 * v0.1 config with the `gguf` string map, human-readable parameters and size as gpustack's gguf-parser prints
 * them, or a CNCF ModelPack config), and read back into the summary users look at.
 */
import { ggufFacts } from "../../gguf/facts.js";
import { readGgufHeader, type GgufFileHeader } from "../../gguf/reader.js";
import { isObject } from "../../util/objects.js";
import { GgufValueType, type GgufArray, type GgufEntry, type GgufScalar } from "../../gguf/types.js";

/** Docker drops arrays longer than this from the config's `gguf` map (the vocabulary, merges, token types). */
export const MAX_CONFIG_ARRAY_ITEMS = 50;
/** Cap on a config blob, read or pulled: real ones are a few KiB, with the GGUF metadata copied in. */
export const MAX_CONFIG_BYTES = 4 * 1024 * 1024;

export interface ModelFacts {
  architecture: string;
  /** general.parameter_count, else the elements of all tensors of all shards. */
  parameters: number;
  /** "Q4_0", "Q4_K_M", "F16", ... from general.file_type, else guessed from the tensor types; "Unknown" otherwise. */
  quantization: string;
  /** Bytes of tensor data of all shards (the file sizes when a tensor type is unknown). */
  weightBytes: number;
  /** <architecture>.context_length, when the header has it. */
  contextLength?: number;
  /** Every header key of the first shard as a string; arrays longer than MAX_CONFIG_ARRAY_ITEMS left out. */
  metadata: Record<string, string>;
}

/** Reads the headers of a model's GGUF files (all shards, in order) and sums what spans them. */
export async function readModelFacts(shardPaths: readonly string[]): Promise<ModelFacts> {
  const headers: GgufFileHeader[] = [];
  // One item past the limit is enough to tell a long array from a short one; the reader keeps the full length.
  for (const path of shardPaths) headers.push(await readGgufHeader(path, { maxArrayLength: MAX_CONFIG_ARRAY_ITEMS + 1 }));
  return modelFacts(headers);
}

export function modelFacts(headers: readonly GgufFileHeader[]): ModelFacts {
  const first = headers[0];
  if (!first) throw new RangeError("modelFacts needs at least one header");
  const facts = ggufFacts(headers);
  let weightBytes = 0;
  for (const header of headers) {
    const sizes = header.tensors.map((tensor) => tensor.size);
    weightBytes += sizes.every((size) => size !== undefined) ? sizes.reduce((sum: number, size) => sum + size, 0) : header.fileSize;
  }
  const result: ModelFacts = {
    architecture: facts.architecture ?? "unknown",
    parameters: facts.parameterCount,
    quantization: facts.quantization ?? "Unknown",
    weightBytes,
    metadata: metadataStrings(first.metadata),
  };
  if (facts.contextLength !== undefined && facts.contextLength > 0) result.contextLength = facts.contextLength;
  return result;
}

/** "134.52M", "8.03B": decimal units with two decimals, as Docker's model configs show parameter counts. */
export function formatParameterCount(count: number): string {
  const units: [number, string][] = [
    [1e12, "T"],
    [1e9, "B"],
    [1e6, "M"],
    [1e3, "K"],
  ];
  for (const [scale, unit] of units) if (count >= scale) return `${(count / scale).toFixed(2)}${unit}`;
  return String(count);
}

/** "85.77MiB": binary units with two decimals, as Docker's model configs show the weights' size. */
export function formatBinarySize(bytes: number): string {
  const units = ["KiB", "MiB", "GiB", "TiB", "PiB"];
  if (bytes < 1024) return `${bytes}B`;
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(2)}${units[unit] ?? ""}`;
}

function metadataStrings(metadata: Map<string, GgufEntry>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, entry] of metadata) {
    if (entry.type === GgufValueType.ARRAY) {
      if (entry.value.length > MAX_CONFIG_ARRAY_ITEMS) continue;
      out[key] = arrayString(entry.value);
    } else {
      out[key] = scalarString(entry.value);
    }
  }
  return out;
}

function arrayString(array: GgufArray): string {
  return `[${array.items.map((item) => (typeof item === "object" ? arrayString(item) : scalarString(item))).join(", ")}]`;
}

function scalarString(value: GgufScalar): string {
  return typeof value === "string" ? value : String(value);
}

export interface ConfigInputs {
  facts: ModelFacts;
  /** Digests of all layers, in manifest order (layers are uncompressed, so each digest is its diff ID). */
  diffIds: string[];
  created: Date;
  /** --context-size; default: the GGUF's own context length. */
  contextSize?: number;
  /** Whether a multimodal projector is packaged (ModelPack input types). */
  hasProjector: boolean;
}

/** application/vnd.docker.ai.model.config.v0.1+json */
export function dockerModelConfig(inputs: ConfigInputs): object {
  const { facts } = inputs;
  const config: Record<string, unknown> = {
    format: "gguf",
    quantization: facts.quantization,
    parameters: formatParameterCount(facts.parameters),
    architecture: facts.architecture,
    size: formatBinarySize(facts.weightBytes),
    gguf: facts.metadata,
  };
  const contextSize = inputs.contextSize ?? facts.contextLength;
  if (contextSize !== undefined) config.context_size = contextSize;
  return {
    config,
    descriptor: { created: inputs.created.toISOString() },
    rootfs: { type: "rootfs", diff_ids: inputs.diffIds },
  };
}

/** application/vnd.cncf.model.config.v1+json (ModelPack specs-go/v1/config.go: camelCase, no context size). */
export function modelPackConfig(inputs: ConfigInputs): object {
  const { facts } = inputs;
  return {
    descriptor: { createdAt: inputs.created.toISOString(), family: facts.architecture },
    modelfs: { type: "layers", diffIds: inputs.diffIds },
    config: {
      architecture: facts.architecture,
      format: "gguf",
      // Docker Model Runner writes ModelPack sizes in the spec's lowercase style ("8b").
      paramSize: formatParameterCount(facts.parameters).toLowerCase(),
      quantization: facts.quantization,
      capabilities: { inputTypes: inputs.hasProjector ? ["text", "image"] : ["text"], outputTypes: ["text"] },
    },
  };
}

/** The fields of a model config users look at, from Docker's `config` object or ModelPack's `descriptor`/`config`. */
export interface ConfigSummary {
  format?: string;
  architecture?: string;
  parameters?: string;
  quantization?: string;
  size?: string;
  contextSize?: number;
  name?: string;
  family?: string;
  created?: string;
  /** Docker configs: the GGUF metadata (as strings) the packager copied into the config. */
  gguf?: Record<string, string>;
}

/** Docker configs keep the facts in `config` (snake_case); ModelPack in `config` (camelCase) and `descriptor`. */
export function summarizeConfig(content: unknown): ConfigSummary {
  const root = objectOrUndefined(content);
  const inner = objectOrUndefined(root?.config);
  const descriptor = objectOrUndefined(root?.descriptor);
  const summary: ConfigSummary = {};
  const set = <K extends keyof ConfigSummary>(key: K, value: ConfigSummary[K] | undefined) => {
    if (value !== undefined) summary[key] = value;
  };
  set("format", text(inner?.format));
  set("architecture", text(inner?.architecture));
  set("parameters", text(inner?.parameters) ?? text(inner?.paramSize));
  set("quantization", text(inner?.quantization));
  set("size", text(inner?.size));
  const contextSize = inner?.context_size;
  if (typeof contextSize === "number" && Number.isFinite(contextSize)) summary.contextSize = contextSize;
  set("name", text(descriptor?.name));
  set("family", text(descriptor?.family));
  set("created", text(descriptor?.createdAt) ?? text(descriptor?.created));
  const gguf = objectOrUndefined(inner?.gguf);
  if (gguf) {
    summary.gguf = Object.fromEntries(Object.entries(gguf).map(([key, value]) => [key, typeof value === "string" ? value : JSON.stringify(value)]));
  }
  return summary;
}

function objectOrUndefined(value: unknown): Record<string, unknown> | undefined {
  return isObject(value) ? value : undefined;
}

function text(value: unknown): string | undefined {
  if (typeof value === "string" && value !== "") return value;
  if (typeof value === "number") return String(value);
  return undefined;
}
