/**
 * `llama-oci bench` output exactly as llama.cpp's llama-bench writes it (tools/llama-bench/llama-bench.cpp): the same
 * fields, in the same order, with the same meanings and types, in its four formats: the markdown table (columns
 * chosen by the same rules, widths, MiB/GiB and M/B units, "mean ± stddev"), CSV, a JSON array and JSON lines. GPU
 * benchmark scripts written for llama-bench read ours unchanged.
 */
import type { NativeSystemInfo } from "../llama/native-types.js";

export type OutputFormat = "md" | "csv" | "json" | "jsonl";

/** llama-bench's flash_attn values: LLAMA_FLASH_ATTN_TYPE_AUTO -1, DISABLED 0, ENABLED 1. */
export type FlashAttention = "auto" | "on" | "off";

/** One point of the grid: the settings of a run, as llama-bench's cmd_params_instance. */
export interface BenchInstance {
  nPrompt: number;
  nGen: number;
  nBatch: number;
  nUbatch: number;
  nThreads: number;
  nGpuLayers: number;
  flashAttn: FlashAttention;
}

export interface BenchTest extends BenchInstance {
  /** Wall time of each repetition, in nanoseconds. */
  samplesNs: number[];
  /** When the test ran (ISO 8601, seconds, "Z"). */
  testTime: string;
}

/** What every row shares: the model and the build. */
export interface BenchModel {
  modelFilename: string;
  /** llama_model_desc, e.g. "llama 135M Q4_0". */
  modelType: string;
  modelSize: number;
  modelParams: number;
  system: Pick<NativeSystemInfo, "devices" | "llamaCppVersion" | "backends">;
}

/** The values given on the command line, to choose the markdown columns as llama-bench does. */
export interface BenchGrid {
  nPrompt: number[];
  nGen: number[];
  nPg: [number, number][];
  nBatch: number[];
  nUbatch: number[];
  nThreads: number[];
  nGpuLayers: number[];
  flashAttn: FlashAttention[];
  /** llama-bench's default thread count on this machine (its n_threads default). */
  defaultThreads: number;
}

/** llama-bench's test::get_fields(), in its order. */
export const FIELDS = [
  "build_commit", "build_number", "cpu_info", "gpu_info", "backends",
  "model_filename", "model_type", "model_size", "model_n_params", "n_batch",
  "n_ubatch", "n_threads", "cpu_mask", "cpu_strict", "poll",
  "type_k", "type_v", "n_gpu_layers", "n_cpu_moe", "split_mode",
  "main_gpu", "no_kv_offload", "flash_attn", "devices", "tensor_split",
  "tensor_buft_overrides", "load_mode", "lazy_mode",
  "embeddings",
  "no_op_offload", "no_host", "fit_target", "fit_min_ctx",
  "n_prompt", "n_gen", "n_depth",
  "test_time", "avg_ns", "stddev_ns", "avg_ts", "stddev_ts",
] as const; // prettier-ignore

export type Field = (typeof FIELDS)[number];

type FieldType = "string" | "bool" | "int" | "float";

const INT_FIELDS: ReadonlySet<string> = new Set([
  "build_number", "n_batch", "n_ubatch", "n_threads", "poll", "model_size", "model_n_params", "n_gpu_layers",
  "main_gpu", "n_prompt", "n_gen", "n_depth", "avg_ns", "stddev_ns", "no_op_offload", "n_cpu_moe", "fit_target",
  "fit_min_ctx", "flash_attn",
]); // prettier-ignore
const BOOL_FIELDS: ReadonlySet<string> = new Set(["no_kv_offload", "cpu_strict", "embeddings", "no_host"]);

function fieldType(field: string): FieldType {
  if (INT_FIELDS.has(field)) return "int";
  if (BOOL_FIELDS.has(field)) return "bool";
  if (field === "avg_ts" || field === "stddev_ts") return "float";
  return "string";
}

/** llama-bench's backend name: every registered backend but CPU (and RPC), or "CPU" when there is none. */
export function backendName(backends: readonly string[]): string {
  const others = backends.filter((name) => name !== "CPU" && !name.startsWith("RPC"));
  return others.length > 0 ? others.join(",") : "CPU";
}

function isCpuBackend(backend: string): boolean {
  return backend.includes("CPU") || backend.includes("BLAS") || backend.includes("ZenDNN");
}

const FLASH_ATTN_VALUE: Record<FlashAttention, number> = { auto: -1, off: 0, on: 1 };

/** Tokens per second of each sample. */
export function samplesTs(test: Pick<BenchTest, "nPrompt" | "nGen" | "samplesNs">): number[] {
  const tokens = test.nPrompt + test.nGen;
  return test.samplesNs.map((ns) => (1e9 * tokens) / ns);
}

export function mean(values: readonly number[]): number {
  return values.length === 0 ? 0 : values.reduce((sum, v) => sum + v, 0) / values.length;
}

