// `llama-oci run`, `chat` and `bench` as a user runs them: separate processes (bin/llama-oci.js over dist/) with
// the real addon, a tiny GGUF pushed to a real docker-registry, HOME and LLAMA_CACHE in temp dirs. The expected
// text comes from the library in this process (greedy decoding is deterministic), so the CLI must print exactly it.
import { execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { llama } from "../src/index.js";
import { dockerV01 } from "./helpers/artifacts.js";
import { cliEnv, CLI_PATH, describeRun, lines, ROOT_DIR, runCli, spawnCli, type CliResult } from "./helpers/cli.js";
import { pushArtifact } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { DEFAULT_TINY_VOCAB as VOCAB, makeTinyLlama } from "./helpers/tiny-model.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const exec = promisify(execFile);

const CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '</s>\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";
const PROMPT = "Once upon a time";

let registry: RegistryHandle;
let workDir: string;
let modelPath: string;
let reference: string;
let expected: string;
let dirCount = 0;

function env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const base = join(workDir, `run-${++dirCount}`);
  return cliEnv(join(base, "home"), join(base, "cache"), extra);
}

function expectOneErrorLine(run: CliResult, pattern: RegExp): void {
  const errorLines = lines(run.stderr).filter((line) => line.startsWith("error:"));
  expect(errorLines, describeRun(run)).toHaveLength(1);
  expect(errorLines[0]).toMatch(pattern);
}

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-cli-run");
  registry = await startRegistry();
  modelPath = join(workDir, "tiny.gguf");
  await makeTinyLlama(modelPath, { vocabFrom: VOCAB, seed: 11, chatTemplate: CHAT_TEMPLATE, contextLength: 512 });
  await pushArtifact({ registryUrl: registry.url, repository: "ai/tiny-cli" }, "F32", dockerV01({ ggufs: [await readFile(modelPath)] }));
  reference = `${registry.host}/ai/tiny-cli:F32`;
  const model = await llama.loadModel(modelPath, { gpuLayers: 0 });
  try {
    expected = await model.complete(PROMPT, { temperature: 0, maxTokens: 12 });
  } finally {
    await model.dispose();
  }
});

afterAll(async () => {
  await registry?.stop();
  if (workDir) await removeDir(workDir);
});

