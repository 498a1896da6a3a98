// Every file that enters the cache is durable before anything names it: a real `llama-oci pull` under strace must
// fsync each blob's partial before renaming it into blobs/, and fsync blobs/ after; the same for the manifest, the
// model record and the tag record (fsync of the temporary file, rename, fsync of the folder), and the folder of the
// model's links; and all of that before the tag record that makes the model a cache hit. So a power cut leaves the
// old state or the new one, never a right-sized file of wrong bytes that a cache hit would trust.
import { spawnSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, expect, test } from "vitest";
import { dockerV01, fakeGguf } from "./helpers/artifacts.js";
import { CLI_PATH, cliEnv, describeRun, lines, ROOT_DIR } from "./helpers/cli.js";
import { digestOf, pushArtifact } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

let registry: RegistryHandle;
let workDir: string;

beforeAll(async () => {
  registry = await startRegistry();
  workDir = await makeTempDir("llama-oci-store-durability");
});

afterAll(async () => {
  await registry?.stop();
  await removeDir(workDir);
});

/** Why strace cannot be used here (missing, or ptrace not permitted), or undefined when it can. */
function straceUnusable(): string | undefined {
  const probe = spawnSync("strace", ["-f", "-qq", "-e", "trace=fsync", "-o", "/dev/null", "true"], { encoding: "utf8" });
  if (probe.error) return `strace is not installed (apt-get install strace): ${probe.error.message}`;
  if (probe.status !== 0) return `strace cannot trace here (exit ${probe.status ?? probe.signal ?? "?"}): ${probe.stderr.trim()}`;
  return undefined;
}

interface Call {
  index: number;
  name: string;
  /** fsync/fdatasync: the path of the file descriptor (strace -y). */
  path?: string;
  /** rename*, link*: the two paths. */
  from?: string;
  to?: string;
}

/** The traced calls in the order they began (strace -f -y: a call split by another thread's is "unfinished"). */
function parseTrace(text: string): Call[] {
  const calls: Call[] = [];
  for (const line of text.split("\n")) {
    const match = /^\d+\s+(\w+)\((.*)$/.exec(line);
    if (!match || line.includes("resumed>")) continue;
    const [, name, args] = match as unknown as [string, string, string];
    const call: Call = { index: calls.length, name };
    if (name === "fsync" || name === "fdatasync") {
      call.path = /^\d+<(.+?)>(?=\)| <unfinished)/.exec(args)?.[1];
    } else {
      const quoted = [...args.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!);
      [call.from, call.to] = quoted;
    }
    calls.push(call);
  }
  return calls;
}

function renameTo(calls: Call[], target: string | RegExp, what: string): Call {
  const found = calls.filter((c) => c.name.startsWith("rename") && (typeof target === "string" ? c.to === target : target.test(c.to ?? "")));
  expect(found, `one rename onto ${what}`).toHaveLength(1);
  return found[0]!;
}

function fsyncOf(calls: Call[], path: string, before?: number, after?: number): Call | undefined {
  const matching = calls.filter((c) => (c.name === "fsync" || c.name === "fdatasync") && c.path === path);
  if (before !== undefined) return matching.filter((c) => c.index < before).at(-1);
  return matching.find((c) => c.index > (after ?? -1));
}

/** fsync(file) < rename(file -> target) < fsync(folder of target); returns the folder's fsync. */
function expectDurableRename(calls: Call[], target: string | RegExp, what: string): Call {
  const rename = renameTo(calls, target, what);
  const fileSync = fsyncOf(calls, rename.from!, rename.index);
  expect(fileSync, `fsync of ${rename.from ?? "?"} before it is renamed onto ${what}`).toBeDefined();
  const dirSync = fsyncOf(calls, dirname(rename.to!), undefined, rename.index);
  expect(dirSync, `fsync of ${dirname(rename.to!)} after ${what} was renamed into it`).toBeDefined();
  return dirSync!;
}

