#!/usr/bin/env node
// Inference benchmark (npm run bench:inference): prompt processing (pp) and generation (tg) tokens per second of a
// SmolLM2-135M-shaped Q4_0 model through `llama-oci bench`, llama.cpp's llama-bench (same pinned source) and
// node-llama-cpp@3.21.1 (installed in this folder only), alternating the three tools round by round with the same
// threads; then time-to-first-token of a cached `llama.fromDocker` against `llama.loadModel` on the same file; then
// the per-token cost of JSON-schema constrained generation against unconstrained generation (same model, prompt,
// sampling settings and seed, alternating), with the grammar checked lazily (the default) and grammar-first.
//
//   node bench/inference/run.mjs [--rounds 3] [-r 3] [-t <threads>] [-p 512] [-n 128] [--ttft-runs 10]
//                                [--grammar-runs 12] [--grammar-tokens 128]
//                                [--skip-throughput] [--skip-ttft] [--skip-grammar] [--skip-node-llama-cpp]
//
// Each tool runs in a fresh process per round and does one warm-up run per test and -r timed runs; the table
// pools the timed runs of all rounds (mean ± sample stddev of tokens per second, as llama-bench computes it).
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { missingRegistryMessage, pushGgufModel, registryAvailable, startLocalRegistry } from "../../scripts/local-registry.mjs";
import { ensureBenchModel, root } from "./make-model.mjs";

const NLC_VERSION = "3.21.1";
const VOCAB_SIZE = 49152;
/** The npm package with node-llama-cpp's prebuilt CPU binaries for this machine (its optionalDependencies). */
const NLC_PREBUILT = {
  "linux-x64": "linux-x64",
  "linux-arm64": "linux-arm64",
  "darwin-arm64": "mac-arm64-metal",
  "darwin-x64": "mac-x64",
  "win32-x64": "win-x64",
  "win32-arm64": "win-arm64",
}[`${process.platform}-${process.arch}`];

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    repetitions: { type: "string", short: "r", default: "3" },
    threads: { type: "string", short: "t", default: String(availableParallelism()) },
    "n-prompt": { type: "string", short: "p", default: "512" },
    "n-gen": { type: "string", short: "n", default: "128" },
    "ttft-runs": { type: "string", default: "10" },
    "grammar-runs": { type: "string", default: "12" },
    "grammar-tokens": { type: "string", default: "128" },
    "skip-grammar": { type: "boolean", default: false },
    "skip-throughput": { type: "boolean", default: false },
    "skip-ttft": { type: "boolean", default: false },
    "skip-node-llama-cpp": { type: "boolean", default: false },
  },
});
const rounds = Number(values.rounds);
const reps = Number(values.repetitions);
const threads = Number(values.threads);
const nPrompt = Number(values["n-prompt"]);
const nGen = Number(values["n-gen"]);
const ttftRuns = Number(values["ttft-runs"]);
const grammarRuns = Number(values["grammar-runs"]);
const grammarTokens = Number(values["grammar-tokens"]);
/** node-llama-cpp's binary kind (prebuilt or local build), logged once. */
let reportedBinary;

const llamaBench = join(root, "build", "bin", "llama-bench");
const cli = join(root, "bin", "llama-oci.js");
if (!existsSync(join(root, "dist", "esm", "index.js"))) execFileSync("npm", ["run", "build", "--silent"], { cwd: root, stdio: "inherit" });
if (!existsSync(join(root, "build", "Release", "llama_oci.node"))) fail("the native addon is not built: run 'npm install' (or 'npm run build:native')");

const modelPath = await ensureBenchModel();
log(`bench: model ${modelPath}`);
log(`bench: ${cpus()[0]?.model ?? "unknown CPU"}, ${availableParallelism()} CPUs, ${threads} threads for every tool`);

if (!values["skip-throughput"]) await throughput();
if (!values["skip-ttft"]) await timeToFirstToken();
if (!values["skip-grammar"]) await grammarOverhead();

