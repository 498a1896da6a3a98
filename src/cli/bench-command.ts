/**
 * `llama-oci bench <ref>`: llama-bench's measurement through our addon. For each test (pp<N>: N prompt tokens in
 * batches; tg<N>: N tokens generated one at a time) a fresh context of N tokens, one warm-up run, then -r timed
 * repetitions from an empty KV cache; prints llama-bench's markdown table, or JSON with --json.
 */
import { isAbort } from "../errors.js";
import { llama } from "../llama/llama.js";
import type { LlamaModel } from "../llama/model.js";
import { backendName, benchFields, benchJson, formatFooter, formatHeader, formatRow, type BenchSetup, type BenchTest } from "./bench-format.js";
import type { CliContext } from "./context.js";
import { UsageError, jsonOutput } from "./output.js";
import { MODEL_OPTIONS, MODEL_USAGE, modelSource, openModel, parseCommandArgs, parseFlashAttention, parseInteger } from "./run-command.js";

export const BENCH_USAGE = `Usage: llama-oci bench <reference> [options]
       llama-oci bench -m <path.gguf> [options]

Measure prompt processing and generation speed like llama.cpp's llama-bench, and print its table.

Benchmark:
  -p, --n-prompt <N[,N...]>   prompt tokens per pp test (default 512; 0 = none)
  -n, --n-gen <N[,N...]>      generated tokens per tg test (default 128; 0 = none)
  -r, --repetitions <N>       timed runs per test, after one warm-up run (default 5)
  -b, --batch-size <N>        logical batch size (default 2048)
  -ub, --ubatch-size <N>      physical batch size (default 512)
  -fa, --flash-attn <on|off|auto>  flash attention (default auto)
  --no-warmup                 skip the warm-up run
  --json                      print llama-bench style JSON instead of the table

${MODEL_USAGE}`;

const BENCH_OPTIONS = {
  ...MODEL_OPTIONS,
  "n-prompt": { type: "string", short: "p" },
  "n-gen": { type: "string", short: "n" },
  repetitions: { type: "string", short: "r" },
  "batch-size": { type: "string", short: "b" },
  "ubatch-size": { type: "string" },
  "flash-attn": { type: "string" },
  "no-warmup": { type: "boolean" },
  json: { type: "boolean" },
} as const;

function parseList(flag: string, value: string | undefined, fallback: number): number[] {
  if (value === undefined) return [fallback];
  return value.split(",").map((part) => parseInteger(flag, part.trim())!);
}

export async function benchCommand(argv: string[], cli: CliContext): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, BENCH_OPTIONS);
  if (values.help) {
    cli.stdout.write(`${BENCH_USAGE}\n`);
    return 0;
  }
  modelSource("bench", positionals, values);
  const prompts = parseList("-p/--n-prompt", values["n-prompt"], 512);
  const gens = parseList("-n/--n-gen", values["n-gen"], 128);
  const repetitions = parseInteger("-r/--repetitions", values.repetitions, 1) ?? 5;
  const batchSize = parseInteger("-b/--batch-size", values["batch-size"], 1) ?? 2048;
  const ubatchSize = parseInteger("-ub/--ubatch-size", values["ubatch-size"], 1) ?? 512;
  const flashAttention = parseFlashAttention(values["flash-attn"]) ?? "auto";
  const tests: Pick<BenchTest, "nPrompt" | "nGen">[] = [
    ...prompts.filter((n) => n > 0).map((nPrompt) => ({ nPrompt, nGen: 0 })),
    ...gens.filter((n) => n > 0).map((nGen) => ({ nPrompt: 0, nGen })),
  ];
  if (tests.length === 0) throw new UsageError("nothing to measure: -p and -n are both 0");

  const model = await openModel("bench", positionals, values, cli);
  try {
    const system = llama.systemInfo();
    const backend = backendName(system.backends);
    const setup: BenchSetup = {
      modelFilename: model.path,
      modelReference: model.pull?.reference,
      modelType: model.info.description,
      modelSize: model.info.sizeBytes,
      modelParams: model.info.parameters,
      backend,
      gpuLayers: gpuLayersShown(values["gpu-layers"], system.supportsGpuOffload),
      threads: model.contextOptions.threads,
      batchSize,
      ubatchSize,
      flashAttention,
      threadsGiven: values.threads !== undefined,
      system,
    };
    const fields = benchFields(setup);
    const records: Record<string, unknown>[] = [];
    if (!values.json) cli.stdout.write(formatHeader(fields));
    for (const test of tests) {
      const measured = await runTest(model, test, { batchSize, ubatchSize, flashAttention, repetitions, warmup: !values["no-warmup"], signal: cli.signal });
      if (values.json) records.push(benchJson(setup, measured, new Date().toISOString()));
      else cli.stdout.write(formatRow(fields, setup, measured));
    }
    cli.stdout.write(values.json ? jsonOutput(records) : formatFooter(system.llamaCppVersion));
    return 0;
  } catch (error) {
    if (!(isAbort(error) && cli.signal.aborted)) throw error;
    cli.stderr.write("\ninterrupted\n");
    return 130;
  } finally {
    await model.dispose();
  }
}

/** The ngl column: the number given, or -1 for all layers as llama-bench shows its default. */
function gpuLayersShown(flag: string | undefined, hasGpu: boolean): number {
  if (flag === undefined) return hasGpu ? -1 : 0;
  if (flag === "max" || flag === "all") return -1;
  return Number(flag);
}

async function runTest(
  model: LlamaModel,
  test: Pick<BenchTest, "nPrompt" | "nGen">,
  options: { batchSize: number; ubatchSize: number; flashAttention: "auto" | "on" | "off"; repetitions: number; warmup: boolean; signal: AbortSignal },
): Promise<BenchTest> {
  const context = await model.createContext({
    contextSize: test.nPrompt + test.nGen,
    batchSize: options.batchSize,
    ubatchSize: options.ubatchSize,
    flashAttention: options.flashAttention,
  });
  try {
    const { signal } = options;
    if (options.warmup) {
      if (test.nPrompt > 0) await context.bench(test.nPrompt, 0, { signal });
      if (test.nGen > 0) await context.bench(0, 1, { signal });
    }
    const samplesNs: number[] = [];
    for (let i = 0; i < options.repetitions; i++) {
      const { promptMs, generateMs } = await context.bench(test.nPrompt, test.nGen, { signal });
      samplesNs.push(Math.round((promptMs + generateMs) * 1e6));
    }
    return { ...test, samplesNs };
  } finally {
    await context.dispose();
  }
}