describe("run", () => {
  test("pulls the reference, streams the greedy completion to stdout and prints timings on stderr", async () => {
    const run = await runCli(["run", reference, "-p", PROMPT, "-n", "12", "--temp", "0", "-ngl", "0", "-t", "2"], { env: env() });
    expect(run.exitCode, describeRun(run)).toBe(0);
    expect(run.stdout).toBe(`${expected}\n`);
    expect(run.stderr).toMatch(/Pulling .*ai\/tiny-cli:F32/);
    expect(run.stderr).toMatch(/^prompt: \d+ tokens in [\d.]+ ms \([\d.]+ t\/s\), generation: \d+ tokens in [\d.]+ ms \([\d.]+ t\/s\)$/m);
    expect(run.stderr).not.toMatch(/llama_model_load|load_tensors/);
  });

  test("llama.cpp-style -dr and -m select the model; -q prints nothing on stderr", async () => {
    const viaDr = await runCli(["run", "-dr", reference, "-p", PROMPT, "-n", "12", "--temp", "0", "-q"], { env: env() });
    expect(viaDr.exitCode, describeRun(viaDr)).toBe(0);
    expect(viaDr.stdout).toBe(`${expected}\n`);
    expect(viaDr.stderr).toBe("");

    const viaFile = await runCli(["run", "-m", modelPath, "--prompt", PROMPT, "--n-predict", "12", "--temp", "0", "-c", "256", "-q"], { env: env() });
    expect(viaFile.exitCode, describeRun(viaFile)).toBe(0);
    expect(viaFile.stdout).toBe(`${expected}\n`);
  });

  test("--verify re-hashes the cached model: a corrupted blob is downloaded again and the output is unchanged", async () => {
    const runEnv = env();
    const args = ["run", reference, "-p", PROMPT, "-n", "12", "--temp", "0", "-ngl", "0", "-t", "2", "-q"];
    const first = await runCli(args, { env: runEnv });
    expect(first.exitCode, describeRun(first)).toBe(0);
    // Flip bytes in the cached GGUF blob, keeping its size, so only a re-hash notices.
    const pulled = await runCli(["pull", reference, "--offline", "--json", "-q"], { env: runEnv });
    const file = (JSON.parse(pulled.stdout) as { files: { kind: string; path: string }[] }).files.find((f) => f.kind === "gguf")!;
    const bytes = await readFile(file.path);
    bytes.fill(0x55, bytes.length - 64);
    await writeFile(file.path, bytes);

    const verified = await runCli([...args.slice(0, -1), "--verify"], { env: runEnv });
    expect(verified.exitCode, describeRun(verified)).toBe(0);
    expect(verified.stderr).toMatch(/warning: cached model\.gguf is corrupt .* downloaded again/);
    expect(verified.stdout).toBe(`${expected}\n`);
  });

  test("-v shows llama.cpp's own log on stderr", async () => {
    const run = await runCli(["run", "-m", modelPath, "-p", PROMPT, "-n", "2", "--temp", "0", "-v"], { env: env() });
    expect(run.exitCode, describeRun(run)).toBe(0);
    expect(run.stderr).toMatch(/llama_|load_tensors|print_info/);
  });

  test("Ctrl+C stops the generation: partial text on stdout, exit code 130", async () => {
    const child = spawnCli(["run", "-m", modelPath, "-p", PROMPT, "-n", "100000", "-c", "8192", "--temp", "0", "-q"], { env: env() });
    const started = Date.now();
    while (child.output().stdout.length === 0 && Date.now() - started < 20_000) await new Promise((r) => setTimeout(r, 10));
    child.child.kill("SIGINT");
    const run = await child.result;
    expect(run.exitCode, describeRun(run)).toBe(130);
    expect(run.stdout.length).toBeGreaterThan(0);
    expect(run.stdout.endsWith("\n")).toBe(true);
  });

  test("usage and model errors exit non-zero with one error line", async () => {
    const noPrompt = await runCli(["run", "-m", modelPath], { env: env() });
    expect(noPrompt.exitCode).toBe(2);
    expectOneErrorLine(noPrompt, /missing the prompt/);

    const noModel = await runCli(["run", "-p", "hi"], { env: env() });
    expect(noModel.exitCode).toBe(2);
    expectOneErrorLine(noModel, /needs a model/);

    const missing = await runCli(["run", "-m", join(workDir, "missing.gguf"), "-p", "hi"], { env: env() });
    expect(missing.exitCode).toBe(1);
    expectOneErrorLine(missing, /^error: model file not found: .*missing\.gguf$/);

    const truncated = join(workDir, "truncated.gguf");
    const bytes = await readFile(modelPath);
    await writeFile(truncated, bytes.subarray(0, bytes.length - 4096));
    const broken = await runCli(["run", "-m", truncated, "-p", "hi"], { env: env() });
    expect(broken.exitCode).toBe(1);
    expectOneErrorLine(broken, /^error: cannot load model .*truncated\.gguf/);
    expect(broken.stdout).toBe("");

    const noAddon = await runCli(["run", "-m", modelPath, "-p", "hi"], { env: env({ LLAMA_OCI_ADDON: join(workDir, "none.node") }) });
    expect(noAddon.exitCode).toBe(1);
    expectOneErrorLine(noAddon, /addon is not built .*npm run build:native/);
  });
});

