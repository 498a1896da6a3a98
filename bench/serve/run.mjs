#!/usr/bin/env node
// Serving benchmark: `llama-oci serve` against llama.cpp's own `llama-server` (same pinned source), same model (the
// SmolLM2-135M-shaped Q4_0 of bench/inference), same threads, same sequences (--parallel / -np) and the same
// context per sequence. For each K of --clients, both tools get a fresh server, and K concurrent streaming chat
// clients send requests (a shared ~100-token system prompt and a short unique user message, about 128 prompt tokens
// in all; 64 generated tokens with ignore_eos) back to back for --duration seconds to one server, then to the other,
// --rounds times, the order flipping every round. Reported: aggregate generated tokens per second (every piece the
// phase's requests streamed, over the time from the phase's start to the end of its last request: clients start
// requests until --duration is up, and the requests under way then run to their end), time to first token p50/p95,
// the server's peak RSS (VmHWM), and llama-oci / llama-server per K, over all rounds and as the median of the
// rounds' ratios. (Counting only the pieces streamed within the --duration window, as an earlier version did, rounds
// the result to whole waves of K requests: the next wave's prompts, which stream nothing, fill the window's end, and
// both servers then score K x --gen over the window.) Each phase's log line also gives what the server says of its
// own work (llama-server's `timings`) and the CPU time of each of its threads over the phase. Before the first
// round, K concurrent requests warm each fresh server up (every sequence's cells touched once), so neither tool's
// phase pays for its first allocations.
//
//   node bench/serve/run.mjs [--duration 12] [--clients 1,4,8] [--rounds 5] [-t <threads>] [--parallel <N>]
//                            [--ctx 512] [--gen 64] [--kv-unified] [--flash-attn auto|on|off] [--llama-server <path>]
//                            [--skip-llama-server]
//
// --parallel defaults to K (one sequence per client). llama-server's -c is the total over its slots, so it gets
// --ctx times the sequences; llama-oci's -c is per sequence. Both give each sequence its own --ctx cells (their
// default); --kv-unified runs both with one KV cache the sequences share instead (llama-server's -kvu). --flash-attn
// goes to both as -fa (default auto, both servers' default: on for the CPU).
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { availableParallelism, cpus } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { ensureBenchModel, root } from "../inference/make-model.mjs";

const { values } = parseArgs({
  options: {
    duration: { type: "string", default: "12" },
    clients: { type: "string", default: "1,4,8" },
    rounds: { type: "string", default: "5" },
    threads: { type: "string", short: "t", default: String(availableParallelism()) },
    parallel: { type: "string" },
    ctx: { type: "string", default: "512" },
    gen: { type: "string", default: "64" },
    "kv-unified": { type: "boolean", default: false },
    "flash-attn": { type: "string", default: "auto" },
    "llama-server": { type: "string" },
    "skip-llama-server": { type: "boolean", default: false },
  },
});
const durationMs = Number(values.duration) * 1000;
const clientCounts = values.clients.split(",").map(Number);
const rounds = Number(values.rounds);
const threads = Number(values.threads);
const ctx = Number(values.ctx);
const genTokens = Number(values.gen);
for (const [name, value] of Object.entries({ duration: durationMs, rounds, threads, ctx, gen: genTokens })) {
  if (!Number.isFinite(value) || value <= 0) fail(`--${name} must be a positive number`);
}
const flashAttn = values["flash-attn"];
if (!["on", "off", "auto"].includes(flashAttn)) fail("--flash-attn must be on, off or auto");
if (clientCounts.some((k) => !Number.isInteger(k) || k < 1)) fail("--clients must be a comma-separated list of positive integers");

const LLAMA_SERVER_HELP = `llama.cpp's server is not built by default (build/bin has llama-completion, llama-simple, llama-bench and
llama-quantize only). Build it from the same pinned source, then run this again:

  cmake -S deps/llama.cpp -B build/llama-server -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \\
        -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \\
        -DCMAKE_PROJECT_INCLUDE=$PWD/cmake/amx.cmake
  cmake --build build/llama-server --target llama-server --parallel
  cp build/llama-server/bin/llama-server build/bin/

(cmake/amx.cmake gives it the CPU flags the addon gets: without it, a CPU with Intel AMX runs llama.cpp's AMX
kernels, which crash in this release.) Or point --llama-server (or LLAMA_SERVER) at an existing binary of the same
llama.cpp release; or pass --skip-llama-server to measure llama-oci alone.`;

