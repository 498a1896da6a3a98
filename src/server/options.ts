/** The options of serve() and createRequestHandler(), their defaults and checks, and Ollama-style durations. */
import { LlamaOciError } from "../errors.js";
import type { ExplicitCredentials } from "../oci/authn/index.js";
import type { ProgressEvent } from "../oci/progress.js";
import type { RetryPolicy } from "../oci/transport/index.js";
import type { FlashAttention } from "../llama/options.js";

export interface ServeOptions {
  /** Address to listen on (default "127.0.0.1": this machine only). */
  host?: string;
  /** Port (default 8080; 0 picks a free one, see LlamaServer.port). */
  port?: number;
  /**
   * Models to load at start, by reference (or the path of a local .gguf file, served under its file name); the
   * first is used by requests that name no model. They stay loaded: no keep-alive expiry, never evicted.
   */
  models?: string[];
  /** Sequences per model that generate at the same time (default 4). */
  parallel?: number;
  /** Requests per model that may wait for a sequence (default 64); more get 503 with Retry-After. */
  maxQueue?: number;
  /** Models loaded at once (default 2); loading another unloads the least recently used idle one. */
  maxModels?: number;
  /** How long a model stays loaded after its last request: milliseconds, or "5m", "30s", "1h"; negative = forever (default "5m"). */
  keepAlive?: number | string;
  /** "missing" (default): pull a model that is not cached on first use; "never": answer 404 instead. */
  pull?: "missing" | "never";
  /** Require `Authorization: Bearer <key>` on every route but /health (default: LLAMA_OCI_API_KEY, else none). */
  apiKey?: string;
  /** Origins allowed by CORS (default none: CORS off). "*" allows any. */
  cors?: string[];
  /** Largest request body in bytes (default 16 MiB); larger ones get 413. */
  bodyLimit?: number;
  /** A request's headers and body must arrive within this (default 30 000 ms): slow uploads are cut off. */
  requestTimeoutMs?: number;
  /** A request's headers must arrive within this (default 10 000 ms). */
  headersTimeoutMs?: number;

  /** Tokens each sequence holds (prompt and output); default min(the model's training context, 4096). */
  contextSize?: number;
  batchSize?: number;
  threads?: number;
  /** Layers to offload to the GPU ("max" = all; default "max" with a GPU backend, else 0). */
  gpuLayers?: "max" | number;
  /** llama.cpp RPC servers ("host:port") each model is split over, as loadModel's rpcServers. */
  rpcServers?: string[];
  flashAttention?: FlashAttention;
  /**
   * One KV cache that a model's sequences share (a long conversation may take what idle sequences leave) instead of
   * `contextSize` cells for each (default false, as llama-server: a step with many sequences is faster).
   */
  kvUnified?: boolean;
  useMmap?: boolean;

  /** As for pull(): where models are cached and how registries are reached. */
  cacheDir?: string;
  offline?: boolean;
  verify?: boolean;
  insecureRegistries?: string[];
  registryMirrors?: string[];
  credentials?: ExplicitCredentials;
  retry?: Partial<RetryPolicy>;
  stallTimeoutMs?: number;
  verbose?: boolean;
  env?: NodeJS.ProcessEnv;

  /** Server log lines (loads, unloads, pulls, failures); default none. Never holds the API key. */
  log?: (line: string) => void;
  /** Also log a line per request: method, path, status, milliseconds (default false). */
  accessLog?: boolean;
  /** Registry warnings and traces (default: the log). */
  onWarning?: (message: string) => void;
  onDebug?: (message: string) => void;
  /** Progress of every pull the server makes. */
  onPullProgress?: (reference: string, event: ProgressEvent) => void;
}

export interface ResolvedServeOptions extends ServeOptions {
  host: string;
  port: number;
  models: string[];
  parallel: number;
  maxQueue: number;
  maxModels: number;
  keepAliveMs: number;
  pull: "missing" | "never";
  apiKey: string | undefined;
  cors: string[];
  bodyLimit: number;
  requestTimeoutMs: number;
  headersTimeoutMs: number;
  env: NodeJS.ProcessEnv;
  log: (line: string) => void;
}

export const SERVE_DEFAULTS = {
  host: "127.0.0.1",
  port: 8080,
  parallel: 4,
  maxQueue: 64,
  maxModels: 2,
  keepAlive: "5m",
  bodyLimit: 16 * 1024 * 1024,
  requestTimeoutMs: 30_000,
  headersTimeoutMs: 10_000,
} as const;

