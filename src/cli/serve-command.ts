/**
 * `llama-oci serve`: the OpenAI- and Ollama-compatible HTTP server over models named by reference (src/server).
 * Runs until Ctrl+C or SIGTERM, then stops generations, unloads models and exits 0.
 */
import type { ParseArgsConfig } from "node:util";
import { llama } from "../llama/llama.js";
import { parseDuration, serve, type LlamaServer, type ServeOptions } from "../server/index.js";
import { terminalSafe } from "../util/terminal.js";
import type { CliContext } from "./context.js";
import { formatError, UsageError } from "./output.js";
import { PULL_FLAGS, PULL_USAGE_LINES, pullOptions, REGISTRY_FLAGS, REGISTRY_USAGE } from "./registry-io.js";
import { parseCommandArgs, parseFlashAttention, parseGpuLayers, parseInteger, rpcOption } from "./run-command.js";

const SERVE_OPTIONS = {
  host: { type: "string" },
  port: { type: "string" },
  model: { type: "string", short: "m", multiple: true },
  "docker-repo": { type: "string", multiple: true },
  parallel: { type: "string" },
  "ctx-size": { type: "string", short: "c" },
  "batch-size": { type: "string", short: "b" },
  "gpu-layers": { type: "string" },
  rpc: { type: "string" },
  threads: { type: "string", short: "t" },
  "flash-attn": { type: "string" },
  "kv-unified": { type: "boolean" },
  "max-models": { type: "string" },
  "keep-alive": { type: "string" },
  "max-queue": { type: "string" },
  pull: { type: "string" },
  "api-key": { type: "string" },
  cors: { type: "string", multiple: true },
  "body-limit": { type: "string" },
  "request-timeout": { type: "string" },
  ...REGISTRY_FLAGS,
  ...PULL_FLAGS,
} as const satisfies NonNullable<ParseArgsConfig["options"]>;

/** llama-server's spellings that the shared aliases do not cover. */
const SERVE_ALIASES: Record<string, string> = { "-np": "--parallel", "--n-parallel": "--parallel", "-kvu": "--kv-unified" };

export const SERVE_USAGE = `Usage: llama-oci serve [--host 127.0.0.1] [--port 8080] [--model <reference>]... [options]

Serve models over HTTP with OpenAI's API (/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models) and
Ollama's (/api/chat, /api/generate, /api/embed, /api/tags, /api/pull, ...). A request's "model" is an OCI reference
(ai/smollm2:135M-Q4_0, registry.example.com/team/m:Q4_K_M, repo@sha256:...), pulled on first use when not cached.

Server:
  --host <address>            address to listen on (default 127.0.0.1: this machine only)
  --port <N>                  port (default 8080; 0 = any free port)
  -m, --model <reference>     load this model at start and use it when a request names none (repeatable; the
                              first is the default; also a local .gguf path, served under its file name)
  -np, --parallel <N>         sequences per model generating at once (default 4)
  --max-queue <N>             requests per model that may wait for a sequence (default 64); more get 503
  --max-models <N>            models loaded at once (default 2); the least recently used idle one is unloaded
  --keep-alive <duration>     how long a model stays loaded after its last request: 30s, 5m, 1h, -1 = forever
                              (default 5m; models given with --model stay loaded)
  --pull <missing|never>      pull a model that is not cached on first use (default), or answer 404
  --api-key <key>             require 'Authorization: Bearer <key>' on every route but /health (also
                              LLAMA_OCI_API_KEY)
  --cors <origin>             allow this browser origin (repeatable; * = any); CORS is off without it
  --body-limit <bytes>        largest request body (default 16777216); larger ones get 413
  --request-timeout <ms>      a request's headers and body must arrive within this (default 30000)

Model (each loaded model):
  -c, --ctx-size <N>          tokens each sequence holds, prompt and answer (default: min(model's, 4096))
  -b, --batch-size <N>        prompt batch size (default 512)
  -ngl, --gpu-layers <N|max>  layers to offload to the GPU (default: max with a GPU backend, else 0)
  --rpc <host:port,...>       split each model over llama.cpp RPC servers (ggml-rpc-server; trusted networks only)
  -t, --threads <N>           CPU threads (default: physical cores)
  -fa, --flash-attn <on|off|auto>  flash attention (default auto)
  -kvu, --kv-unified          one KV cache of parallel x ctx-size cells that the sequences share (a long
                              conversation may use what idle ones leave), instead of ctx-size cells each

Pulling:
${REGISTRY_USAGE}
${PULL_USAGE_LINES}
  -q, --quiet                 no log lines on stderr
  -v, --verbose               a log line per request, HTTP traces of pulls, llama.cpp's log
  -h, --help                  show this help

Examples:
  llama-oci serve --model ai/smollm2:135M-Q4_0
  llama-oci serve --host 0.0.0.0 --api-key "$KEY" --parallel 8 -c 8192
  curl http://127.0.0.1:8080/v1/chat/completions -d '{"model":"ai/smollm2:135M-Q4_0","messages":[{"role":"user","content":"Hi"}]}'`;

