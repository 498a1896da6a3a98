/**
 * `llama-oci bench <ref>`: llama-bench's measurement through our addon, with its command line and its output. The
 * same grid of tests (every combination of -ngl, -b, -ub, -fa and -t, each with the pp, tg and pp+tg tests of -p, -n
 * and -pg), each on a fresh context: one warm-up run, then -r timed repetitions from an empty KV cache. Printed in
 * llama-bench's md, csv, json or jsonl format (bench-format.ts), so GPU benchmark scripts read it unchanged.
 */
import { isAbort } from "../errors.js";
import { llama } from "../llama/llama.js";
import type { LlamaModel } from "../llama/model.js";
import { defaultThreads } from "../llama/options.js";
import { benchGrid, createPrinter, type BenchGrid, type BenchInstance, type BenchTest, type FlashAttention, type OutputFormat } from "./bench-format.js";
import type { CliContext } from "./context.js";
import { UsageError } from "./output.js";
import { MODEL_OPTIONS, MODEL_USAGE, modelSource, openModel, parseCommandArgs, parseInteger } from "./run-command.js";

export const BENCH_USAGE = `Usage: llama-oci bench <reference> [options]
       llama-oci bench -m <path.gguf> [options]

Measure prompt processing and generation speed like llama.cpp's llama-bench, and print its table.

Benchmark (lists and ranges as llama-bench takes them: 1,2,4 or first-last[+step|*mult]; flags repeat):
  -p, --n-prompt <list>       prompt tokens per pp test (default 512; 0 = none)
  -n, --n-gen <list>          generated tokens per tg test (default 128; 0 = none)
  -pg <pp,tg>                 a pp+tg test: pp prompt tokens then tg generated (repeatable)
  -r, --repetitions <N>       timed runs per test, after one warm-up run (default 5)
  -b, --batch-size <list>     logical batch size (default 2048)
  -ub, --ubatch-size <list>   physical batch size (default 512)
  -fa, --flash-attn <list>    on, off or auto (default auto)
  -t, --threads <list>        CPU threads (default: physical cores)
  -ngl, --gpu-layers <list>   layers to offload (default -1 = all; on the CPU backend it changes nothing)
  --no-warmup                 skip the warm-up run
  -o, --output <md|csv|json|jsonl>  llama-bench's output formats (default md)
  --json                      the same as -o json

${MODEL_USAGE}`;

const BENCH_OPTIONS = {
  ...MODEL_OPTIONS,
  "n-prompt": { type: "string", short: "p", multiple: true },
  "n-gen": { type: "string", short: "n", multiple: true },
  pg: { type: "string", multiple: true },
  repetitions: { type: "string", short: "r" },
  "batch-size": { type: "string", short: "b", multiple: true },
  "ubatch-size": { type: "string", multiple: true },
  "flash-attn": { type: "string", multiple: true },
  threads: { type: "string", short: "t", multiple: true },
  "gpu-layers": { type: "string", multiple: true },
  "no-warmup": { type: "boolean" },
  output: { type: "string", short: "o" },
  json: { type: "boolean" },
} as const;

/** llama-bench's parse_int_range: comma-separated items, each `first[-last[(+|*)step]]`. */
export function parseIntRange(flag: string, text: string, allowNegative = false): number[] {
  const out: number[] = [];
  for (const item of text.split(",")) {
    const match = (allowNegative ? /^(-?\d+)(?:-(\d+)(?:([+*])(\d+))?)?$/ : /^(\d+)(?:-(\d+)(?:([+*])(\d+))?)?$/).exec(item.trim());
    if (!match) throw new UsageError(`${flag} takes numbers or ranges first-last[+step|*mult] (got '${text}')`);
    const first = Number(match[1]);
    const last = match[2] === undefined ? first : Number(match[2]);
    const op = match[3] ?? "+";
    const step = match[4] === undefined ? 1 : Number(match[4]);
    for (let i = first; i <= last; ) {
      out.push(i);
      const next = op === "+" ? i + step : i * step;
      if (next <= i) throw new UsageError(`${flag}: the range '${item}' does not advance`);
      if (out.length > 10_000) throw new UsageError(`${flag}: the range '${item}' is too long`);
      i = next;
    }
  }
  return out;
}

function lists(flag: string, values: string[] | undefined, fallback: number[], allowNegative = false): number[] {
  if (values === undefined || values.length === 0) return fallback;
  return values.flatMap((value) => parseIntRange(flag, value, allowNegative));
}

function flashAttentionList(values: string[] | undefined): FlashAttention[] {
  if (values === undefined || values.length === 0) return ["auto"];
  return values.flatMap((value) =>
    value.split(",").map((item): FlashAttention => {
      const v = item.trim().toLowerCase();
      if (["on", "1", "true", "yes", "enabled"].includes(v)) return "on";
      if (["off", "0", "false", "no", "disabled"].includes(v)) return "off";
      if (["auto", "-1"].includes(v)) return "auto";
      throw new UsageError(`-fa/--flash-attn takes on, off or auto (got '${item}')`);
    }),
  );
}

