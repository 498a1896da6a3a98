#!/usr/bin/env node
// Pull benchmark: `llama-oci pull` against skopeo and curl, same registry, same blobs, all tools alternating in each
// run (the order rotates), fresh destination every run, every tool's result fsynced (ours commits with fsync;
// skopeo's dir: destination fsyncs; `curl -o FILE` is followed by `sync FILE`). Every tool runs under GNU time:
// wall seconds, CPU seconds (user + system, all its threads and children) and peak RSS. Medians are printed, with
// the ratios the targets are stated in, and the load average (numbers from a busy machine can then be told apart).
//
//   node bench/pull/run.mjs [--sizes 540,1000] [--runs 3] [--scenarios loopback,shaped] [--shaped-mb 500]
//                           [--work DIR] [--skip-peers] [--baseline CHECKOUT]
//
//   loopback        the registry on 127.0.0.1, per size in --sizes (MB): ours, skopeo copy docker://… dir:…,
//                   curl -o + sync, and one SHA-256 pass of the file in Node (the floor of any verifying download)
//   shaped          a link of 10 MB/s per connection, 30 ms before every response and 100 MB/s in all (the tests'
//                   fault proxy in its own process, bench/pull/shaped-link.mjs), a --shaped-mb blob: ours, skopeo,
//                   curl; and ours again on the same link with one connection held to 0.5 MB/s
//   --work DIR      where the caches and downloads go (default: the OS temp dir); pick the disk you care about, a
//                   tmpfs makes fsync free
//   --skip-peers    time only llama-oci (and the baseline)
//   --baseline DIR  also time `llama-oci pull` of another built checkout (its bin/llama-oci.js) on loopback, to
//                   measure what a change costs: e.g. `git archive <commit> | tar -x -C ../base`, `npm run build` there
//   Loopback also times ours with LLAMA_OCI_MAX_CONNECTIONS=1 (one stream per file); set it in the environment to
//   time only that path.
//
// Needs: docker-registry, skopeo, curl, GNU time (Debian: apt-get install docker-registry skopeo curl time).
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash, randomFillSync } from "node:crypto";
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { startLocalRegistry } from "../../scripts/local-registry.mjs";

// One SHA-256 pass over a file, as Node does it: the floor for any verifying download.
const SHA_SCRIPT = `
const h = require("node:crypto").createHash("sha256");
require("node:fs").createReadStream(process.argv[1], { highWaterMark: 1 << 20 }).on("data", (c) => h.update(c)).on("end", () => h.digest("hex"));
`;
const GNU_TIME = "/usr/bin/time";
const MB = 1e6;
const SHAPE = { perConnectionBytesPerSecond: 10 * MB, latencyMs: 30, aggregateBytesPerSecond: 100 * MB };
const STRAGGLER = { nth: 2, bytesPerSecond: 0.5 * MB, pathIncludes: "/blobs/" };

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const { values } = parseArgs({
  options: {
    sizes: { type: "string", default: "540,1000" },
    runs: { type: "string", default: "3" },
    scenarios: { type: "string", default: "loopback,shaped" },
    "shaped-mb": { type: "string", default: "500" },
    work: { type: "string" },
    baseline: { type: "string" },
    "skip-peers": { type: "boolean", default: false },
  },
});
const sizesMB = values.sizes.split(",").map(Number);
const runs = Number(values.runs);
const scenarios = new Set(values.scenarios.split(","));
const shapedMB = Number(values["shaped-mb"]);
const skipPeers = values["skip-peers"];
const baselineCli = values.baseline === undefined ? undefined : join(values.baseline, "bin", "llama-oci.js");
if (baselineCli !== undefined && !existsSync(baselineCli)) {
  console.error(`bench: --baseline ${values.baseline} has no bin/llama-oci.js`);
  process.exit(2);
}

for (const tool of ["docker-registry", "skopeo", "curl", "sync", GNU_TIME]) {
  try {
    execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
  } catch {
    console.error(`bench: ${tool} is missing (apt-get install docker-registry skopeo curl time)`);
    process.exit(2);
  }
}
if (!existsSync(join(root, "dist", "esm", "cli", "main.js"))) execFileSync("npm", ["run", "build"], { cwd: root, stdio: "inherit" });

