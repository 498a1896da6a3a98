/**
 * `llama-oci run <ref> -p "prompt"`: pulls the model if needed, streams the completion to stdout. Also holds what
 * run, chat and bench share: llama.cpp-style flags (-m, -dr, -ngl, ...) and opening the model they name.
 */
import { readFile } from "node:fs/promises";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { llama } from "../llama/llama.js";
import type { CompletionTimings } from "../llama/completion.js";
import type { LlamaModel } from "../llama/model.js";
import type { GenerationOptions, ModelOptions } from "../llama/options.js";
import type { CliContext } from "./context.js";
import { PULL_FLAGS, PULL_USAGE_LINES, pullOptions, REGISTRY_FLAGS, REGISTRY_USAGE, startReporting } from "./registry-io.js";
import { UsageError } from "./output.js";

type OptionsConfig = NonNullable<ParseArgsConfig["options"]>;
type ParsedResults<T extends ParseArgsConfig> = ReturnType<typeof parseArgs<T>>;

/** Where the model comes from and how it is loaded: shared by run, chat and bench. */
export const MODEL_OPTIONS = {
  model: { type: "string", short: "m" },
  "docker-repo": { type: "string" },
  "gpu-layers": { type: "string" },
  threads: { type: "string", short: "t" },
  rpc: { type: "string" },
  ...REGISTRY_FLAGS,
  ...PULL_FLAGS,
} as const satisfies OptionsConfig;

/** Sampling and context flags shared by run and chat. */
export const GENERATION_OPTIONS = {
  "n-predict": { type: "string", short: "n" },
  temp: { type: "string" },
  "top-k": { type: "string" },
  "top-p": { type: "string" },
  "min-p": { type: "string" },
  "repeat-penalty": { type: "string" },
  "repeat-last-n": { type: "string" },
  seed: { type: "string", short: "s" },
  "ctx-size": { type: "string", short: "c" },
  "batch-size": { type: "string", short: "b" },
  "flash-attn": { type: "string" },
} as const satisfies OptionsConfig;

/** llama.cpp's spellings mapped to ours; multi-letter single-dash flags cannot go through parseArgs as they are. */
export const LLAMA_ALIASES: Record<string, string> = {
  "-dr": "docker-repo",
  "-ngl": "gpu-layers",
  "--n-gpu-layers": "gpu-layers",
  "-fa": "flash-attn",
  "--temperature": "temp",
  "--max-tokens": "n-predict",
  "-ub": "ubatch-size",
  "-pg": "pg",
  "-sys": "system",
  "--system-prompt": "system",
};

export const MODEL_USAGE = `Model (one of):
  <reference>                 [registry/]repository[:tag|@digest] to pull, e.g. ai/smollm2:135M-Q4_0
  -dr, --docker-repo <ref>    the same, llama.cpp style
  -m, --model <path.gguf>     a local GGUF file instead

Loading:
  -ngl, --gpu-layers <N|max>  layers to offload to the GPU (default: max with a GPU backend, else 0)
  -t, --threads <N>           CPU threads (default: physical cores)
  --rpc <host:port,...>       split the model over llama.cpp RPC servers (ggml-rpc-server; trusted networks only)

Pulling:
${REGISTRY_USAGE}
${PULL_USAGE_LINES}
  -q, --quiet                 no progress or timing output
  -v, --verbose               HTTP traces and llama.cpp's log on stderr
  -h, --help                  show this help`;

export const GENERATION_USAGE = `Sampling and context:
  -n, --n-predict <N>         most tokens to generate (-1 = until the model stops)
  --temp <T>                  temperature, 0 = greedy (default 0.8)
  --top-k <N>                 default 40 (0 = off)
  --top-p <P>                 default 0.95 (1 = off)
  --min-p <P>                 default 0.05 (0 = off)
  --repeat-penalty <P>        default 1.0 (off)
  --repeat-last-n <N>         tokens the penalty looks back (default 64)
  -s, --seed <N>              sampling seed (default: random)
  -c, --ctx-size <N>          context size in tokens (default: min(model's, 4096))
  -b, --batch-size <N>        prompt batch size (default 512)
  -fa, --flash-attn <on|off|auto>  flash attention (default auto)`;

