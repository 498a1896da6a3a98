// Local cache management against real pulls from a real docker-registry: ls, rm, prune and tag, through the CLI
// (child processes running the built code) and the library. Checks what a user would: what is listed, which files
// are left on disk, what still pulls offline, and how much space was given back.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, stat, utimes, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { listModels, pruneCache, pull, removeModels, tagModel, type ModelListing } from "../src/index.js";
import { formatAge, formatSize } from "../src/cli/human-format.js";
import { Store } from "../src/oci/store/index.js";
import { dockerV01, fakeGguf } from "./helpers/artifacts.js";
import { cliEnv, describeRun, lines, runCli, type CliResult } from "./helpers/cli.js";
import { digestOf, pushArtifact } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const DAY_MS = 24 * 60 * 60 * 1000;

let registry: RegistryHandle;
let workDir: string;
let home: string;
let cacheCount = 0;

interface Pushed {
  reference: string;
  digest: string;
  config: string;
  layers: string[];
}

beforeAll(async () => {
  registry = await startRegistry();
  workDir = await makeTempDir("llama-oci-manage");
  home = join(workDir, "home");
  await mkdir(home);
});

afterAll(async () => {
  await registry?.stop();
  await removeDir(workDir);
});

async function newCache(): Promise<string> {
  const dir = join(workDir, `cache-${++cacheCount}`);
  await mkdir(dir);
  return dir;
}

async function push(repositoryAndTag: string, spec: Parameters<typeof dockerV01>[0]): Promise<Pushed> {
  const [repository, tag] = repositoryAndTag.split(":") as [string, string];
  const { digest, manifest } = await pushArtifact({ registryUrl: registry.url, repository }, tag, dockerV01(spec));
  const parsed = JSON.parse(manifest.toString()) as { config: { digest: string }; layers: { digest: string }[] };
  return { reference: `${registry.host}/${repositoryAndTag}`, digest, config: parsed.config.digest, layers: parsed.layers.map((l) => l.digest) };
}

function cli(cacheDir: string, ...args: string[]): Promise<CliResult> {
  return runCli([...args, "--cache-dir", cacheDir], { env: cliEnv(home, cacheDir) });
}

function blobPath(cacheDir: string, digest: string): string {
  return join(cacheDir, "oci", "blobs", "sha256", digest.slice("sha256:".length));
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function listing(cacheDir: string): Promise<ModelListing[]> {
  const run = await cli(cacheDir, "ls", "--json");
  expect(run.exitCode, describeRun(run)).toBe(0);
  return JSON.parse(run.stdout) as ModelListing[];
}

/** Every file under the cache: relative path → inode and size. */
async function snapshot(cacheDir: string): Promise<Map<string, { ino: number; size: number }>> {
  const files = new Map<string, { ino: number; size: number }>();
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      else {
        const info = await stat(path);
        files.set(relative(cacheDir, path), { ino: info.ino, size: info.size });
      }
    }
  };
  await walk(cacheDir);
  return files;
}

/** Bytes of the files (inodes) present before and gone after: what deleting really gave back. */
function bytesGone(before: Map<string, { ino: number; size: number }>, after: Map<string, { ino: number; size: number }>): number {
  const remaining = new Set([...after.values()].map((f) => f.ino));
  const gone = new Map<number, number>();
  for (const file of before.values()) if (!remaining.has(file.ino)) gone.set(file.ino, file.size);
  return [...gone.values()].reduce((sum, size) => sum + size, 0);
}

/** A partial download as an interrupted pull leaves it, last touched `ageMs` ago. */
async function makePartial(cacheDir: string, ageMs: number, bytes = 10_000): Promise<{ digest: string; files: string[] }> {
  const digest = digestOf(randomBytes(32));
  const base = blobPath(cacheDir, digest);
  await mkdir(join(base, ".."), { recursive: true });
  await writeFile(`${base}.tmp`, randomBytes(bytes));
  await writeFile(`${base}.digest`, `${digest}\n`);
  const when = new Date(Date.now() - ageMs);
  for (const file of [`${base}.tmp`, `${base}.digest`]) await utimes(file, when, when);
  return { digest, files: [`${base}.tmp`, `${base}.digest`] };
}

/** A lock file left by a process that has exited. */
async function makeDeadLock(cacheDir: string): Promise<string> {
  const child = spawnSync(process.execPath, ["-e", ""]);
  const path = `${blobPath(cacheDir, digestOf(randomBytes(32)))}.lock`;
  await writeFile(path, `${JSON.stringify({ pid: child.pid, host: hostname(), at: new Date().toISOString() })}\n`);
  return path;
}