function pgList(values: string[] | undefined): [number, number][] {
  return (values ?? []).map((value) => {
    const parts = value.split(",");
    if (parts.length !== 2) throw new UsageError(`-pg takes <pp,tg>, e.g. -pg 512,128 (got '${value}')`);
    return [parseInteger("-pg", parts[0]!.trim())!, parseInteger("-pg", parts[1]!.trim())!];
  });
}

function outputFormat(output: string | undefined, json: boolean | undefined): OutputFormat {
  if (json) return "json";
  if (output === undefined) return "md";
  if (output === "md" || output === "csv" || output === "json" || output === "jsonl") return output;
  throw new UsageError(`-o/--output takes md, csv, json or jsonl (got '${output}')`);
}

export async function benchCommand(argv: string[], cli: CliContext): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, BENCH_OPTIONS);
  if (values.help) {
    cli.stdout.write(`${BENCH_USAGE}\n`);
    return 0;
  }
  const { "gpu-layers": nglFlags, threads: threadFlags, ...shared } = values;
  modelSource("bench", positionals, shared);
  const grid: BenchGrid = {
    nPrompt: lists("-p/--n-prompt", values["n-prompt"], [512]),
    nGen: lists("-n/--n-gen", values["n-gen"], [128]),
    nPg: pgList(values.pg),
    nBatch: lists("-b/--batch-size", values["batch-size"], [2048]).map((n) => positive("-b/--batch-size", n)),
    nUbatch: lists("-ub/--ubatch-size", values["ubatch-size"], [512]).map((n) => positive("-ub/--ubatch-size", n)),
    nThreads: lists("-t/--threads", threadFlags, [defaultThreads()]).map((n) => positive("-t/--threads", n)),
    nGpuLayers: lists("-ngl/--gpu-layers", nglFlags?.map((v) => (v === "max" || v === "all" ? "-1" : v)), [-1], true),
    flashAttn: flashAttentionList(values["flash-attn"]),
    defaultThreads: defaultThreads(),
  };
  const repetitions = parseInteger("-r/--repetitions", values.repetitions, 1) ?? 5;
  const format = outputFormat(values.output, values.json);
  const instances = benchGrid(grid);
  if (instances.length === 0) throw new UsageError("nothing to measure: -p, -n and -pg give no test");

  // One model per -ngl value, loaded when its tests come (the grid keeps each value's tests together).
  let model: LlamaModel | undefined;
  let loadedNgl: number | undefined;
  const modelFor = async (ngl: number): Promise<LlamaModel> => {
    if (model && loadedNgl === ngl) return model;
    await model?.dispose();
    model = undefined;
    model = await openModel("bench", positionals, { ...shared, "gpu-layers": ngl < 0 ? "max" : String(ngl) }, cli);
    loadedNgl = ngl;
    return model;
  };
  try {
    const first = await modelFor(instances[0]!.nGpuLayers);
    const system = llama.systemInfo();
    const printer = createPrinter(format, {
      modelFilename: first.path,
      modelType: first.info.description,
      modelSize: first.info.sizeBytes,
      modelParams: first.info.parameters,
      system,
    }, grid);
    cli.stdout.write(printer.header());
    for (const instance of instances) {
      const measured = await runTest(await modelFor(instance.nGpuLayers), instance, { repetitions, warmup: !values["no-warmup"], signal: cli.signal });
      cli.stdout.write(printer.row(measured));
    }
    cli.stdout.write(printer.footer());
    return 0;
  } catch (error) {
    if (!(isAbort(error) && cli.signal.aborted)) throw error;
    cli.stderr.write("\ninterrupted\n");
    return 130;
  } finally {
    await model?.dispose();
  }
}

function positive(flag: string, n: number): number {
  if (n < 1) throw new UsageError(`${flag} must be at least 1 (got ${n})`);
  return n;
}

async function runTest(
  model: LlamaModel,
  test: BenchInstance,
  options: { repetitions: number; warmup: boolean; signal: AbortSignal },
): Promise<BenchTest> {
  const context = await model.createContext({
    contextSize: test.nPrompt + test.nGen,
    batchSize: test.nBatch,
    ubatchSize: test.nUbatch,
    flashAttention: test.flashAttn,
    threads: test.nThreads,
    threadsBatch: test.nThreads,
  });
  try {
    const { signal } = options;
    if (options.warmup) {
      if (test.nPrompt > 0) await context.bench(test.nPrompt, 0, { signal });
      if (test.nGen > 0) await context.bench(0, 1, { signal });
    }
    const testTime = new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
    const samplesNs: number[] = [];
    for (let i = 0; i < options.repetitions; i++) {
      const { promptMs, generateMs } = await context.bench(test.nPrompt, test.nGen, { signal });
      samplesNs.push(Math.round((promptMs + generateMs) * 1e6));
    }
    return { ...test, samplesNs, testTime };
  } finally {
    await context.dispose();
  }
}