const work = join(values.work ?? tmpdir(), `llama-oci-bench-${process.pid}`);
mkdirSync(work, { recursive: true });
const registry = await startLocalRegistry();
const loads = [loadavg()[0]];
const output = [];
try {
  if (scenarios.has("loopback")) for (const mb of sizesMB) output.push(...(await loopback(mb)));
  if (scenarios.has("shaped")) output.push(...(await shaped(shapedMB)));
} finally {
  await registry.stop();
  rmSync(work, { recursive: true, force: true });
}
loads.push(loadavg()[0]);
console.log(`\n${output.join("\n")}`);
console.log(`\nmedians of ${runs} runs; ${cpus().length} CPUs, load average ${loads[0].toFixed(2)} before, ${loads[1].toFixed(2)} after`);

async function loopback(mb) {
  const blob = await pushBlobModel(mb);
  const tools = {
    ours: (dest) => ours(join(root, "bin", "llama-oci.js"), blob.reference, dest),
    // The same pull over one connection per file (the single-stream path, hashing each chunk as it arrives).
    "ours, 1 connection": (dest) => ours(join(root, "bin", "llama-oci.js"), blob.reference, dest, { LLAMA_OCI_MAX_CONNECTIONS: "1" }),
  };
  if (baselineCli !== undefined) tools.baseline = (dest) => ours(baselineCli, blob.reference, dest);
  if (!skipPeers) {
    tools.skopeo = (dest) => skopeo(blob.reference, dest);
    tools.curl = (dest) => curl(blob.url, dest);
  }
  const results = await alternate(`loopback ${mb} MB`, tools, (name, dest, all) => {
    // The SHA-256 pass reads curl's file (in the page cache, as the download left it), before it is removed.
    if (name === "curl") all.sha.push(measure("node", ["-e", SHA_SCRIPT, dest]));
  });
  const m = medians(results);
  const lines = [`\n### Loopback, ${mb} MB`, "", toolTable(m, mb)];
  if (m.curl && m.sha && m.skopeo) {
    const floor = Math.max(m.curl.wall, m.sha.wall);
    lines.push(
      "",
      target(`ours / max(curl -o + sync, SHA-256 pass) = ${ratio(m.ours.wall / floor)}`, m.ours.wall <= 1.3 * floor, "<= 1.3"),
      target(`ours / skopeo = ${ratio(m.ours.wall / m.skopeo.wall)}`, m.ours.wall <= 0.5 * m.skopeo.wall, "<= 0.5"),
      target(
        `ours CPU / (curl CPU + SHA-256 pass CPU) = ${ratio(m.ours.cpu / (m.curl.cpu + m.sha.cpu))}`,
        m.ours.cpu <= 1.2 * (m.curl.cpu + m.sha.cpu),
        "<= 1.2",
      ),
      target(`our peak RSS ${(m.ours.maxRss / MB).toFixed(0)} MB`, m.ours.maxRss < 150 * MB, "< 150 MB"),
    );
  }
  if (m.baseline) lines.push("", `ours / baseline (${values.baseline}): wall ${ratio(m.ours.wall / m.baseline.wall)}, CPU ${ratio(m.ours.cpu / m.baseline.cpu)}`);
  return lines;
}

async function shaped(mb) {
  const blob = await pushBlobModel(mb);
  const link = await startShapedLink(SHAPE);
  const slow = await startShapedLink({ ...SHAPE, straggler: STRAGGLER });
  try {
    const through = (proxy) => ({ reference: blob.reference.replace(registry.host, proxy.host), url: blob.url.replace(registry.host, proxy.host) });
    const fast = through(link);
    const withStraggler = through(slow);
    // Each result also gets the sustained rate the link saw: blob bytes from the first blob request to the last end.
    const sustained = (proxy, run) => async (dest) => {
      await proxy.stats();
      const result = run(dest);
      const { bytes, seconds } = await proxy.stats();
      return { ...result, sustained: bytes / seconds };
    };
    const tools = {
      ours: sustained(link, (dest) => ours(join(root, "bin", "llama-oci.js"), fast.reference, dest)),
      "ours, straggler": sustained(slow, (dest) => ours(join(root, "bin", "llama-oci.js"), withStraggler.reference, dest)),
    };
    if (!skipPeers) {
      tools.skopeo = sustained(link, (dest) => skopeo(fast.reference, dest));
      tools.curl = sustained(link, (dest) => curl(fast.url, dest));
    }
    const m = medians(await alternate(`shaped ${mb} MB`, tools));
    const rate = (name) => (mb * MB) / m[name].wall / MB;
    const lines = [
      `\n### Shaped link (10 MB/s per connection, 30 ms per response, 100 MB/s in all), ${mb} MB`,
      "",
      toolTable(m, mb),
      "",
      target(`ours ${(m.ours.sustained / MB).toFixed(1)} MB/s sustained (${rate("ours").toFixed(1)} MB/s over the whole command)`, m.ours.sustained >= 85 * MB, ">= 85 MB/s"),
      target(`with one connection at 0.5 MB/s: ${ratio(m["ours, straggler"].wall / m.ours.wall)} the time`, m["ours, straggler"].wall <= 1.25 * m.ours.wall, "<= 1.25"),
    ];
    for (const peer of ["skopeo", "curl"].filter((name) => m[name])) {
      lines.push(target(`ours / ${peer} speed = ${ratio(rate("ours") / rate(peer))}`, rate("ours") >= 5 * rate(peer), ">= 5"));
    }
    return lines;
  } finally {
    link.stop();
    slow.stop();
  }
}

