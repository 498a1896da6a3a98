/**
 * Generation defaults an artifact ships: Ollama's params layer (JSON: stop strings, temperature, context size, ...)
 * read into llama-oci's option names. Unknown keys are ignored; a value of the wrong type is dropped, not guessed.
 */
import { isObject } from "../../util/objects.js";

export interface ModelDefaults {
  stop?: string[];
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repeatPenalty?: number;
  repeatLastN?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  seed?: number;
  typicalP?: number;
  mirostat?: 0 | 1 | 2;
  mirostatTau?: number;
  mirostatEta?: number;
  /** num_predict. */
  maxTokens?: number;
  /** num_ctx. */
  contextSize?: number;
}

const NUMBERS: ReadonlyArray<[string, keyof ModelDefaults, "int" | "float"]> = [
  ["temperature", "temperature", "float"],
  ["top_k", "topK", "int"],
  ["top_p", "topP", "float"],
  ["min_p", "minP", "float"],
  ["repeat_penalty", "repeatPenalty", "float"],
  ["repeat_last_n", "repeatLastN", "int"],
  ["presence_penalty", "presencePenalty", "float"],
  ["frequency_penalty", "frequencyPenalty", "float"],
  ["seed", "seed", "int"],
  ["typical_p", "typicalP", "float"],
  ["mirostat", "mirostat", "int"],
  ["mirostat_tau", "mirostatTau", "float"],
  ["mirostat_eta", "mirostatEta", "float"],
  ["num_predict", "maxTokens", "int"],
  ["num_ctx", "contextSize", "int"],
];

/** Ollama's params JSON as ModelDefaults; undefined when it is not a JSON object. */
export function parseOllamaParams(text: string): ModelDefaults | undefined {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isObject(json)) return undefined;
  const defaults: ModelDefaults = {};
  const stop = json.stop;
  const stops = typeof stop === "string" ? [stop] : Array.isArray(stop) ? stop.filter((s): s is string => typeof s === "string" && s !== "") : [];
  if (stops.length > 0) defaults.stop = stops;
  for (const [key, name, kind] of NUMBERS) {
    const value = json[key];
    if (typeof value !== "number" || !Number.isFinite(value)) continue;
    if (kind === "int" && !Number.isInteger(value)) continue;
    (defaults as Record<string, number>)[name] = value;
  }
  if (defaults.contextSize !== undefined && defaults.contextSize < 1) delete defaults.contextSize;
  if (defaults.maxTokens !== undefined && defaults.maxTokens < 0) delete defaults.maxTokens;
  if (defaults.mirostat !== undefined && ![0, 1, 2].includes(defaults.mirostat)) delete defaults.mirostat;
  return defaults;
}
