/**
 * Formats `llama-oci bench` results exactly as llama.cpp's llama-bench does (tools/llama-bench/llama-bench.cpp):
 * the markdown table with its column widths, size in MiB/GiB, parameters in M/B, "mean ± stddev" tokens per
 * second, and a JSON record per test with llama-bench's field names, so scripts can compare the two directly.
 */
import type { NativeSystemInfo } from "../llama/native-types.js";

export interface BenchTest {
  nPrompt: number;
  nGen: number;
  /** Wall time of each repetition, in nanoseconds. */
  samplesNs: number[];
}

export interface BenchSetup {
  modelFilename: string;
  /** The reference the model was pulled by, if it was. */
  modelReference?: string;
  /** llama_model_desc, e.g. "llama 135M Q4_0". */
  modelType: string;
  modelSize: number;
  modelParams: number;
  /** The backend column: non-CPU backends joined by ",", or "CPU". */
  backend: string;
  gpuLayers: number;
  threads: number;
  batchSize: number;
  ubatchSize: number;
  flashAttention: string;
  /** Show the threads column on a GPU backend too (llama-bench does when -t was given). */
  threadsGiven: boolean;
  system: Pick<NativeSystemInfo, "devices" | "llamaCppVersion" | "backends">;
}

type Field = "model" | "size" | "params" | "backend" | "n_gpu_layers" | "n_threads" | "test" | "t/s";

const WIDTH: Record<Field, number> = {
  model: -30,
  size: 10,
  params: 10,
  backend: -10,
  n_gpu_layers: 3,
  n_threads: 7,
  test: 15,
  "t/s": 20,
};

const TITLE: Record<Field, string> = {
  model: "model",
  size: "size",
  params: "params",
  backend: "backend",
  n_gpu_layers: "ngl",
  n_threads: "threads",
  test: "test",
  "t/s": "t/s",
};

/** llama-bench's backend name: every registered backend but CPU (and RPC), or "CPU" when there is none. */
export function backendName(backends: readonly string[]): string {
  const others = backends.filter((name) => name !== "CPU" && !name.startsWith("RPC"));
  return others.length > 0 ? others.join(",") : "CPU";
}

function isCpuBackend(backend: string): boolean {
  return backend.includes("CPU") || backend.includes("BLAS") || backend.includes("ZenDNN");
}

export function benchFields(setup: Pick<BenchSetup, "backend" | "threadsGiven">): Field[] {
  const cpu = isCpuBackend(setup.backend);
  const fields: Field[] = ["model", "size", "params", "backend"];
  if (!cpu) fields.push("n_gpu_layers");
  if (cpu || setup.threadsGiven) fields.push("n_threads");
  fields.push("test", "t/s");
  return fields;
}

/** printf("%*s") semantics: width counts bytes, a negative width pads on the right. */
function pad(value: string, width: number): string {
  const fill = " ".repeat(Math.max(0, Math.abs(width) - Buffer.byteLength(value)));
  return width < 0 ? value + fill : fill + value;
}

export function formatHeader(fields: readonly Field[]): string {
  const titles = fields.map((field) => ` ${pad(TITLE[field], WIDTH[field])} |`).join("");
  const rules = fields
    .map((field) => {
      const width = WIDTH[field];
      return ` ${"-".repeat(Math.abs(width) - 1)}${width > 0 ? ":" : "-"} |`;
    })
    .join("");
  return `|${titles}\n|${rules}\n`;
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

/** Tokens per second of each sample. */
export function samplesTs(test: BenchTest): number[] {
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

export function formatRow(fields: readonly Field[], setup: BenchSetup, test: BenchTest): string {
  const ts = samplesTs(test);
  const cells = fields.map((field) => {
    let value: string;
    switch (field) {
      case "model":
        value = setup.modelType;
        break;
      case "size":
        value = formatSize(setup.modelSize);
        break;
      case "params":
        value = formatParams(setup.modelParams);
        break;
      case "backend":
        value = setup.backend;
        break;
      case "n_gpu_layers":
        value = String(setup.gpuLayers);
        break;
      case "n_threads":
        value = String(setup.threads);
        break;
      case "test":
        value = testName(test);
        break;
      case "t/s":
        value = `${mean(ts).toFixed(2)} ± ${stddev(ts).toFixed(2)}`;
        break;
    }
    // llama-bench widens t/s by one byte for the two-byte "±".
    return ` ${pad(value, WIDTH[field] + (field === "t/s" ? 1 : 0))} |`;
  });
  return `|${cells.join("")}\n`;
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

export function formatFooter(version: string): string {
  const { commit, number } = buildInfo(version);
  return `\nbuild: ${commit} (${number})\n`;
}

/** One test as llama-bench's JSON printer writes it (same field names), plus our "test" name. */
export function benchJson(setup: BenchSetup, test: BenchTest, testTime: string): Record<string, unknown> {
  const ts = samplesTs(test);
  const { commit, number } = buildInfo(setup.system.llamaCppVersion);
  const devices = setup.system.devices;
  return {
    build_commit: commit,
    build_number: number,
    cpu_info: devices.filter((d) => d.type === "cpu" || d.type === "accel").map((d) => d.description).join(", "),
    gpu_info: devices.filter((d) => d.type === "gpu" || d.type === "igpu").map((d) => d.description).join(", "),
    backends: setup.backend,
    model_filename: setup.modelFilename,
    ...(setup.modelReference === undefined ? {} : { model_reference: setup.modelReference }),
    model_type: setup.modelType,
    model_size: setup.modelSize,
    model_n_params: setup.modelParams,
    n_batch: setup.batchSize,
    n_ubatch: setup.ubatchSize,
    n_threads: setup.threads,
    n_gpu_layers: setup.gpuLayers,
    flash_attn: setup.flashAttention,
    test: testName(test),
    n_prompt: test.nPrompt,
    n_gen: test.nGen,
    test_time: testTime,
    avg_ns: Math.round(mean(test.samplesNs)),
    stddev_ns: Math.round(stddev(test.samplesNs)),
    avg_ts: mean(ts),
    stddev_ts: stddev(ts),
    samples_ns: test.samplesNs,
    samples_ts: ts,
  };
}