describe("chat", () => {
  test("with piped stdin, each line is a message and each answer is printed on its own line", async () => {
    const model = await llama.loadModel(modelPath, { gpuLayers: 0 });
    const chat = model.createChat({ systemPrompt: "Be brief." });
    const answers = [(await chat.send("Hello", { temperature: 0, maxTokens: 6 })).content, (await chat.send("And then?", { temperature: 0, maxTokens: 6 })).content];
    await model.dispose();

    const child = spawn(process.execPath, [CLI_PATH, "chat", "-m", modelPath, "--system", "Be brief.", "--temp", "0", "-n", "6", "-q"], {
      env: env(),
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.stdin.end("Hello\n\nAnd then?\n");
    const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
    expect(code, `stdout:\n${stdout}\nstderr:\n${stderr}`).toBe(0);
    expect(stdout).toBe(`${answers[0]!}\n${answers[1]!}\n`);
  });
});

describe("bench", () => {
  test("--json prints llama-bench style records with tokens per second", async () => {
    const run = await runCli(["bench", "-m", modelPath, "-p", "32", "-n", "8", "-r", "2", "-t", "2", "--json"], { env: env() });
    expect(run.exitCode, describeRun(run)).toBe(0);
    const records = JSON.parse(run.stdout) as Record<string, unknown>[];
    expect(records.map((r) => [r.n_prompt, r.n_gen])).toEqual([
      [32, 0],
      [0, 8],
    ]);
    for (const record of records) {
      expect(record.n_threads).toBe(2);
      expect(record.model_type).toMatch(/^llama /);
      expect(record.model_size).toBeGreaterThan(0);
      expect(record.samples_ts).toHaveLength(2);
      expect(record.avg_ts).toBeGreaterThan(0);
      const samples = record.samples_ts as number[];
      expect(record.avg_ts).toBeCloseTo((samples[0]! + samples[1]!) / 2, 6);
    }
  });

  test("the same grid through llama-bench gives the same rows and the same field names, in every output format", async () => {
    const grid = ["-p", "8", "-n", "4", "-pg", "8,2", "-t", "1,2", "-b", "2048,64", "-fa", "off", "-r", "1"];
    const llamaBench = join(ROOT_DIR, "build", "bin", "llama-bench");
    const theirs = async (format: string) => (await exec(llamaBench, ["-m", modelPath, ...grid, "-o", format], { maxBuffer: 16 << 20 })).stdout;
    const ours = async (format: string) => {
      const run = await runCli(["bench", "-m", modelPath, ...grid, "-o", format], { env: env() });
      expect(run.exitCode, describeRun(run)).toBe(0);
      return run.stdout;
    };
    const key = (r: Record<string, unknown>) => [r.n_prompt, r.n_gen, r.n_threads, r.n_batch, r.n_ubatch, r.flash_attn, r.n_gpu_layers].join("/");

    const theirJson = JSON.parse(await theirs("json")) as Record<string, unknown>[];
    const ourJson = JSON.parse(await ours("json")) as Record<string, unknown>[];
    expect(ourJson.map(key)).toEqual(theirJson.map(key));
    expect(ourJson).toHaveLength(2 * 2 * 3);
    for (const [i, record] of ourJson.entries()) {
      expect(Object.keys(record)).toEqual(Object.keys(theirJson[i]!));
      for (const [field, value] of Object.entries(record)) expect(typeof value, field).toBe(typeof theirJson[i]![field]);
    }

    const theirLines = (await theirs("jsonl")).trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    const ourLines = (await ours("jsonl")).trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(ourLines.map(key)).toEqual(theirLines.map(key));
    expect(Object.keys(ourLines[0]!)).toEqual(Object.keys(theirLines[0]!));

    const theirCsv = (await theirs("csv")).trim().split("\n");
    const ourCsv = (await ours("csv")).trim().split("\n");
    expect(ourCsv[0]).toBe(theirCsv[0]);
    expect(ourCsv).toHaveLength(theirCsv.length);

    // The table: the same columns (chosen by the same rules) and the same test column, row by row.
    const table = (text: string) => text.split("\n").filter((l) => l.startsWith("|"));
    const theirTable = table(await theirs("md"));
    const ourTable = table(await ours("md"));
    expect(ourTable[0]).toBe(theirTable[0]);
    expect(ourTable[1]).toBe(theirTable[1]);
    const cells = (row: string) => row.split("|").slice(1, -1).map((c) => c.trim());
    const testColumn = cells(theirTable[0]!).indexOf("test");
    expect(ourTable.slice(2).map((row) => cells(row).slice(3, testColumn + 1))).toEqual(theirTable.slice(2).map((row) => cells(row).slice(3, testColumn + 1)));
  });

  test("prints llama-bench's markdown table", async () => {
    const run = await runCli(["bench", "-m", modelPath, "-p", "16", "-n", "4", "-r", "1", "-t", "1", "-ngl", "0"], { env: env() });
    expect(run.exitCode, describeRun(run)).toBe(0);
    const out = lines(run.stdout);
    expect(out[0]).toBe("| model                          |       size |     params | backend    | threads |            test |                  t/s |");
    expect(out[1]).toBe("| ------------------------------ | ---------: | ---------: | ---------- | ------: | --------------: | -------------------: |");
    expect(out[2]).toMatch(/^\| llama .{24,}\| +\d+\.\d\d MiB \| +\d+\.\d\d M \| CPU +\| +1 \| +pp16 \| +\d+\.\d\d ± \d+\.\d\d \|$/);
    expect(out[3]).toMatch(/\| +tg4 \| +\d+\.\d\d ± \d+\.\d\d \|$/);
    expect(out[4]).toBe("");
    expect(out[5]).toMatch(/^build: [0-9a-f]{7,} \(\d+\)$/);
  });
});