/** The sample standard deviation, computed the way llama-bench does. */
export function stddev(values: readonly number[]): number {
  if (values.length <= 1) return 0;
  const n = values.length;
  const m = mean(values);
  const squares = values.reduce((sum, v) => sum + v * v, 0);
  return Math.sqrt(Math.max(0, squares / (n - 1) - (m * m * n) / (n - 1)));
}

/**
 * llamaCppVersion looks like "b<number> (<commit>)" (or "<version> (<commit>)" when the source had no build
 * number); llama-bench's footer is "build: <commit> (<number>)", with 0 for an unknown number as llama.cpp does.
 */
export function buildInfo(version: string): { commit: string; number: number } {
  const match = /^(\S+)\s*\(([^)]*)\)\s*$/.exec(version.trim());
  if (!match) return { commit: version.trim() || "unknown", number: 0 };
  const number = /^b(\d+)$/.exec(match[1]!)?.[1];
  return { commit: match[2]!, number: number === undefined ? 0 : Number(number) };
}

/** The values of one row, as llama-bench's test::get_values() gives them (as strings, typed by fieldType). */
export function rowValues(model: BenchModel, test: BenchTest): Record<Field, string> {
  const ts = samplesTs(test);
  const { commit, number } = buildInfo(model.system.llamaCppVersion);
  const devices = model.system.devices;
  const cpuInfo = devices.filter((d) => d.type === "cpu" || d.type === "accel").map((d) => d.description).join(", ");
  const gpuInfo = devices.filter((d) => d.type === "gpu" || d.type === "igpu").map((d) => d.description).join(", ");
  return {
    build_commit: commit,
    build_number: String(number),
    cpu_info: cpuInfo,
    gpu_info: gpuInfo,
    backends: backendName(model.system.backends),
    model_filename: model.modelFilename,
    model_type: model.modelType,
    model_size: String(model.modelSize),
    model_n_params: String(model.modelParams),
    n_batch: String(test.nBatch),
    n_ubatch: String(test.nUbatch),
    n_threads: String(test.nThreads),
    cpu_mask: "0x0",
    cpu_strict: "0",
    poll: "50",
    type_k: "f16",
    type_v: "f16",
    n_gpu_layers: String(test.nGpuLayers),
    n_cpu_moe: "0",
    split_mode: "layer",
    main_gpu: "0",
    no_kv_offload: "0",
    flash_attn: String(FLASH_ATTN_VALUE[test.flashAttn]),
    devices: "auto",
    tensor_split: "0.00",
    tensor_buft_overrides: "none",
    load_mode: "auto",
    lazy_mode: "auto",
    embeddings: "0",
    no_op_offload: "0",
    no_host: "0",
    fit_target: "0",
    fit_min_ctx: "0",
    n_prompt: String(test.nPrompt),
    n_gen: String(test.nGen),
    n_depth: "0",
    test_time: test.testTime,
    avg_ns: String(Math.round(mean(test.samplesNs))),
    stddev_ns: String(Math.round(stddev(test.samplesNs))),
    avg_ts: mean(ts).toFixed(6),
    stddev_ts: stddev(ts).toFixed(6),
  };
}

/** A JSON record of one row: llama-bench's fields with their types, then samples_ns and samples_ts. */
export function jsonRecord(model: BenchModel, test: BenchTest): Record<string, unknown> {
  const values = rowValues(model, test);
  const record: Record<string, unknown> = {};
  for (const field of FIELDS) {
    const value = values[field];
    const type = fieldType(field);
    record[field] = type === "string" ? value : type === "bool" ? value !== "0" : Number(value);
  }
  record.samples_ns = test.samplesNs;
  record.samples_ts = samplesTs(test);
  return record;
}

export interface BenchPrinter {
  header(): string;
  row(test: BenchTest): string;
  footer(): string;
}

export function createPrinter(format: OutputFormat, model: BenchModel, grid: BenchGrid): BenchPrinter {
  switch (format) {
    case "csv":
      return {
        header: () => `${FIELDS.join(",")}\n`,
        row: (test) => {
          const values = rowValues(model, test);
          return `${FIELDS.map((field) => `"${values[field].replace(/"/g, '""')}"`).join(",")}\n`;
        },
        footer: () => "",
      };
    case "json": {
      let first = true;
      return {
        header: () => "[\n",
        row: (test) => {
          const record = jsonRecord(model, test);
          const body = Object.entries(record)
            .map(([key, value]) => `    ${JSON.stringify(key)}: ${JSON.stringify(value)}`)
            .join(",\n");
          const text = `${first ? "" : ",\n"}  {\n${body}\n  }`;
          first = false;
          return text;
        },
        footer: () => "\n]\n",
      };
    }
    case "jsonl":
      return { header: () => "", row: (test) => `${JSON.stringify(jsonRecord(model, test))}\n`, footer: () => "" };
    case "md":
      return markdownPrinter(model, grid);
  }
}

type Column = "model" | "size" | "params" | "backend" | "n_gpu_layers" | "n_threads" | "n_batch" | "n_ubatch" | "flash_attn" | "test" | "t/s";