async function throughput() {
  if (!existsSync(llamaBench)) fail(`${llamaBench} is missing: run 'node scripts/build-native.mjs --tools'`);
  const tools = [
    { name: "llama-oci bench", run: runOurs },
    { name: "llama-bench", run: runLlamaBench },
  ];
  if (!values["skip-node-llama-cpp"]) {
    ensureNodeLlamaCpp();
    tools.push({ name: `node-llama-cpp ${NLC_VERSION}`, run: runNodeLlamaCpp });
  }
  const samples = new Map(tools.map((tool) => [tool.name, { pp: [], tg: [] }]));
  /** Per round and tool, the mean t/s: ratios within a round are immune to load that drifts between rounds. */
  const perRound = [];
  for (let round = 0; round < rounds; round++) {
    // Rotate the order so that no tool always runs first (a cold page cache) or right after another one.
    const order = tools.map((_, i) => tools[(i + round) % tools.length]);
    perRound.push({});
    for (const tool of order) {
      const result = tool.run();
      perRound[round][tool.name] = { pp: stats(ts(result.pp, nPrompt)).mean, tg: stats(ts(result.tg, nGen)).mean };
      samples.get(tool.name).pp.push(...result.pp);
      samples.get(tool.name).tg.push(...result.tg);
      log(`bench: round ${round + 1}/${rounds} ${tool.name}: pp${nPrompt} ${fmt(stats(ts(result.pp, nPrompt)))}, tg${nGen} ${fmt(stats(ts(result.tg, nGen)))}`);
    }
  }

  const rows = tools.map((tool) => {
    const s = samples.get(tool.name);
    return { name: tool.name, pp: stats(ts(s.pp, nPrompt)), tg: stats(ts(s.tg, nGen)), runs: s.pp.length };
  });
  console.log(`\nSmolLM2-135M-shaped llama, Q4_0 (random weights), CPU, ${threads} threads, ${rounds} rounds x ${reps} runs per tool\n`);
  console.log(`| tool | pp${nPrompt} t/s | tg${nGen} t/s |`);
  console.log("|---|---:|---:|");
  for (const row of rows) console.log(`| ${row.name} | ${fmt(row.pp)} | ${fmt(row.tg)} |`);
  const [ours, reference, other] = rows;
  const ratios = (a, b, test) => perRound.map((r) => (r[a.name][test] / r[b.name][test]).toFixed(3)).join(", ");
  console.log("");
  console.log(`llama-oci / llama-bench:    pp ${(ours.pp.mean / reference.pp.mean).toFixed(3)}, tg ${(ours.tg.mean / reference.tg.mean).toFixed(3)}   (target >= 0.97)`);
  console.log(`  per round:                pp ${ratios(ours, reference, "pp")}; tg ${ratios(ours, reference, "tg")}`);
  if (other) {
    console.log(`llama-oci / node-llama-cpp: pp ${(ours.pp.mean / other.pp.mean).toFixed(3)}, tg ${(ours.tg.mean / other.tg.mean).toFixed(3)}   (target > 1)`);
    console.log(`  per round:                pp ${ratios(ours, other, "pp")}; tg ${ratios(ours, other, "tg")}`);
  }
}

function runOurs() {
  const out = run(process.execPath, [cli, "bench", "-m", modelPath, "-p", String(nPrompt), "-n", String(nGen), "-r", String(reps), "-t", String(threads), "--json"]);
  return fromBenchJson(out, "llama-oci bench");
}

function runLlamaBench() {
  const out = run(llamaBench, ["-m", modelPath, "-p", String(nPrompt), "-n", String(nGen), "-r", String(reps), "-t", String(threads), "-o", "json"]);
  return fromBenchJson(out, "llama-bench");
}