test("a pull fsyncs each file before its rename into the cache and the folder after, the tag record last", { timeout: 120_000 }, async (context) => {
  const unusable = straceUnusable();
  if (unusable !== undefined) context.skip(unusable);

  const gguf = fakeGguf(3 * 1024 * 1024, 77);
  const template = "{{ messages }}";
  const artifact = dockerV01({ ggufs: [gguf], chatTemplate: template });
  const pushed = await pushArtifact({ registryUrl: registry.url, repository: "ai/durable" }, "v1", artifact);
  const cache = join(workDir, "cache");
  const trace = join(workDir, "pull.trace");
  const run = spawnSync(
    "strace",
    ["-f", "-y", "-s", "4096", "-qq", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2", "-o", trace, process.execPath, CLI_PATH, "pull", `${registry.host}/ai/durable:v1`],
    { env: cliEnv(join(workDir, "home"), cache), encoding: "utf8", timeout: 100_000 },
  );
  const result = { stdout: run.stdout, stderr: run.stderr, exitCode: run.status, signal: run.signal, timedOut: false, durationMs: 0 };
  expect(run.status, describeRun(result)).toBe(0);
  const modelPath = lines(run.stdout).at(-1)!;
  const calls = parseTrace(await readFile(trace, "utf8"));

  const oci = join(cache, "oci");
  const blobsDir = join(oci, "blobs", "sha256");
  const hex = (digest: string) => digest.slice("sha256:".length);
  // Blobs: the partial <hex>.tmp, fsynced, renamed to <hex>, then blobs/sha256 fsynced.
  const blobDigests = [digestOf(artifact.config.data), digestOf(gguf), digestOf(Buffer.from(template))];
  const blobSyncs = blobDigests.map((digest) => {
    const target = join(blobsDir, hex(digest));
    const rename = renameTo(calls, target, `blob ${digest}`);
    expect(rename.from).toBe(`${target}.tmp`);
    return expectDurableRename(calls, target, `blob ${digest}`);
  });

  // Records: written under a temporary name, fsynced, renamed, folder fsynced.
  const manifestSync = expectDurableRename(calls, join(oci, "manifests", "sha256", hex(pushed.digest)), "the manifest");
  const recordSync = expectDurableRename(calls, join(oci, "models", `${hex(pushed.digest)}.json`), "the model record");
  const tagSync = expectDurableRename(calls, /\/refs\/127\.0\.0\.1%3A\d+\/ai\/durable\/@tags\/v1\.json$/, "the tag record");

  // The model folder: links renamed into place, then the folder fsynced before the model record is written.
  const modelDir = join(oci, "models", hex(pushed.digest));
  expect(modelPath).toBe(join(modelDir, "model.gguf"));
  const linkRename = renameTo(calls, join(modelDir, "model.gguf"), "the model's GGUF link");
  const folderSync = fsyncOf(calls, modelDir, undefined, linkRename.index);
  expect(folderSync, `fsync of ${modelDir} after its links`).toBeDefined();

  // The order a cache hit relies on: blobs, then the manifest and the model folder, then the model record, then the tag.
  const record = renameTo(calls, join(oci, "models", `${hex(pushed.digest)}.json`), "the model record");
  const tag = renameTo(calls, /@tags\/v1\.json$/, "the tag record");
  for (const sync of [...blobSyncs, manifestSync, folderSync!]) expect(sync.index).toBeLessThan(record.index);
  expect(recordSync.index).toBeLessThan(tag.index);
  expect(tagSync.index).toBeGreaterThan(tag.index);
});

test("a long download is written back as it arrives: background fdatasyncs every syncEveryBytes, settled before close", { timeout: 60_000 }, async (context) => {
  const unusable = straceUnusable();
  if (unusable !== undefined) context.skip(unusable);
  const target = join(workDir, "batched.tmp");
  const script = join(workDir, "batched.mjs");
  const store = pathToFileURL(join(ROOT_DIR, "dist", "esm", "oci", "store", "index.js")).href;
  await writeFile(
    script,
    `import { openSync, closeSync } from "node:fs";
const { BatchWriter } = await import(${JSON.stringify(store)});
const fd = openSync(${JSON.stringify(target)}, "w");
const writer = new BatchWriter(fd, { batchBytes: 1 << 20, syncEveryBytes: 1 << 20 });
for (let i = 0; i < 8; i++) {
  writer.push(Buffer.alloc(1 << 20, i));
  await new Promise((resolve) => setTimeout(resolve, 30));
}
writer.flush();
await writer.settle();
closeSync(fd);
if (writer.failed) throw writer.error;
`,
  );
  const trace = join(workDir, "batched.trace");
  const run = spawnSync("strace", ["-f", "-y", "-qq", "-e", "trace=fdatasync,close", "-o", trace, process.execPath, script], { encoding: "utf8" });
  expect(run.status, run.stderr).toBe(0);
  const text = await readFile(trace, "utf8");
  const syncs = text.split("\n").filter((line) => line.includes(`fdatasync(`) && line.includes(`<${target}>`));
  // Eight 1 MiB writes 30 ms apart: a background fdatasync after most of them (one at a time), none left running at close.
  expect(syncs.length).toBeGreaterThanOrEqual(4);
  expect(syncs.every((line) => !line.includes("= -1"))).toBe(true);
  const traced = text.split("\n");
  const closeAt = traced.findIndex((line) => line.includes(`close(`) && line.includes(`<${target}>`));
  // Where the last fdatasync returned: its own line, or the "resumed" line of its thread when another call came between.
  const lastSync = traced.lastIndexOf(syncs.at(-1)!);
  const pid = traced[lastSync]!.split(/\s+/)[0]!;
  const returned = traced[lastSync]!.includes("<unfinished")
    ? traced.findIndex((line, i) => i > lastSync && line.startsWith(`${pid} `) && line.includes("fdatasync resumed"))
    : lastSync;
  expect(returned).toBeGreaterThanOrEqual(0);
  expect(closeAt).toBeGreaterThan(returned);
});