/** Runs every tool once per run, rotating which goes first; returns each tool's measurements. */
async function alternate(label, tools, after = () => {}) {
  const names = Object.keys(tools);
  const results = Object.fromEntries([...names, "sha"].map((name) => [name, []]));
  for (let run = 0; run < runs; run++) {
    const order = names.map((_, i) => names[(i + run) % names.length]);
    for (const name of order) {
      const dest = join(work, `run-${run}-${name.replace(/\W+/g, "-")}`);
      results[name].push(await tools[name](dest));
      await after(name, dest, results);
      rmSync(dest, { recursive: true, force: true });
    }
    const last = order.map((name) => `${name} ${s(results[name].at(-1).wall)} (cpu ${s(results[name].at(-1).cpu)})`);
    if (results.sha.length > run) last.push(`sha ${s(results.sha.at(-1).wall)}`);
    console.error(`bench: ${label} run ${run + 1}/${runs}: ${last.join(", ")}; load ${loadavg()[0].toFixed(2)}`);
    loads.push(loadavg()[0]);
  }
  return results;
}

function ours(cli, reference, cacheDir, env = {}) {
  return measure("node", [cli, "pull", "-q", "--cache-dir", cacheDir, reference], env);
}

function skopeo(reference, dest) {
  return measure("skopeo", ["copy", "-q", "--src-tls-verify=false", `docker://${reference}`, `dir:${dest}`]);
}

function curl(url, dest) {
  return measure("sh", ["-c", `curl -sf -o '${dest}' '${url}' && sync '${dest}'`]);
}

/** A command under GNU time: { wall, cpu (user + system, children included), maxRss (bytes) }. */
function measure(command, args, env = {}) {
  const report = join(work, "time.out");
  const run = spawnSync(GNU_TIME, ["-o", report, "-f", "%e %U %S %M", command, ...args], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, ...env },
  });
  if (run.status !== 0) throw new Error(`${command} ${args.join(" ")} failed (${run.status ?? run.signal})`);
  const [wall, user, system, maxRssKb] = readFileSync(report, "utf8").trim().split("\n").at(-1).split(/\s+/).map(Number);
  return { wall, cpu: user + system, maxRss: maxRssKb * 1024 };
}

function medians(results) {
  const m = {};
  for (const [name, list] of Object.entries(results)) {
    if (list.length === 0) continue;
    m[name] = { wall: median(list.map((r) => r.wall)), cpu: median(list.map((r) => r.cpu)), maxRss: Math.max(...list.map((r) => r.maxRss)), all: list };
    if (list.every((r) => r.sustained !== undefined)) m[name].sustained = median(list.map((r) => r.sustained));
  }
  return m;
}

function toolTable(m, mb) {
  const label = { ours: "llama-oci pull", "ours, 1 connection": "llama-oci pull, LLAMA_OCI_MAX_CONNECTIONS=1", baseline: "baseline pull", skopeo: "skopeo copy (dir:)", curl: "curl -o + sync", sha: "Node SHA-256 pass", "ours, straggler": "llama-oci pull, one connection at 0.5 MB/s" };
  const withSustained = Object.values(m).some((r) => r.sustained !== undefined);
  const rows = [
    `| tool | wall | MB/s |${withSustained ? " sustained MB/s |" : ""} CPU s | peak RSS | runs (wall) |`,
    `|---|---:|---:|${withSustained ? "---:|" : ""}---:|---:|---|`,
  ];
  for (const [name, r] of Object.entries(m)) {
    const sustainedCell = withSustained ? ` ${r.sustained === undefined ? "" : (r.sustained / MB).toFixed(0)} |` : "";
    rows.push(
      `| ${label[name] ?? name} | ${s(r.wall)} | ${((mb * MB) / r.wall / MB).toFixed(0)} |${sustainedCell} ${r.cpu.toFixed(2)} | ${(r.maxRss / MB).toFixed(0)} MB | ${r.all.map((x) => x.wall.toFixed(2)).join(", ")} |`,
    );
  }
  return rows.join("\n");
}