export const RUN_USAGE = `Usage: llama-oci run <reference> -p <prompt> [options]
       llama-oci run -m <path.gguf> -p <prompt> [options]

Pull a GGUF model from an OCI registry (or use a local file) and stream a completion of the prompt to stdout.

Prompt:
  -p, --prompt <text>         the text to complete
  -f, --file <path>           read the prompt from a file

${MODEL_USAGE}

${GENERATION_USAGE}

Ctrl+C stops the generation (exit code 130). Timings go to stderr unless -q.`;

/**
 * Rewrites llama.cpp-style arguments into what parseArgs understands: aliases to long names, and every value of a
 * string option attached with "=" so values starting with "-" (negative numbers, prompts) are not taken for flags.
 */
export function normalizeArgs(argv: readonly string[], options: OptionsConfig): string[] {
  const shortToLong = new Map<string, string>();
  for (const [name, config] of Object.entries(options)) if (config.short) shortToLong.set(config.short, name);
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!;
    if (token === "--") {
      out.push(...argv.slice(i));
      break;
    }
    if (!token.startsWith("-") || token === "-") {
      out.push(token);
      continue;
    }
    const eq = token.indexOf("=");
    const flag = eq === -1 ? token : token.slice(0, eq);
    const inline = eq === -1 ? undefined : token.slice(eq + 1);
    const alias = LLAMA_ALIASES[flag];
    const long = alias ?? (flag.startsWith("--") ? flag.slice(2) : flag.length === 2 ? shortToLong.get(flag[1]!) : undefined);
    if (long === undefined || options[long] === undefined) {
      out.push(alias ? `--${alias}${inline === undefined ? "" : `=${inline}`}` : token);
      continue;
    }
    if (options[long].type === "string" && inline === undefined && i + 1 < argv.length) {
      out.push(`--${long}=${argv[++i]!}`);
    } else {
      out.push(inline === undefined ? `--${long}` : `--${long}=${inline}`);
    }
  }
  return out;
}

export function parseCommandArgs<T extends OptionsConfig>(argv: readonly string[], options: T): ParsedResults<{ options: T; allowPositionals: true; strict: true }> {
  return parseArgs({ args: normalizeArgs(argv, options), options, allowPositionals: true, strict: true });
}

export function parseInteger(flag: string, value: string | undefined, min = 0): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isInteger(n) || n < min) throw new UsageError(`${flag} must be an integer >= ${min} (got '${value}')`);
  return n;
}

export function parseNumber(flag: string, value: string | undefined, min = 0): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < min) throw new UsageError(`${flag} must be a number >= ${min} (got '${value}')`);
  return n;
}

export function parseGpuLayers(value: string | undefined): ModelOptions["gpuLayers"] {
  if (value === undefined) return undefined;
  if (value === "max" || value === "all" || value === "-1") return "max";
  return parseInteger("-ngl/--gpu-layers", value);
}

export function parseFlashAttention(value: string | undefined): "on" | "off" | "auto" | undefined {
  if (value === undefined) return undefined;
  if (value === "on" || value === "off" || value === "auto") return value;
  throw new UsageError(`-fa/--flash-attn must be on, off or auto (got '${value}')`);
}

type ModelValues = { [K in keyof typeof MODEL_OPTIONS]?: (typeof MODEL_OPTIONS)[K] extends { multiple: true } ? string[] : (typeof MODEL_OPTIONS)[K] extends { type: "boolean" } ? boolean : string };
type GenerationValues = { [K in keyof typeof GENERATION_OPTIONS]?: string };

/** The model a command names: a positional reference, -dr/--docker-repo, or -m/--model; exactly one. */
export function modelSource(command: string, positionals: string[], values: ModelValues): { kind: "docker"; reference: string } | { kind: "file"; path: string } {
  const sources = [...positionals.map((p) => ({ kind: "docker" as const, reference: p }))];
  if (values["docker-repo"] !== undefined) sources.push({ kind: "docker", reference: values["docker-repo"] });
  const file = values.model !== undefined ? [{ kind: "file" as const, path: values.model }] : [];
  const all = [...sources, ...file];
  if (all.length === 0) throw new UsageError(`${command} needs a model: a reference, -dr <reference> or -m <path.gguf>`);
  if (all.length > 1) throw new UsageError(`${command} takes one model (got ${all.length}: a reference, -dr and -m are alternatives)`);
  return all[0]!;
}