export async function serveCommand(argv: string[], cli: CliContext): Promise<number> {
  const args = argv.map((token) => {
    const eq = token.indexOf("=");
    const flag = eq === -1 ? token : token.slice(0, eq);
    const alias = SERVE_ALIASES[flag];
    return alias === undefined ? token : `${alias}${eq === -1 ? "" : token.slice(eq)}`;
  });
  const { values, positionals } = parseCommandArgs(args, SERVE_OPTIONS);
  if (values.help) {
    cli.stdout.write(`${SERVE_USAGE}\n`);
    return 0;
  }
  const pullPolicy = values.pull;
  if (pullPolicy !== undefined && pullPolicy !== "missing" && pullPolicy !== "never") {
    throw new UsageError(`--pull must be missing or never (got '${pullPolicy}')`);
  }
  const quiet = values.quiet === true;
  const verbose = values.verbose === true;
  const log = quiet ? () => {} : (line: string) => void cli.stderr.write(`${terminalSafe(line)}\n`);
  const apiKey = values["api-key"] ?? (cli.env.LLAMA_OCI_API_KEY || undefined);
  let keepAlive: number | undefined;
  try {
    keepAlive = values["keep-alive"] === undefined ? undefined : parseDuration(values["keep-alive"], "--keep-alive", "s");
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const options: ServeOptions = {
    host: values.host,
    port: parseInteger("--port", values.port, 0),
    models: [...positionals, ...(values.model ?? []), ...(values["docker-repo"] ?? [])],
    parallel: parseInteger("-np/--parallel", values.parallel, 1),
    maxQueue: parseInteger("--max-queue", values["max-queue"], 0),
    maxModels: parseInteger("--max-models", values["max-models"], 1),
    keepAlive,
    pull: pullPolicy,
    apiKey,
    cors: values.cors,
    bodyLimit: parseInteger("--body-limit", values["body-limit"], 1024),
    requestTimeoutMs: parseInteger("--request-timeout", values["request-timeout"], 1),
    contextSize: parseInteger("-c/--ctx-size", values["ctx-size"], 1),
    batchSize: parseInteger("-b/--batch-size", values["batch-size"], 1),
    gpuLayers: parseGpuLayers(values["gpu-layers"]),
    ...rpcOption(values.rpc),
    threads: parseInteger("-t/--threads", values.threads, 1),
    flashAttention: parseFlashAttention(values["flash-attn"]),
    kvUnified: values["kv-unified"] === true || undefined,
    ...pullOptions(values),
    verbose: verbose || undefined,
    env: cli.env,
    log,
    accessLog: verbose,
    onWarning: (message) => log(`warning: ${message}`),
    onDebug: (message) => log(`debug: ${message}`),
  };
  if (options.port !== undefined && options.port > 65535) throw new UsageError(`--port must be at most 65535 (got ${options.port})`);

  llama.setLogger(verbose ? (_level, text) => void cli.stderr.write(text) : null, "info");
  const server = await serve(options);
  const shown = options.host ?? "127.0.0.1";
  log(`llama-oci serve: listening on ${server.url} (OpenAI API under /v1, Ollama API under /api)`);
  if (!isLoopback(shown) && apiKey === undefined) {
    log(`warning: listening on ${shown} without --api-key: anyone who can reach this port can use the models, pull and delete them`);
  }

  let onTerm: (() => void) | undefined;
  const stopped = new Promise<void>((resolve) => {
    if (cli.signal.aborted) resolve();
    cli.signal.addEventListener("abort", () => resolve(), { once: true });
    onTerm = () => resolve();
    process.once("SIGTERM", onTerm);
  });
  try {
    return await untilStopped(server, options, stopped, log, cli);
  } finally {
    if (onTerm) process.off("SIGTERM", onTerm);
  }
}

async function untilStopped(server: LlamaServer, options: ServeOptions, stopped: Promise<void>, log: (line: string) => void, cli: CliContext): Promise<number> {
  const failed = server.ready.then(
    () => {
      if (options.models && options.models.length > 0) log(`ready: ${server.loaded().map((m) => m.name).join(", ")}`);
      return undefined;
    },
    (error: unknown) => error,
  );
  const outcome = await Promise.race([stopped.then(() => ({ kind: "stopped" as const })), failed.then((error) => ({ kind: "loaded" as const, error }))]);
  if (outcome.kind === "loaded" && outcome.error !== undefined) {
    cli.stderr.write(`${formatError(outcome.error)}\n`);
    await server.close();
    return 1;
  }
  await stopped;
  log("shutting down");
  await server.close();
  return 0;
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);
}