const cli = join(root, "bin", "llama-oci.js");
if (!existsSync(join(root, "dist", "esm", "cli", "main.js"))) fail("dist/ is not built: run 'npm run build'");
if (!existsSync(join(root, "build", "Release", "llama_oci.node"))) fail("the native addon is not built: run 'npm install' (or 'npm run build:native')");
const llamaServer = values["llama-server"] ?? process.env.LLAMA_SERVER ?? join(root, "build", "bin", "llama-server");
const withLlamaServer = !values["skip-llama-server"];
if (withLlamaServer && !existsSync(llamaServer)) fail(`${llamaServer} is missing.\n\n${LLAMA_SERVER_HELP}`);

const modelPath = await ensureBenchModel();
log(`bench: model ${modelPath}`);
log(`bench: ${cpus()[0]?.model ?? "unknown CPU"}, ${availableParallelism()} CPUs, ${threads} threads for both servers`);

// llama-server (this release) fails a request with a 500 ("does not match the expected Content-only format") when a
// generated piece ends in the middle of a UTF-8 character, which a random-weight model does now and then. Both
// servers get the same logit_bias banning the tokens that are not whole characters on their own.
const BANNED = await partialCharacterTokens(modelPath);
log(`bench: ${BANNED.length} tokens that are not whole UTF-8 characters banned on both servers (logit_bias)`);
const LOGIT_BIAS = Object.fromEntries(BANNED.map((id) => [String(id), -100]));

const SYSTEM = "You are a helpful assistant. Answer the question in a few sentences, plainly and accurately, and say so when you are not sure. ".repeat(3).trim();

const tools = [{ name: "llama-oci serve", start: startOurs }];
if (withLlamaServer) tools.push({ name: "llama-server", start: startLlamaServer });

// The servers still running when the benchmark ends early (fail() exits at once) go with it.
const children = new Set();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

// Numbers the requests of every phase apart, so no prompt repeats one that a server may still hold in its cache.
let requestCounter = 0;

const results = [];
for (const k of clientCounts) {
  const parallel = values.parallel === undefined ? k : Number(values.parallel);
  // Both servers run for the whole K (each idle while the other is measured: neither uses the CPU then), so the
  // phases can alternate often and a slow spell of this host lands on both tools rather than on one.
  const servers = new Map();
  const startWarm = async (tool) => {
    const server = await tool.start(parallel);
    await Promise.all(Array.from({ length: k }, (_, client) => chat(server.url, client, 0)));
    servers.set(tool.name, server);
  };
  try {
    for (const tool of tools) await startWarm(tool);
    for (let round = 0; round < rounds; round++) {
      const order = (k + round) % 2 === 0 ? tools : [...tools].reverse();
      for (const tool of order) {
        // A phase in which the server dropped a connection (llama-server does now and then at K >= 4) is run once
        // more on a fresh server, and said so; a second failure ends the benchmark.
        for (let attempt = 1; ; attempt++) {
          const server = servers.get(tool.name);
          const cpuBefore = threadCpu(server.pid);
          const phase = await runPhase(server.url, k).catch((error) => {
            const message = `${tool.name} failed at K=${k}: ${error.message}${error.cause ? ` (${error.cause.message})` : ""}`;
            if (attempt === 1) {
              log(`bench: ${message}; running that phase again on a fresh server`);
              return undefined;
            }
            fail(`${message}\n${server.log().slice(-3000)}`);
          });
          if (phase === undefined) {
            servers.delete(tool.name);
            await server.stop();
            await startWarm(tool);
            continue;
          }
          const cpu = cpuSince(cpuBefore, threadCpu(server.pid));
          results.push({ k, parallel, round, tool: tool.name, ...phase, rss: peakRss(server.pid), cpu });
          log(`bench: K=${k} round ${round + 1} ${tool.name}: ${phase.tokensPerSecond.toFixed(1)} t/s, ${phase.requests} requests in ${phase.seconds.toFixed(1)} s, TTFT p50 ${ms(phase.ttftP50)} p95 ${ms(phase.ttftP95)}, prompt ${phase.promptTokens} tokens${phase.server ? `; server-side: ${phase.server.promptEvaluated.toFixed(1)} prompt tokens evaluated in ${phase.server.promptMs.toFixed(1)} ms, ${phase.server.msPerToken.toFixed(2)} ms per generated token` : ""}; CPU ${cpuLine(cpu, phase.tokens)}`);
          break;
        }
      }
    }
  } finally {
    for (const server of servers.values()) await server.stop();
  }
}