/** Loads the model a command names, pulling it first when it is a reference (progress on stderr unless -q). */
export async function openModel(
  command: string,
  positionals: string[],
  values: ModelValues,
  cli: CliContext,
  options: ModelOptions = {},
): Promise<LlamaModel> {
  const source = modelSource(command, positionals, values);
  const verbose = values.verbose === true;
  llama.setLogger(verbose ? (_level, text) => void cli.stderr.write(text) : null, "info");
  const modelOptions: ModelOptions = {
    ...options,
    gpuLayers: parseGpuLayers(values["gpu-layers"]),
    threads: parseInteger("-t/--threads", values.threads, 1),
    ...rpcOption(values.rpc),
    signal: cli.signal,
  };
  if (source.kind === "file") return llama.loadModel(source.path, modelOptions);

  const { renderer, reporting } = startReporting(cli, { quiet: values.quiet, verbose });
  try {
    return await llama.fromDocker(source.reference, {
      ...modelOptions,
      ...reporting,
      ...pullOptions(values),
    });
  } finally {
    renderer.close();
  }
}

/** Context options from -c, -b, -fa. */
export function contextFlags(values: GenerationValues): ModelOptions {
  return {
    contextSize: parseInteger("-c/--ctx-size", values["ctx-size"], 1),
    batchSize: parseInteger("-b/--batch-size", values["batch-size"], 1),
    flashAttention: parseFlashAttention(values["flash-attn"]),
  };
}

/** Sampling options from the flags; -n -1 means "until the model stops or the context is full". */
export function generationFlags(values: GenerationValues, defaultMaxTokens: number): GenerationOptions {
  const n = values["n-predict"];
  const maxTokens = n === "-1" ? Infinity : (parseInteger("-n/--n-predict", n) ?? defaultMaxTokens);
  return {
    maxTokens,
    temperature: parseNumber("--temp", values.temp),
    topK: parseInteger("--top-k", values["top-k"]),
    topP: parseNumber("--top-p", values["top-p"]),
    minP: parseNumber("--min-p", values["min-p"]),
    repeatPenalty: parseNumber("--repeat-penalty", values["repeat-penalty"]),
    repeatLastN: parseInteger("--repeat-last-n", values["repeat-last-n"]),
    seed: parseInteger("-s/--seed", values.seed),
  };
}

export function formatTimings(timings: CompletionTimings): string {
  const evaluated = timings.promptTokens - timings.cachedTokens;
  const cached = timings.cachedTokens > 0 ? ` (+${timings.cachedTokens} cached)` : "";
  return (
    `prompt: ${evaluated} tokens${cached} in ${timings.promptMs.toFixed(2)} ms (${timings.promptTokensPerSecond.toFixed(2)} t/s), ` +
    `generation: ${timings.generatedTokens} tokens in ${timings.generateMs.toFixed(2)} ms (${timings.generatedTokensPerSecond.toFixed(2)} t/s)`
  );
}

const RUN_OPTIONS = {
  ...MODEL_OPTIONS,
  ...GENERATION_OPTIONS,
  prompt: { type: "string", short: "p" },
  file: { type: "string", short: "f" },
} as const satisfies OptionsConfig;

export async function runCommand(argv: string[], cli: CliContext): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, RUN_OPTIONS);
  if (values.help) {
    cli.stdout.write(`${RUN_USAGE}\n`);
    return 0;
  }
  if (values.prompt !== undefined && values.file !== undefined) throw new UsageError("give -p/--prompt or -f/--file, not both");
  const prompt = values.prompt ?? (values.file !== undefined ? await readFile(values.file, "utf8") : undefined);
  if (prompt === undefined) throw new UsageError("missing the prompt: -p <text> or -f <file>");
  modelSource("run", positionals, values);
  const generation = generationFlags(values, 256);

  const model = await openModel("run", positionals, values, cli, contextFlags(values));
  try {
    const result = await model.completeWithMeta(prompt, {
      ...generation,
      signal: cli.signal,
      onTextChunk: (text) => void cli.stdout.write(text),
    });
    cli.stdout.write("\n");
    if (!values.quiet) cli.stderr.write(`${formatTimings(result.timings)}\n`);
    return result.stopReason === "abort" && cli.signal.aborted ? 130 : 0;
  } finally {
    await model.dispose();
  }
}

/** --rpc host:port,host:port as llama.cpp's: the model's rpcServers. */
export function rpcOption(value: string | undefined): { rpcServers?: string[] } {
  if (value === undefined) return {};
  return { rpcServers: value.split(",").map((endpoint) => endpoint.trim()) };
}