function target(text, met, goal) {
  return `- ${text} (target ${goal}): ${met ? "met" : "MISSED"}`;
}

async function startShapedLink(shape) {
  const child = spawn(process.execPath, [join(root, "bench", "pull", "shaped-link.mjs"), registry.url, JSON.stringify(shape), work], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout });
  const nextLine = () =>
    new Promise((resolve, reject) => {
      const onExit = (code) => reject(new Error(`shaped link exited (${code})`));
      child.once("exit", onExit);
      lines.once("line", (text) => {
        child.off("exit", onExit);
        resolve(JSON.parse(text));
      });
    });
  const { url, host } = await nextLine();
  /** Blob bytes and seconds from the first blob request to the last one's end, since the last call. */
  const stats = () => {
    const answer = nextLine();
    child.stdin.write("stats\n");
    return answer;
  };
  return { url, host, stats, stop: () => child.stdin.end() };
}

/** A blob of `mb` MB of random bytes behind a GGUF magic, pushed as a model; its reference and blob URL. */
async function pushBlobModel(mb) {
  const size = mb * MB;
  const file = join(work, `model-${mb}.gguf`);
  console.error(`bench: writing a ${mb} MB GGUF and pushing it`);
  const digest = await writeRandomGguf(file, size);
  const repository = "bench/model";
  const tag = `${mb}mb`;
  await pushBlobFile(repository, file, digest);
  const config = Buffer.from(JSON.stringify({ config: { format: "gguf" }, rootfs: { type: "rootfs", diff_ids: [digest] } }));
  const configDigest = sha256(config);
  await pushBlobBuffer(repository, config, configDigest);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.docker.ai.model.config.v0.1+json", digest: configDigest, size: config.length },
    layers: [{ mediaType: "application/vnd.docker.ai.gguf.v3", digest, size }],
  });
  const put = await fetch(`${registry.url}/v2/${repository}/manifests/${tag}`, {
    method: "PUT",
    headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" },
    body: manifest,
  });
  if (put.status !== 201) throw new Error(`manifest push failed: ${put.status}`);
  rmSync(file);
  return { reference: `${registry.host}/${repository}:${tag}`, url: `${registry.url}/v2/${repository}/blobs/${digest}` };
}

async function writeRandomGguf(path, size) {
  const hash = createHash("sha256");
  const out = createWriteStream(path);
  const chunk = Buffer.alloc(8 << 20);
  let written = 0;
  for (let i = 0; written < size; i++) {
    randomFillSync(chunk);
    const piece = chunk.subarray(0, Math.min(chunk.length, size - written));
    if (written === 0) piece.write("GGUF", 0, "latin1");
    hash.update(piece);
    if (!out.write(piece)) await new Promise((resolve) => out.once("drain", resolve));
    written += piece.length;
  }
  await new Promise((resolve, reject) => out.end((error) => (error ? reject(error) : resolve())));
  return `sha256:${hash.digest("hex")}`;
}

async function pushBlobFile(repository, file, digest) {
  const location = await startUpload(repository);
  const url = `${location}${location.includes("?") ? "&" : "?"}digest=${digest}`;
  await new Promise((resolve, reject) => {
    const req = spawn("curl", ["-sf", "-X", "PUT", "-H", "content-type: application/octet-stream", "--data-binary", `@${file}`, url], { stdio: "inherit" });
    req.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`blob upload failed (${code})`))));
  });
}

async function pushBlobBuffer(repository, data, digest) {
  const location = await startUpload(repository);
  const res = await fetch(`${location}${location.includes("?") ? "&" : "?"}digest=${digest}`, { method: "PUT", body: data });
  if (res.status !== 201) throw new Error(`blob upload failed: ${res.status}`);
}

async function startUpload(repository) {
  const res = await fetch(`${registry.url}/v2/${repository}/blobs/uploads/`, { method: "POST" });
  if (res.status !== 202) throw new Error(`upload start failed: ${res.status}`);
  return new URL(res.headers.get("location"), registry.url).toString();
}

function sha256(data) {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

function median(list) {
  const sorted = [...list].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function ratio(value) {
  return `${value.toFixed(2)}x`;
}

function s(seconds) {
  return `${seconds.toFixed(2)} s`;
}
