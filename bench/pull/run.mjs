#!/usr/bin/env node
// Pull benchmark: `llama-oci pull` against skopeo and curl(+sha256sum), same registry, same blobs, alternating runs,
// fresh destination each run. Prints medians, the ratios the targets are stated in, our peak RSS and our CPU time
// (user + system: less sensitive than wall time to other processes on the machine; the load average is printed so
// that numbers taken on a busy machine can be told apart).
//
//   node bench/pull/run.mjs [--sizes 100,1000] [--runs 3] [--work DIR] [--baseline CHECKOUT]     (sizes in MB)
//
//   --work DIR           where the caches and downloads go (default: the OS temp dir); pick the disk you care about,
//                        a tmpfs makes fsync free
//   --skip-peers         time only llama-oci (and the baseline): no skopeo, curl or SHA-256 runs
//   --baseline CHECKOUT  also time `llama-oci pull` of another built checkout (its bin/llama-oci.js), alternating
//                        with ours, to measure what a change costs: e.g. `git archive <commit> | tar -x -C ../base`,
//                        `npm run build` there (node_modules linked or installed); this is how the fsyncs that make
//                        cache writes durable were measured (README, Benchmarks)
//
// Needs: docker-registry, skopeo, curl, sha256sum (Debian: apt-get install docker-registry skopeo curl).
import { execFileSync, spawn } from "node:child_process";
import { createHash, randomFillSync } from "node:crypto";
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { startLocalRegistry } from "../../scripts/local-registry.mjs";

// One SHA-256 pass over a file, as Node does it: the floor for any verifying download.
const SHA_SCRIPT = `
const h = require("node:crypto").createHash("sha256");
require("node:fs").createReadStream(process.argv[1], { highWaterMark: 1 << 20 }).on("data", (c) => h.update(c)).on("end", () => h.digest("hex"));
`;

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const { values } = parseArgs({
  options: {
    sizes: { type: "string", default: "100,1000" },
    runs: { type: "string", default: "3" },
    work: { type: "string" },
    baseline: { type: "string" },
    "skip-peers": { type: "boolean", default: false },
  },
});
const sizesMB = values.sizes.split(",").map(Number);
const runs = Number(values.runs);
const baselineCli = values.baseline === undefined ? undefined : join(values.baseline, "bin", "llama-oci.js");
if (baselineCli !== undefined && !existsSync(baselineCli)) {
  console.error(`bench: --baseline ${values.baseline} has no bin/llama-oci.js`);
  process.exit(2);
}

for (const tool of ["docker-registry", "skopeo", "curl", "sha256sum"]) {
  try {
    execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
  } catch {
    console.error(`bench: ${tool} is missing (apt-get install docker-registry skopeo curl coreutils)`);
    process.exit(2);
  }
}
if (!existsSync(join(root, "dist", "esm", "cli", "main.js"))) execFileSync("npm", ["run", "build"], { cwd: root, stdio: "inherit" });

const work = join(values.work ?? tmpdir(), `llama-oci-bench-${process.pid}`);
mkdirSync(work, { recursive: true });
const registry = await startLocalRegistry();
const registryUrl = registry.url;

const rows = [];
const loadBefore = loadavg()[0];
try {
  for (const mb of sizesMB) rows.push(await benchSize(mb));
} finally {
  await registry.stop();
  rmSync(work, { recursive: true, force: true });
}

if (!values["skip-peers"]) console.log("\n| blob | llama-oci pull | skopeo copy | curl + sha256sum | curl alone | Node SHA-256 pass | skopeo / ours | ours / max(curl, sha) | peak RSS | our CPU |");
if (!values["skip-peers"]) console.log("|---|---|---|---|---|---|---|---|---|---|");
for (const r of values["skip-peers"] ? [] : rows) {
  console.log(
    `| ${r.mb} MB | ${s(r.ours)} | ${s(r.skopeo)} | ${s(r.curlSha)} | ${s(r.curl)} | ${s(r.sha)} | ${(r.skopeo / r.ours).toFixed(2)}x | ${(r.ours / Math.max(r.curl, r.sha)).toFixed(2)} | ${(r.rss / 1e6).toFixed(0)} MB | ${s(r.cpu)} |`,
  );
}
if (baselineCli !== undefined) {
  console.log(`\n| blob | llama-oci pull | baseline pull (${values.baseline}) | ours - baseline | ours / baseline | our CPU | baseline CPU |`);
  console.log("|---|---|---|---|---|---|---|");
  for (const r of rows) {
    console.log(
      `| ${r.mb} MB | ${s(r.ours)} | ${s(r.base)} | ${(r.ours - r.base >= 0 ? "+" : "") + s(r.ours - r.base)} | ${(r.ours / r.base).toFixed(2)} | ${s(r.cpu)} | ${s(r.baseCpu)} |`,
    );
  }
  console.log(`ours: ${rows.map((r) => `${r.mb} MB ${r.oursAll.map(s).join(", ")}`).join("; ")}`);
  console.log(`baseline: ${rows.map((r) => `${r.mb} MB ${r.baseAll.map(s).join(", ")}`).join("; ")}`);
}
console.log("\ntargets: skopeo / ours >= 1.5, ours / max(curl, sha) <= 1.3, peak RSS < 150 MB");
console.log(`medians of ${runs} runs; ${cpus().length} CPUs, load average ${loadBefore.toFixed(2)} before, ${loadavg()[0].toFixed(2)} after`);