const WIDTH: Record<Column, number> = {
  model: -30,
  size: 10,
  params: 10,
  backend: -10,
  n_gpu_layers: 3,
  n_threads: 7,
  n_batch: 7,
  n_ubatch: 8,
  flash_attn: 3,
  test: 15,
  "t/s": 20,
};

const TITLE: Record<Column, string> = {
  model: "model",
  size: "size",
  params: "params",
  backend: "backend",
  n_gpu_layers: "ngl",
  n_threads: "threads",
  n_batch: "n_batch",
  n_ubatch: "n_ubatch",
  flash_attn: "fa",
  test: "test",
  "t/s": "t/s",
};

const different = <T>(values: readonly T[], fallback: T) => values.length > 1 || values[0] !== fallback;

/** llama-bench's markdown_printer::print_header column rules, for the settings llama-oci bench takes. */
export function markdownColumns(backend: string, grid: BenchGrid): Column[] {
  const cpu = isCpuBackend(backend);
  const columns: Column[] = ["model", "size", "params", "backend"];
  if (!cpu) columns.push("n_gpu_layers");
  if (different(grid.nThreads, grid.defaultThreads) || cpu) columns.push("n_threads");
  if (different(grid.nBatch, 2048)) columns.push("n_batch");
  if (different(grid.nUbatch, 512)) columns.push("n_ubatch");
  if (different(grid.flashAttn, "auto")) columns.push("flash_attn");
  columns.push("test", "t/s");
  return columns;
}

/** printf("%*s") semantics: width counts bytes, a negative width pads on the right. */
function pad(value: string, width: number): string {
  const fill = " ".repeat(Math.max(0, Math.abs(width) - Buffer.byteLength(value)));
  return width < 0 ? value + fill : fill + value;
}

export function formatSize(bytes: number): string {
  return bytes < 1024 ** 3 ? `${(bytes / 1024 / 1024).toFixed(2)} MiB` : `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
}

export function formatParams(params: number): string {
  return params < 1e9 ? `${(params / 1e6).toFixed(2)} M` : `${(params / 1e9).toFixed(2)} B`;
}

export function testName(test: Pick<BenchTest, "nPrompt" | "nGen">): string {
  if (test.nPrompt > 0 && test.nGen === 0) return `pp${test.nPrompt}`;
  if (test.nGen > 0 && test.nPrompt === 0) return `tg${test.nGen}`;
  return `pp${test.nPrompt}+tg${test.nGen}`;
}

function markdownPrinter(model: BenchModel, grid: BenchGrid): BenchPrinter {
  const backend = backendName(model.system.backends);
  const columns = markdownColumns(backend, grid);
  return {
    header: () => {
      const titles = columns.map((column) => ` ${pad(TITLE[column], WIDTH[column])} |`).join("");
      const rules = columns.map((column) => ` ${"-".repeat(Math.abs(WIDTH[column]) - 1)}${WIDTH[column] > 0 ? ":" : "-"} |`).join("");
      return `|${titles}\n|${rules}\n`;
    },
    row: (test) => {
      const values = rowValues(model, test);
      const ts = samplesTs(test);
      const cells = columns.map((column) => {
        let value: string;
        switch (column) {
          case "model":
            value = model.modelType;
            break;
          case "size":
            value = formatSize(model.modelSize);
            break;
          case "params":
            value = formatParams(model.modelParams);
            break;
          case "backend":
            value = backend;
            break;
          case "test":
            value = testName(test);
            break;
          case "t/s":
            value = `${mean(ts).toFixed(2)} ± ${stddev(ts).toFixed(2)}`;
            break;
          default:
            value = values[column];
        }
        // llama-bench widens t/s by one byte for the two-byte "±".
        return ` ${pad(value, WIDTH[column] + (column === "t/s" ? 1 : 0))} |`;
      });
      return `|${cells.join("")}\n`;
    },
    footer: () => {
      const { commit, number } = buildInfo(model.system.llamaCppVersion);
      return `\nbuild: ${commit} (${number})\n`;
    },
  };
}

/** llama-bench's get_cmd_params_instances order: settings outermost (ngl, b, ub, fa, t), then pp, tg, pp+tg tests. */
export function benchGrid(grid: BenchGrid): BenchInstance[] {
  const instances: BenchInstance[] = [];
  for (const nGpuLayers of grid.nGpuLayers)
    for (const nBatch of grid.nBatch)
      for (const nUbatch of grid.nUbatch)
        for (const flashAttn of grid.flashAttn)
          for (const nThreads of grid.nThreads) {
            const base = { nBatch, nUbatch, nThreads, nGpuLayers, flashAttn };
            for (const nPrompt of grid.nPrompt) if (nPrompt > 0) instances.push({ ...base, nPrompt, nGen: 0 });
            for (const nGen of grid.nGen) if (nGen > 0) instances.push({ ...base, nPrompt: 0, nGen });
            for (const [nPrompt, nGen] of grid.nPg) if (nPrompt > 0 || nGen > 0) instances.push({ ...base, nPrompt, nGen });
          }
  return instances;
}