describe("sizes and ages as docker prints them", () => {
  test("decimal units with three significant digits", () => {
    expect([0, 999, 1000, 91_740_000, 999_999, 1_234_567_890].map(formatSize)).toEqual(["0 B", "999 B", "1 kB", "91.7 MB", "1 MB", "1.23 GB"]);
  });
  test("relative times", () => {
    const now = Date.parse("2025-06-01T12:00:00Z");
    const ago = (ms: number) => formatAge(new Date(now - ms), now);
    expect([ago(500), ago(30_000), ago(90_000), ago(120_000), ago(3_600_000), ago(5 * 3_600_000), ago(8 * DAY_MS), ago(20 * DAY_MS)]).toEqual([
      "Less than a second ago",
      "30 seconds ago",
      "About a minute ago",
      "2 minutes ago",
      "About an hour ago",
      "5 hours ago",
      "8 days ago",
      "2 weeks ago",
    ]);
  });
});

describe("ls", () => {
  test("one row per tag with the model ID, the size of all files and when it was pulled", async () => {
    const cacheDir = await newCache();
    const shards = [fakeGguf(120_000, 101), fakeGguf(110_000, 102), fakeGguf(90_000, 103)];
    const sharded = await push("team/sharded:v1", {
      ggufs: shards,
      mmproj: fakeGguf(50_000, 104),
      chatTemplate: "{{ messages }}",
      licenses: ["MIT"],
    });
    const single = await push("team/single:v1", { ggufs: [fakeGguf(64_000, 105)] });
    const started = Date.now();
    const pulled = await pull(sharded.reference, { cacheDir });
    await pull(single.reference, { cacheDir });

    const rows = await listing(cacheDir);
    expect(rows.map((r) => r.reference).sort()).toEqual([sharded.reference, single.reference].sort());
    const row = rows.find((r) => r.reference === sharded.reference)!;
    expect(row.id).toBe(sharded.digest.slice("sha256:".length, "sha256:".length + 12));
    expect(row.digest).toBe(sharded.digest);
    expect(row.size).toBe(120_000 + 110_000 + 90_000 + 50_000 + "{{ messages }}".length + "MIT".length);
    expect(Date.parse(row.pulledAt)).toBeGreaterThanOrEqual(started - 1000);
    expect(Date.parse(row.pulledAt)).toBeLessThanOrEqual(Date.now());
    expect(row.path).toBe(pulled.path);
    expect(rows.find((r) => r.reference === single.reference)!.size).toBe(64_000);

    const table = await cli(cacheDir, "ls");
    expect(table.exitCode, describeRun(table)).toBe(0);
    const [header, ...body] = lines(table.stdout);
    expect(header).toMatch(/^MODEL NAME +MODEL ID +SIZE +PULLED$/);
    expect(body).toHaveLength(2);
    const cells = body.find((l) => l.startsWith(`${sharded.reference} `))!.split(/ {3,}/);
    expect(cells.slice(0, 3)).toEqual([sharded.reference, row.id, "370 kB"]);
    expect(cells[3]).toMatch(/^(Less than a second|1 second|\d+ seconds) ago$/);
    // Columns line up: every row's ID starts where the header's MODEL ID does.
    for (const line of body) expect(line.indexOf(line.split(/ {3,}/)[1]!)).toBe(header!.indexOf("MODEL ID"));
  });

  test("an empty cache prints the header only, and [] as JSON", async () => {
    const cacheDir = await newCache();
    const table = await cli(cacheDir, "ls");
    expect(table.exitCode, describeRun(table)).toBe(0);
    expect(table.stdout).toBe("MODEL NAME   MODEL ID   SIZE   PULLED\n");
    expect(await listing(cacheDir)).toEqual([]);
  });
});