async function benchSize(mb) {
  const size = mb * 1_000_000;
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
  const put = await fetch(`${registryUrl}/v2/${repository}/manifests/${tag}`, {
    method: "PUT",
    headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" },
    body: manifest,
  });
  if (put.status !== 201) throw new Error(`manifest push failed: ${put.status}`);
  rmSync(file);

  const reference = `${registry.host}/${repository}:${tag}`;
  const blobUrl = `${registryUrl}/v2/${repository}/blobs/${digest}`;
  const times = { ours: [], base: [], skopeo: [], curlSha: [], curl: [], sha: [] };
  const rss = [];
  const cpu = [];
  const baseCpu = [];
  for (let run = 0; run < runs; run++) {
    const dest = join(work, `run-${mb}-${run}`);
    const rssFile = join(work, "rss");
    const pullWith = (cli, cacheDir) => {
      const seconds = timed("node", ["-r", join(root, "bench/pull/report-rss.cjs"), cli, "pull", "-q", "--cache-dir", cacheDir, reference], {
        LLAMA_OCI_BENCH_RSS_FILE: rssFile,
      });
      rmSync(cacheDir, { recursive: true, force: true });
      return { seconds, usage: JSON.parse(readFileSync(rssFile, "utf8")) };
    };
    // Ours and the baseline take turns going first, so that neither always runs after the other's disk writes.
    const order = baselineCli !== undefined && run % 2 === 1 ? ["base", "ours"] : ["ours", "base"];
    for (const which of order) {
      if (which === "ours") {
        const { seconds, usage } = pullWith(join(root, "bin/llama-oci.js"), `${dest}-ours`);
        times.ours.push(seconds);
        rss.push(usage.rss);
        cpu.push(usage.userS + usage.systemS);
      } else if (baselineCli !== undefined) {
        const { seconds, usage } = pullWith(baselineCli, `${dest}-base`);
        times.base.push(seconds);
        baseCpu.push(usage.userS + usage.systemS);
      }
    }
    if (values["skip-peers"]) {
      console.error(
        `bench: ${mb} MB run ${run + 1}/${runs}: ours ${s(times.ours.at(-1))} (cpu ${s(cpu.at(-1))})` +
          (baselineCli !== undefined ? `, baseline ${s(times.base.at(-1))} (cpu ${s(baseCpu.at(-1))})` : "") +
          `; load ${loadavg()[0].toFixed(2)}`,
      );
      continue;
    }
    times.skopeo.push(timed("skopeo", ["copy", "-q", "--src-tls-verify=false", `docker://${reference}`, `dir:${dest}-skopeo`]));
    rmSync(`${dest}-skopeo`, { recursive: true, force: true });
    times.curlSha.push(timed("sh", ["-c", `curl -sf -o '${dest}-curl' '${blobUrl}' && sha256sum '${dest}-curl' >/dev/null`]));
    rmSync(`${dest}-curl`, { force: true });
    times.curl.push(timed("curl", ["-sf", "-o", `${dest}-curl`, blobUrl]));
    times.sha.push(timed("node", ["-e", SHA_SCRIPT, `${dest}-curl`]));
    rmSync(`${dest}-curl`, { force: true });
    console.error(
      `bench: ${mb} MB run ${run + 1}/${runs}: ours ${s(times.ours.at(-1))} (cpu ${s(cpu.at(-1))}), ` +
        (baselineCli !== undefined ? `baseline ${s(times.base.at(-1))} (cpu ${s(baseCpu.at(-1))}), ` : "") +
        `skopeo ${s(times.skopeo.at(-1))}, ` +
        `curl ${s(times.curl.at(-1))}, sha ${s(times.sha.at(-1))}; load ${loadavg()[0].toFixed(2)}`,
    );
  }
  return {
    mb,
    ours: median(times.ours),
    base: times.base.length > 0 ? median(times.base) : undefined,
    oursAll: times.ours,
    baseAll: times.base,
    baseCpu: baseCpu.length > 0 ? median(baseCpu) : undefined,
    skopeo: median(times.skopeo),
    curlSha: median(times.curlSha),
    curl: median(times.curl),
    sha: median(times.sha),
    rss: Math.max(...rss),
    cpu: median(cpu),
  };
}

function timed(command, args, env = {}) {
  const start = process.hrtime.bigint();
  execFileSync(command, args, { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, ...env } });
  return Number(process.hrtime.bigint() - start) / 1e9;
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
  const res = await fetch(`${registryUrl}/v2/${repository}/blobs/uploads/`, { method: "POST" });
  if (res.status !== 202) throw new Error(`upload start failed: ${res.status}`);
  return new URL(res.headers.get("location"), registryUrl).toString();
}

function sha256(data) {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

function median(list) {
  const sorted = [...list].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function s(seconds) {
  return `${seconds.toFixed(2)} s`;
}