console.log(`\nChat serving, SmolLM2-135M-shaped llama Q4_0 (random weights), CPU, ${threads} threads, ${values.duration} s per K and tool, ${rounds} round(s), ${genTokens} generated tokens per request, ${values["kv-unified"] ? "one unified KV cache" : "a KV cache per sequence"}, flash attention ${flashAttn}\n`);
console.log("| K clients | sequences | server | requests | generated t/s | TTFT p50 | TTFT p95 | peak RSS |");
console.log("|---:|---:|---|---:|---:|---:|---:|---:|");
for (const k of clientCounts) {
  for (const tool of tools) {
    const rows = results.filter((r) => r.k === k && r.tool === tool.name);
    const tps = mean(rows.map((r) => r.tokensPerSecond));
    const p50 = mean(rows.map((r) => r.ttftP50));
    const p95 = mean(rows.map((r) => r.ttftP95));
    const requests = rows.reduce((sum, r) => sum + r.requests, 0);
    console.log(`| ${k} | ${rows[0].parallel} | ${tool.name} | ${requests} | ${tps.toFixed(1)} | ${ms(p50)} | ${ms(p95)} | ${mb(Math.max(...rows.map((r) => r.rss)))} |`);
  }
}
if (withLlamaServer) {
  console.log("");
  for (const k of clientCounts) {
    const rows = (name) => results.filter((r) => r.k === k && r.tool === name);
    const of = (name, key) => mean(rows(name).map((r) => r[key]));
    // Each round's pair too (the two phases run one after the other): how far the rounds spread says how far one
    // ratio can be trusted on this host, and their median is the least moved by one disturbed phase.
    const pairs = [];
    const ratios = [];
    for (let round = 0; round < rounds; round++) {
      const ours = rows("llama-oci serve").find((r) => r.round === round);
      const theirs = rows("llama-server").find((r) => r.round === round);
      pairs.push(`${ours.tokensPerSecond.toFixed(1)}/${theirs.tokensPerSecond.toFixed(1)}`);
      ratios.push(ours.tokensPerSecond / theirs.tokensPerSecond);
    }
    const interval = pairedInterval(ratios);
    ratios.sort((a, b) => a - b);
    const median = medianOf(ratios);
    console.log(
      `K=${k}: llama-oci / llama-server generated t/s ${(of("llama-oci serve", "tokensPerSecond") / of("llama-server", "tokensPerSecond")).toFixed(3)} ` +
        `(median of the rounds ${median.toFixed(3)}; geometric mean of the rounds ${interval.mean.toFixed(3)}, 95% interval ${interval.low.toFixed(3)}-${interval.high.toFixed(3)}; ` +
        `rounds ${pairs.join(", ")}), TTFT p50 ${(of("llama-oci serve", "ttftP50") / of("llama-server", "ttftP50")).toFixed(3)}`,
    );
  }
}

/** Token ids whose text alone is not valid UTF-8 (the library's detokenizer writes U+FFFD for those bytes). */
async function partialCharacterTokens(path) {
  const { llama } = await import(join(root, "dist", "esm", "index.js"));
  const model = await llama.loadModel(path, { gpuLayers: 0, contextSize: 64 });
  try {
    const out = [];
    for (let id = 0; id < model.info.vocabSize; id++) {
      if ((await model.detokenize([id])).includes("\uFFFD")) out.push(id);
    }
    return out;
  } finally {
    await model.dispose();
  }
}