describe("rm", () => {
  test("removing one of two models that share a blob keeps the blob; removing the last deletes everything", async () => {
    const cacheDir = await newCache();
    const gguf = fakeGguf(200_000, 201);
    const a = await push("team/share-a:v1", { ggufs: [gguf], licenses: ["license A"] });
    const b = await push("team/share-b:v1", { ggufs: [gguf], licenses: ["license B"] });
    const shared = digestOf(gguf);
    await pull(a.reference, { cacheDir });
    await pull(b.reference, { cacheDir });

    const rmA = await cli(cacheDir, "rm", a.reference);
    expect(rmA.exitCode, describeRun(rmA)).toBe(0);
    const out = lines(rmA.stdout);
    expect(out.slice(0, 2)).toEqual([`Untagged: ${a.reference}`, `Deleted: ${a.digest}`]);
    const licenseA = a.layers.find((d) => d !== shared)!;
    expect(out.slice(2).sort()).toEqual([`Deleted: ${a.config}`, `Deleted: ${licenseA}`].sort());
    expect(await exists(blobPath(cacheDir, shared))).toBe(true);
    expect(await exists(blobPath(cacheDir, a.config))).toBe(false);
    expect((await listing(cacheDir)).map((r) => r.reference)).toEqual([b.reference]);

    const offline = await cli(cacheDir, "pull", b.reference, "--offline", "-q");
    expect(offline.exitCode, describeRun(offline)).toBe(0);
    expect((await readFile(offline.stdout.trim())).equals(gguf)).toBe(true);

    const rmB = await cli(cacheDir, "rm", b.reference);
    expect(rmB.exitCode, describeRun(rmB)).toBe(0);
    expect(lines(rmB.stdout)).toContain(`Deleted: ${shared}`);
    const oci = join(cacheDir, "oci");
    expect(await readdir(join(oci, "blobs", "sha256"))).toEqual([]);
    expect(await readdir(join(oci, "manifests", "sha256"))).toEqual([]);
    expect(await readdir(join(oci, "models"))).toEqual([]);
    expect(await listing(cacheDir)).toEqual([]);
  });

  test("an unknown reference fails naming it, and the other references are still removed", async () => {
    const cacheDir = await newCache();
    const c = await push("team/known:v1", { ggufs: [fakeGguf(30_000, 301)] });
    await pull(c.reference, { cacheDir });
    const run = await cli(cacheDir, "rm", "team-nosuch:v9", c.reference);
    expect(run.exitCode, describeRun(run)).toBe(1);
    expect(run.stderr).toMatch(/^error: team-nosuch:v9 \(docker\.io\/ai\/team-nosuch:v9\) is not in the cache/m);
    expect(lines(run.stdout)[0]).toBe(`Untagged: ${c.reference}`);
    expect(await listing(cacheDir)).toEqual([]);
  });

  test("repository@digest removes the names of that content; a model ID with two names needs --force", async () => {
    const cacheDir = await newCache();
    const d = await push("team/bydigest:v1", { ggufs: [fakeGguf(30_000, 401)] });
    await pull(d.reference, { cacheDir });
    const byDigest = await cli(cacheDir, "rm", `${registry.host}/team/bydigest@${d.digest}`);
    expect(byDigest.exitCode, describeRun(byDigest)).toBe(0);
    expect(lines(byDigest.stdout).slice(0, 2)).toEqual([`Untagged: ${d.reference}`, `Deleted: ${d.digest}`]);

    await pull(d.reference, { cacheDir });
    await tagModel(d.reference, "local/second:v1", { cacheDir });
    const id = d.digest.slice("sha256:".length, "sha256:".length + 12);
    const refused = await cli(cacheDir, "rm", id);
    expect(refused.exitCode, describeRun(refused)).toBe(1);
    expect(refused.stderr).toContain(`model ${id} has 2 names`);
    expect(await listing(cacheDir)).toHaveLength(2);
    const forced = await cli(cacheDir, "rm", "-f", id);
    expect(forced.exitCode, describeRun(forced)).toBe(0);
    expect(lines(forced.stdout).filter((l) => l.startsWith("Untagged: ")).sort()).toEqual(
      [`Untagged: ${d.reference}`, "Untagged: local/second:v1"].sort(),
    );
    expect(lines(forced.stdout)).toContain(`Deleted: ${d.digest}`);
    expect(await listing(cacheDir)).toEqual([]);
  });

  test("a blob locked by a running download is left in place, and prune deletes it once the lock is gone", async () => {
    const cacheDir = await newCache();
    const gguf = fakeGguf(40_000, 501);
    const e = await push("team/locked:v1", { ggufs: [gguf] });
    await pull(e.reference, { cacheDir });
    const store = new Store(cacheDir);
    const lock = await store.lockBlob(digestOf(gguf));
    let released = false;
    try {
      const [outcome] = await removeModels([e.reference], { cacheDir });
      expect(outcome!.error).toBeUndefined();
      expect(outcome!.untagged).toEqual([e.reference]);
      expect(outcome!.deleted).toEqual([e.digest, e.config]);
      expect(await exists(blobPath(cacheDir, digestOf(gguf)))).toBe(true);

      // While a download runs, prune keeps recent unused blobs (the pull may be about to use them).
      const during = await pruneCache({ cacheDir });
      expect(during.kept).toEqual([digestOf(gguf)]);
      expect(during.items).toEqual([]);
      await lock.release();
      released = true;
      const after = await pruneCache({ cacheDir });
      expect(after.items).toEqual([{ kind: "blob", digest: digestOf(gguf), size: gguf.length }]);
      expect(await exists(blobPath(cacheDir, digestOf(gguf)))).toBe(false);
    } finally {
      if (!released) await lock.release();
    }
  });
});