function runNodeLlamaCpp() {
  const out = run(process.execPath, [join(root, "bench", "inference", "nlc-bench.mjs"), modelPath, String(threads), String(nPrompt), String(nGen), String(reps), String(VOCAB_SIZE)]);
  const result = JSON.parse(out.trim().split("\n").at(-1));
  if (result.binary.buildType !== reportedBinary) {
    reportedBinary = result.binary.buildType;
    log(`bench: node-llama-cpp uses its ${result.binary.buildType} binary (llama.cpp ${result.binary.llamaCppRelease}, gpu: ${result.binary.gpu})`);
  }
  return result;
}

/** samples_ns of the pp and tg records of llama-bench's JSON, which `llama-oci bench --json` mirrors. */
function fromBenchJson(stdout, tool) {
  const start = stdout.indexOf("[");
  const end = stdout.lastIndexOf("]");
  if (start < 0 || end < start) throw new Error(`${tool} printed no JSON array:\n${stdout.slice(0, 2000)}`);
  const records = JSON.parse(stdout.slice(start, end + 1));
  const find = (p, n) => records.find((r) => r.n_prompt === p && r.n_gen === n)?.samples_ns ?? [];
  return { pp: nPrompt > 0 ? find(nPrompt, 0) : [], tg: nGen > 0 ? find(0, nGen) : [] };
}

function ensureNodeLlamaCpp() {
  const here = join(root, "bench", "inference");
  const installed = existsSync(join(here, "node_modules", "node-llama-cpp", "package.json"));
  const prebuilt = NLC_PREBUILT === undefined || existsSync(join(here, "node_modules", "@node-llama-cpp", NLC_PREBUILT, "package.json"));
  if (installed && prebuilt) return;
  // Only the CPU prebuilt for this platform: --omit=optional skips the CUDA/Vulkan binaries (~600 MB), then the one
  // we measure is added by name. NODE_LLAMA_CPP_SKIP_DOWNLOAD keeps its postinstall (where npm runs it) from
  // fetching llama.cpp from GitHub to compile it.
  const env = { ...process.env, NODE_LLAMA_CPP_SKIP_DOWNLOAD: "true" };
  log(`bench: installing node-llama-cpp@${NLC_VERSION} into bench/inference/node_modules`);
  execFileSync("npm", ["install", "--omit=optional", "--no-audit", "--no-fund"], { cwd: here, stdio: "inherit", env });
  if (NLC_PREBUILT !== undefined) {
    execFileSync("npm", ["install", "--no-save", "--omit=optional", "--no-audit", "--no-fund", `@node-llama-cpp/${NLC_PREBUILT}@${NLC_VERSION}`], {
      cwd: here,
      stdio: "inherit",
      env,
    });
  }
}

async function timeToFirstToken() {
  if (!registryAvailable()) fail(missingRegistryMessage);
  const { llama, pull } = await import("../../dist/esm/index.js");
  const registry = await startLocalRegistry();
  const cacheDir = mkdtempSync(join(tmpdir(), "llama-oci-bench-cache-"));
  try {
    await pushGgufModel(registry.url, "bench/smollm2-shaped", "Q4_0", modelPath, { quantization: "Q4_0", parameters: "134.52M" });
    const reference = `${registry.host}/bench/smollm2-shaped:Q4_0`;
    const pulled = await pull(reference, { cacheDir });
    const options = { cacheDir, gpuLayers: 0, threads, contextSize: 512 };
    // Both load the same cached file; the difference is fromDocker's registry round trip and cache lookup.
    const variants = {
      loadModel: () => llama.loadModel(pulled.path, options),
      fromDocker: () => llama.fromDocker(reference, options),
    };
    const firstToken = async (open) => {
      const start = process.hrtime.bigint();
      const model = await open();
      try {
        await model.complete("Once upon a time", { maxTokens: 1, temperature: 0 });
        return Number(process.hrtime.bigint() - start) / 1e6;
      } finally {
        await model.dispose();
      }
    };
    await firstToken(variants.loadModel);
    await firstToken(variants.fromDocker);
    const times = { loadModel: [], fromDocker: [] };
    const differences = [];
    for (let i = 0; i < ttftRuns; i++) {
      // Alternate which goes first within each pair.
      const order = i % 2 === 0 ? ["loadModel", "fromDocker"] : ["fromDocker", "loadModel"];
      const pair = {};
      for (const name of order) pair[name] = await firstToken(variants[name]);
      times.loadModel.push(pair.loadModel);
      times.fromDocker.push(pair.fromDocker);
      differences.push(pair.fromDocker - pair.loadModel);
    }
    console.log(`\nTime to first token (open the model + complete(maxTokens: 1)), in-process, dispose between, ${ttftRuns} alternating pairs\n`);
    console.log("| | median | min | max |");
    console.log("|---|---:|---:|---:|");
    for (const name of ["loadModel", "fromDocker"]) {
      console.log(`| llama.${name}${name === "fromDocker" ? " (cached, local registry)" : " (same file)"} | ${ms(median(times[name]))} | ${ms(Math.min(...times[name]))} | ${ms(Math.max(...times[name]))} |`);
    }
    console.log(`\nfromDocker - loadModel, median of the paired differences: ${ms(median(differences))}   (target < 50 ms)`);
  } finally {
    await registry.stop();
    rmSync(cacheDir, { recursive: true, force: true });
  }
}