/** K clients sending streaming chat requests back to back until the phase's time is up; then waits for the last ones. */
async function runPhase(url, k) {
  const started = performance.now();
  const deadline = started + durationMs;
  const ttfts = [];
  let tokens = 0;
  let requests = 0;
  let promptTokens = 0;
  const timings = [];
  await Promise.all(
    Array.from({ length: k }, async (_, client) => {
      while (performance.now() < deadline) {
        const result = await chat(url, client, ++requestCounter);
        ttfts.push(result.ttftMs);
        tokens += result.pieces;
        promptTokens = result.promptTokens || promptTokens;
        if (result.timings) timings.push(result.timings);
        requests++;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  ttfts.sort((a, b) => a - b);
  // What each server says of its own work (llama-server's `timings`, which llama-oci sends too): evaluated prompt
  // tokens and their time, and the time per generated token, apart from HTTP and queueing.
  const sum = (key) => timings.reduce((total, t) => total + (t[key] ?? 0), 0);
  const server = timings.length === 0 ? undefined : { promptEvaluated: sum("prompt_n") / timings.length, promptMs: sum("prompt_ms") / timings.length, msPerToken: sum("predicted_ms") / Math.max(1, sum("predicted_n")) };
  return { tokens, tokensPerSecond: tokens / seconds, seconds, requests, ttftP50: quantile(ttfts, 0.5), ttftP95: quantile(ttfts, 0.95), promptTokens, server };
}

/**
 * One streaming request: time to the first piece, the pieces streamed, prompt tokens (usage). It
 * goes to /v1/completions with the chat already in the model's ChatML form: llama-server's /v1/chat/completions
 * parses every answer with the template's output parser and fails the request (500) when a random-weight model's
 * text does not fit it, so both servers get the same prompt string through the endpoint that returns the text as it
 * is.
 */
async function chat(url, client, id) {
  const user = `Request ${id} from client ${client}: what is the tallest mountain on each continent?`;
  const body = {
    model: "",
    prompt: `<|im_start|>system\n${SYSTEM}<|im_end|>\n<|im_start|>user\n${user}<|im_end|>\n<|im_start|>assistant\n`,
    max_tokens: genTokens,
    temperature: 0,
    logit_bias: LOGIT_BIAS,
    ignore_eos: true,
    stream: true,
    stream_options: { include_usage: true },
  };
  const sent = performance.now();
  const send = () => fetch(`${url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  // A kept-alive connection that the server closed just as it was reused fails before any answer (llama-server's
  // HTTP library does this now and then); such a request is sent once more, on a new connection.
  const response = await send().catch((error) => {
    if (!/other side closed|ECONNRESET/.test(`${error.message} ${error.cause?.message ?? ""} ${error.cause?.code ?? ""}`)) throw error;
    log(`bench: ${url}: the connection closed before an answer; sending the request again`);
    return send();
  });
  if (!response.ok) throw new Error(`${url} answered ${response.status}: ${await response.text()}`);
  let ttftMs;
  let pieces = 0;
  let usage;
  let serverTimings;
  let buffer = "";
  const decoder = new TextDecoder();
  for await (const chunk of response.body) {
    buffer += decoder.decode(chunk, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").find((line) => line.startsWith("data: "))?.slice(6);
      if (data === undefined || data === "[DONE]") continue;
      const parsed = JSON.parse(data);
      if (parsed.error) throw new Error(`${url}: ${JSON.stringify(parsed.error)}`);
      if (parsed.usage) usage = parsed.usage;
      if (parsed.timings) serverTimings = parsed.timings;
      if (parsed.choices?.[0]?.text) {
        ttftMs ??= performance.now() - sent;
        pieces++;
      }
    }
  }
  return { ttftMs: ttftMs ?? performance.now() - sent, pieces, promptTokens: usage?.prompt_tokens ?? 0, timings: serverTimings };
}

async function startOurs(parallel) {
  const args = [cli, "serve", "--model", modelPath, "--port", "0", "-t", String(threads), "--parallel", String(parallel), "-c", String(ctx), "--max-queue", "1024", "-ngl", "0", "-q"];
  if (values["kv-unified"]) args.push("--kv-unified");
  args.push("-fa", flashAttn);
  // -q silences the log, so the port comes from a port chosen here.
  const port = await freePort();
  args[args.indexOf("--port") + 1] = String(port);
  return launch("llama-oci serve", process.execPath, args, `http://127.0.0.1:${port}`);
}

async function startLlamaServer(parallel) {
  const port = await freePort();
  const args = ["-m", modelPath, "--host", "127.0.0.1", "--port", String(port), "-t", String(threads), "-np", String(parallel), "-c", String(ctx * parallel), "-ngl", "0", "--alias", "bench"];
  if (values["kv-unified"]) args.push("-kvu");
  args.push("-fa", flashAttn);
  return launch("llama-server", llamaServer, args, `http://127.0.0.1:${port}`);
}

async function launch(name, command, args, url) {
  const child = spawn(command, args, { cwd: root, stdio: ["ignore", "ignore", "pipe"] });
  children.add(child);
  child.once("exit", () => children.delete(child));
  let stderr = "";
  child.stderr.on("data", (data) => {
    stderr = (stderr + data.toString()).slice(-8000);
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) fail(`${name} exited with ${child.exitCode}:\n${stderr}`);
    const status = await fetch(`${url}/health`).then((r) => r.status, () => 0);
    if (status === 200) break;
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      fail(`${name} was not healthy within 60 s:\n${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    url,
    pid: child.pid,
    log: () => stderr,
    stop: async () => {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * CPU time of a process (Linux: /proc/<pid>/stat, which also counts its threads that have ended) and of each of its
 * live threads (/proc/<pid>/task), in clock ticks; each thread by id with its name (the first thread named "main"):
 * where a server's time goes (its decode threads, its HTTP or JavaScript thread, helpers). Empty elsewhere.
 */
function threadCpu(pid) {
  const reading = { total: statTicks(`/proc/${pid}/stat`)?.ticks ?? 0, threads: new Map() };
  let tasks = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return reading;
  }
  for (const tid of tasks) {
    const thread = statTicks(`/proc/${pid}/task/${tid}/stat`);
    if (thread) reading.threads.set(tid, { ...thread, name: Number(tid) === pid ? "main" : thread.name });
  }
  return reading;
}

/** A /proc stat file's name and user + system ticks (fields 14 and 15 of proc(5)); undefined once it is gone. */
function statTicks(path) {
  try {
    const stat = readFileSync(path, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { name: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")), ticks: Number(fields[11]) + Number(fields[12]) };
  } catch {
    return undefined;
  }
}

/**
 * Ticks used between two threadCpu readings: the whole process's, and each live thread's, the busiest first; what
 * threads used that ended in between (a one-sequence server's per-request workers) is the rest of the total.
 */
function cpuSince(before, after) {
  const threads = [];
  for (const [tid, { name, ticks }] of after.threads) threads.push({ name, ticks: ticks - (before.threads.get(tid)?.ticks ?? 0) });
  threads.sort((a, b) => b.ticks - a.ticks);
  const live = threads.reduce((sum, t) => sum + t.ticks, 0);
  return { total: Math.max(after.total - before.total, live), ended: Math.max(0, after.total - before.total - live), threads };
}

/** "12.30 s, 24.10 ms per generated token (llama-oci-seq 5.00 s, node 4.90 s, main 1.20 s, 9 more 0.30 s, ended threads 0.10 s)". */
function cpuLine(used, tokens) {
  const tick = 100; // USER_HZ: 100 on Linux
  const seconds = (ticks) => (ticks / tick).toFixed(2);
  const parts = used.threads.slice(0, 4).map((t) => `${t.name} ${seconds(t.ticks)} s`);
  const rest = used.threads.slice(4);
  if (rest.length > 0) parts.push(`${rest.length} more ${seconds(rest.reduce((sum, t) => sum + t.ticks, 0))} s`);
  if (used.ended > 0) parts.push(`ended threads ${seconds(used.ended)} s`);
  return `${seconds(used.total)} s, ${(((used.total / tick) * 1000) / Math.max(1, tokens)).toFixed(2)} ms per generated token (${parts.join(", ")})`;
}

/** Peak resident set size of a running process (Linux: VmHWM), in bytes; NaN elsewhere. */
function peakRss(pid) {
  try {
    const kb = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return kb === undefined ? NaN : Number(kb) * 1024;
  } catch {
    return NaN;
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function quantile(sorted, q) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

// The middle value of a sorted list (the mean of the two middle ones when the count is even).
function medianOf(sorted) {
  const half = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[half] : (sorted[half - 1] + sorted[half]) / 2;
}

// The rounds' ratios as paired samples: the geometric mean and Student's t 95% interval of their logarithms. A ratio
// whose interval holds 1.0 is not told apart from parity by this run (the host's noise is wider than the gap).
function pairedInterval(ratios) {
  const logs = ratios.map(Math.log);
  const n = logs.length;
  const m = mean(logs);
  if (n < 2) return { mean: Math.exp(m), low: NaN, high: NaN };
  const sd = Math.sqrt(logs.reduce((sum, x) => sum + (x - m) ** 2, 0) / (n - 1));
  const T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228];
  const t = n - 1 <= T975.length ? T975[n - 2] : n - 1 <= 20 ? 2.086 : n - 1 <= 30 ? 2.042 : 1.96;
  const half = (t * sd) / Math.sqrt(n);
  return { mean: Math.exp(m), low: Math.exp(m - half), high: Math.exp(m + half) };
}

function mean(list) {
  return list.length === 0 ? NaN : list.reduce((a, b) => a + b, 0) / list.length;
}

function ms(value) {
  return `${value.toFixed(0)} ms`;
}

function mb(bytes) {
  return Number.isNaN(bytes) ? "n/a" : `${(bytes / 1e6).toFixed(0)} MB`;
}

function log(line) {
  process.stderr.write(`${line}\n`);
}

function fail(message) {
  log(`bench: ${message}`);
  process.exit(1);
}