describe("prune", () => {
  test("deletes only what no tag uses, old partials and dead locks; --dry-run lists the same and deletes nothing", async () => {
    const cacheDir = await newCache();
    const oldGguf = fakeGguf(150_000, 601);
    const first = await push("team/moving:v1", { ggufs: [oldGguf], licenses: ["MIT"] });
    await pull(first.reference, { cacheDir });
    // The tag moves to new content; the first model is now referenced by nothing, except the shared license.
    const newGguf = fakeGguf(160_000, 602);
    const second = await push("team/moving:v1", { ggufs: [newGguf], licenses: ["MIT"] });
    await pull(second.reference, { cacheDir });
    const other = await push("team/other:v1", { ggufs: [fakeGguf(20_000, 603)] });
    await pull(other.reference, { cacheDir });

    const oldPartial = await makePartial(cacheDir, 8 * DAY_MS, 12_345);
    const youngPartial = await makePartial(cacheDir, 1 * DAY_MS);
    const deadLock = await makeDeadLock(cacheDir);
    const lockDigest = `sha256:${deadLock.slice(deadLock.lastIndexOf("/") + 1, -".lock".length)}`;

    const before = await snapshot(cacheDir);
    const dry = await cli(cacheDir, "prune", "--dry-run");
    expect(dry.exitCode, describeRun(dry)).toBe(0);
    expect(await snapshot(cacheDir)).toEqual(before);
    const dryLines = lines(dry.stdout);
    expect(dryLines.every((l, i) => (i < dryLines.length - 1 ? l.startsWith("Would delete ") : l.startsWith("Total space that would be reclaimed: ")))).toBe(true);

    const real = await cli(cacheDir, "prune");
    expect(real.exitCode, describeRun(real)).toBe(0);
    const realLines = lines(real.stdout);
    expect(realLines.slice(0, -1).map((l) => l.replace(/^Deleted /, ""))).toEqual(dryLines.slice(0, -1).map((l) => l.replace(/^Would delete /, "")));
    const after = await snapshot(cacheDir);

    const items = realLines.slice(0, -1).map((l) => /^Deleted ([a-z ]+): (sha256:[0-9a-f]{64})/.exec(l)!.slice(1, 3).join(" "));
    expect(items.sort()).toEqual(
      [
        `model ${first.digest}`,
        `manifest ${first.digest}`,
        `blob ${first.config}`,
        `blob ${digestOf(oldGguf)}`,
        `stale lock ${lockDigest}`,
        `partial download ${oldPartial.digest}`,
      ].sort(),
    );
    // The total is what really left the disk (model folders are hard links: counted once, with the blobs).
    const gone = bytesGone(before, after);
    expect(gone).toBeGreaterThan(150_000 + 12_345);
    expect((await pruneCache({ cacheDir, dryRun: true })).items).toEqual([]);
    expect(realLines.at(-1)).toBe(dryLines.at(-1)!.replace("Total space that would be reclaimed", "Total reclaimed space"));

    for (const file of oldPartial.files) expect(await exists(file)).toBe(false);
    for (const file of youngPartial.files) expect(await exists(file)).toBe(true);
    expect(await exists(deadLock)).toBe(false);
    expect(await exists(blobPath(cacheDir, digestOf(oldGguf)))).toBe(false);
    for (const ref of [second.reference, other.reference]) {
      const offline = await cli(cacheDir, "pull", ref, "--offline", "-q");
      expect(offline.exitCode, describeRun(offline)).toBe(0);
    }
    expect((await listing(cacheDir)).map((r) => r.reference).sort()).toEqual([second.reference, other.reference].sort());
  });

  test("the reported total equals the bytes that left the disk", async () => {
    const cacheDir = await newCache();
    const a = await push("team/total:v1", { ggufs: [fakeGguf(70_000, 701)] });
    await pull(a.reference, { cacheDir });
    await push("team/total:v1", { ggufs: [fakeGguf(80_000, 702)] });
    await pull(a.reference, { cacheDir });
    await makePartial(cacheDir, 30 * DAY_MS, 5_000);
    const before = await snapshot(cacheDir);
    const planned = await pruneCache({ cacheDir, dryRun: true });
    const result = await pruneCache({ cacheDir });
    const after = await snapshot(cacheDir);
    expect(result.items).toEqual(planned.items);
    expect(result.freedBytes).toBe(planned.freedBytes);
    expect(result.freedBytes).toBe(bytesGone(before, after));
  });

  test("a partial download held by a live lock survives, however old", async () => {
    const cacheDir = await newCache();
    const partial = await makePartial(cacheDir, 30 * DAY_MS);
    const lock = await new Store(cacheDir).lockBlob(partial.digest);
    try {
      const result = await pruneCache({ cacheDir });
      expect(result.items).toEqual([]);
      for (const file of partial.files) expect(await exists(file)).toBe(true);
    } finally {
      await lock.release();
    }
    expect((await pruneCache({ cacheDir })).items.map((i) => i.kind)).toEqual(["partial"]);
  });

  test("an empty cache reclaims nothing", async () => {
    const run = await cli(await newCache(), "prune");
    expect(run.exitCode, describeRun(run)).toBe(0);
    expect(run.stdout).toBe("Total reclaimed space: 0 B\n");
  });
});