/**
 * Per generated token, JSON-schema constrained generation against unconstrained generation: one in-process context,
 * the same prompt, sampling settings and seed for the variants of a round, their order rotating round by round.
 * Time per token is generateMs / generatedTokens of each generation (the prompt is timed apart). "lazy" is what
 * GenerationOptions.jsonSchema does (common_sampler's check of the sampled token, the whole vocabulary constrained
 * only when it is rejected); "grammar first" constrains every candidate at every token. The model has random
 * weights, so it never tends towards JSON by itself: outside strings almost every first choice is rejected, inside
 * them almost every one is accepted.
 */
async function grammarOverhead() {
  const { llama } = await import("../../dist/esm/index.js");
  const { getBinding } = await import("../../dist/esm/llama/binding.js");
  const model = await llama.loadModel(modelPath, { gpuLayers: 0, threads, threadsBatch: threads, contextSize: 1024 });
  try {
    const binding = getBinding();
    const native = await binding.loadModel(modelPath, { gpuLayers: 0, useMmap: true, useMlock: false, vocabOnly: false }, null, binding.createAbortFlag());
    const context = await native.createContext({ contextSize: 1024, batchSize: 512, ubatchSize: 512, threads, threadsBatch: threads, flashAttention: "auto", embeddings: false, pooling: "unspecified" });
    const schema = {
      type: "object",
      properties: { title: { type: "string" }, year: { type: "integer" }, tags: { type: "array", items: { type: "string" } }, summary: { type: "string" } },
      required: ["title", "year", "tags", "summary"],
    };
    const grammar = model.jsonSchemaToGrammar(schema);
    const prompt = await model.tokenize("Describe a film as JSON with a title, its year, some tags and a summary:\n");
    const sampling = (seed, extra) => ({
      temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05, repeatPenalty: 1, repeatLastN: 64, frequencyPenalty: 0, presencePenalty: 0, seed, grammar: null, grammarRoot: "root", ...extra,
    });
    const variants = [
      { name: "unconstrained", extra: {} },
      { name: "JSON schema, lazy (default)", extra: { grammar } },
      { name: "JSON schema, grammar first", extra: { grammar, grammarFirst: true } },
      { name: "JSON schema, lazy, every token checked on rejection", extra: { grammar, grammarTree: false } },
    ];
    const generate = (seed, extra) =>
      context.generate({ tokens: prompt, maxTokens: grammarTokens, sampling: sampling(seed, extra), stop: [], ignoreEos: false, abort: binding.createAbortFlag(), onText: () => {} });
    await generate(1, {});
    await generate(1, { grammar });
    const perToken = new Map(variants.map((v) => [v.name, []]));
    const tokens = new Map(variants.map((v) => [v.name, []]));
    const rejections = new Map(variants.map((v) => [v.name, []]));
    const ratios = { lazy: [], first: [] };
    for (let round = 0; round < grammarRuns; round++) {
      const seed = 1000 + round;
      const order = variants.map((_, i) => variants[(i + round) % variants.length]);
      const times = {};
      for (const variant of order) {
        const result = await generate(seed, variant.extra);
        if (result.generatedTokens === 0) continue;
        times[variant.name] = result.generateMs / result.generatedTokens;
        perToken.get(variant.name).push(times[variant.name]);
        tokens.get(variant.name).push(result.generatedTokens);
        rejections.get(variant.name).push(result.grammarResamples / result.generatedTokens);
      }
      ratios.lazy.push(times[variants[1].name] / times[variants[0].name]);
      ratios.first.push(times[variants[2].name] / times[variants[0].name]);
      log(`bench: grammar round ${round + 1}/${grammarRuns}: ${variants.map((v) => `${v.name} ${times[v.name]?.toFixed(2)} ms/token`).join(", ")}`);
    }
    console.log(`
Per-token time of generation, ${threads} threads, ${grammarRuns} rounds, up to ${grammarTokens} tokens, temperature 0.8, same seed per round
`);
    console.log("| variant | ms per token, median | mean ± sd | tokens per run | sampled token rejected |");
    console.log("|---|---:|---:|---:|---:|");
    for (const variant of variants) {
      const s = stats(perToken.get(variant.name));
      console.log(`| ${variant.name} | ${median(perToken.get(variant.name)).toFixed(3)} | ${s.mean.toFixed(3)} ± ${s.sd.toFixed(3)} | ${stats(tokens.get(variant.name)).mean.toFixed(1)} | ${(100 * stats(rejections.get(variant.name)).mean).toFixed(0)}% |`);
    }
    // Each round's variants run back to back, so the ratio within a round is the least affected by load that
    // drifts between rounds: its median is the headline.
    const base = median(perToken.get(variants[0].name));
    console.log("");
    console.log(`JSON schema (lazy) / unconstrained:          median of per-round ratios ${median(ratios.lazy).toFixed(3)}   (target <= 1.1); ratio of medians ${(median(perToken.get(variants[1].name)) / base).toFixed(3)}`);
    console.log(`  per round: ${ratios.lazy.map((r) => r.toFixed(3)).join(", ")}`);
    console.log(`JSON schema (grammar first) / unconstrained: median of per-round ratios ${median(ratios.first).toFixed(3)}; ratio of medians ${(median(perToken.get(variants[2].name)) / base).toFixed(3)}`);
    console.log(`  per round: ${ratios.first.map((r) => r.toFixed(3)).join(", ")}`);
    context.dispose();
    native.dispose();
  } finally {
    await model.dispose();
  }
}

function run(command, args) {
  const result = spawnSync(command, args, { cwd: root, encoding: "utf8", maxBuffer: 64 << 20 });
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(" ")} exited with ${result.status ?? result.signal}:\n${(result.stderr ?? "").slice(-4000)}`);
  }
  return result.stdout;
}

function ts(samplesNs, tokens) {
  return samplesNs.map((ns) => (1e9 * tokens) / ns);
}

function stats(values) {
  const n = values.length;
  const mean = n === 0 ? 0 : values.reduce((a, b) => a + b, 0) / n;
  const sd = n <= 1 ? 0 : Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1));
  return { mean, sd };
}

function fmt({ mean, sd }) {
  return `${mean.toFixed(2)} ± ${sd.toFixed(2)}`;
}

function median(list) {
  const sorted = [...list].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function ms(value) {
  return `${value.toFixed(1)} ms`;
}

function log(line) {
  process.stderr.write(`${line}\n`);
}

function fail(message) {
  log(`bench: ${message}`);
  process.exit(1);
}