function invalid(message: string): LlamaOciError {
  return new LlamaOciError("INVALID_ARGUMENT", message);
}

function integer(name: string, value: number | undefined, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(`${name} must be an integer from ${min} to ${max} (got ${String(value)})`);
  }
  return value;
}

export function resolveServeOptions(options: ServeOptions): ResolvedServeOptions {
  const env = options.env ?? process.env;
  const models = options.models ?? [];
  if (!Array.isArray(models) || models.some((m) => typeof m !== "string" || m.trim() === "")) throw invalid("models must be an array of references");
  const maxModels = integer("maxModels", options.maxModels, Math.max(SERVE_DEFAULTS.maxModels, models.length), 1);
  if (models.length > maxModels) throw invalid(`${models.length} models to preload but maxModels is ${maxModels}`);
  const pullPolicy = options.pull ?? "missing";
  if (pullPolicy !== "missing" && pullPolicy !== "never") throw invalid(`pull must be "missing" or "never" (got ${String(pullPolicy)})`);
  const apiKey = options.apiKey ?? (env.LLAMA_OCI_API_KEY || undefined);
  if (apiKey !== undefined && (typeof apiKey !== "string" || apiKey.length === 0 || /[\s\u0000-\u001f]/.test(apiKey))) {
    throw invalid("the API key must be a non-empty string without whitespace or control characters");
  }
  const cors = options.cors ?? [];
  if (!Array.isArray(cors) || cors.some((origin) => typeof origin !== "string" || origin === "")) throw invalid("cors must be an array of origins");
  const keepAliveMs = parseDuration(options.keepAlive ?? SERVE_DEFAULTS.keepAlive, "keepAlive", "ms");
  return {
    ...options,
    host: options.host ?? SERVE_DEFAULTS.host,
    port: integer("port", options.port, SERVE_DEFAULTS.port, 0, 65535),
    models,
    parallel: integer("parallel", options.parallel, SERVE_DEFAULTS.parallel, 1, 256),
    maxQueue: integer("maxQueue", options.maxQueue, SERVE_DEFAULTS.maxQueue, 0),
    maxModels,
    keepAliveMs,
    pull: pullPolicy,
    apiKey,
    cors,
    bodyLimit: integer("bodyLimit", options.bodyLimit, SERVE_DEFAULTS.bodyLimit, 1024),
    requestTimeoutMs: integer("requestTimeoutMs", options.requestTimeoutMs, SERVE_DEFAULTS.requestTimeoutMs, 1),
    headersTimeoutMs: integer("headersTimeoutMs", options.headersTimeoutMs, SERVE_DEFAULTS.headersTimeoutMs, 1),
    env,
    log: options.log ?? (() => {}),
  };
}

const UNIT_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, "µs": 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * A duration as Ollama's keep_alive takes it: a number (in `numberUnit`: seconds for keep_alive, milliseconds for
 * the keepAlive option) or Go's duration text ("5m", "1h30m", "300ms", "-1"); a plain number in text is seconds.
 * Negative means forever (Infinity). Returns milliseconds.
 */
export function parseDuration(value: number | string, name: string, numberUnit: "s" | "ms"): number {
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw invalid(`${name} must be a finite number (got ${String(value)})`);
    return value < 0 ? Infinity : numberUnit === "s" ? value * 1000 : value;
  }
  if (typeof value !== "string") throw invalid(`${name} must be a duration such as "5m" or a number`);
  const text = value.trim();
  if (/^[-+]?\d+(\.\d+)?$/.test(text)) {
    const seconds = Number(text);
    return seconds < 0 ? Infinity : seconds * 1000;
  }
  const match = /^([-+]?)((?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+)$/.exec(text);
  if (!match) throw invalid(`${name} must be a duration such as "5m", "30s" or "1h" (got "${text.slice(0, 40)}")`);
  let ms = 0;
  for (const part of match[2]!.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) ms += Number(part[1]) * UNIT_MS[part[2]!]!;
  if (!Number.isFinite(ms)) throw invalid(`${name} is too long (got "${text.slice(0, 40)}")`);
  return match[1] === "-" ? Infinity : ms;
}

/** "5m", "30s", "forever": a duration for log lines. */
export function formatDuration(ms: number): string {
  if (ms === Infinity) return "forever";
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