describe("tag", () => {
  test("a second name pulls offline, ls shows both, and removing one keeps the other", async () => {
    const cacheDir = await newCache();
    const gguf = fakeGguf(45_000, 801);
    const t = await push("team/tagged:v1", { ggufs: [gguf] });
    await pull(t.reference, { cacheDir });

    const tagged = await cli(cacheDir, "tag", t.reference, "mine/alias:dev");
    expect(tagged.exitCode, describeRun(tagged)).toBe(0);
    expect(tagged.stdout).toBe("");
    const offline = await cli(cacheDir, "pull", "mine/alias:dev", "--offline", "-q");
    expect(offline.exitCode, describeRun(offline)).toBe(0);
    expect((await readFile(offline.stdout.trim())).equals(gguf)).toBe(true);

    const rows = await listing(cacheDir);
    expect(rows.map((r) => r.reference).sort()).toEqual(["mine/alias:dev", t.reference].sort());
    expect(new Set(rows.map((r) => r.id)).size).toBe(1);
    expect(rows.every((r) => r.size === gguf.length)).toBe(true);

    const rm = await cli(cacheDir, "rm", t.reference);
    expect(rm.exitCode, describeRun(rm)).toBe(0);
    expect(rm.stdout).toBe(`Untagged: ${t.reference}\n`);
    const still = await cli(cacheDir, "pull", "mine/alias:dev", "--offline", "-q");
    expect(still.exitCode, describeRun(still)).toBe(0);
    expect((await readFile(still.stdout.trim())).equals(gguf)).toBe(true);

    // By model ID, through the library.
    const byId = await tagModel(rows[0]!.id, "mine/third:v3", { cacheDir });
    expect(byId).toEqual({ reference: "mine/third:v3", digest: t.digest });
    expect((await listModels({ cacheDir })).map((r) => r.reference).sort()).toEqual(["mine/alias:dev", "mine/third:v3"]);
  });

  test("an uncached source or a digest as the new name fails clearly", async () => {
    const cacheDir = await newCache();
    const missing = await cli(cacheDir, "tag", `${registry.host}/team/never:v1`, "x/y:z");
    expect(missing.exitCode, describeRun(missing)).toBe(1);
    expect(missing.stderr).toBe(
      `error: ${registry.host}/team/never:v1 is not in the cache (${join(cacheDir, "oci")}) (pull it first: llama-oci pull ${registry.host}/team/never:v1)\n`,
    );
    const t = await push("team/digest-target:v1", { ggufs: [fakeGguf(10_000, 901)] });
    await pull(t.reference, { cacheDir });
    const bad = await cli(cacheDir, "tag", t.reference, `x/y@${t.digest}`);
    expect(bad.exitCode, describeRun(bad)).toBe(1);
    expect(bad.stderr).toMatch(/must be a tag, not a digest/);
    expect(await listing(cacheDir)).toHaveLength(1);
  });
});
