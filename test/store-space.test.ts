// Disk space, on a real 8 MiB tmpfs as the cache (mounted here; skipped with the reason where mount is not
// allowed): the free-space check counts what is missing (cached blobs and the bytes of resumable partials are not);
// a pull of a model larger than the free space fails before any download with one line naming the space needed, the
// space free and the cache; and a disk that fills up during a download gives the same kind of line, keeps the
// partial file (only whole, consistent bytes), commits nothing, and the next pull resumes from it.
import { spawnSync } from "node:child_process";
import { closeSync, openSync, writeSync } from "node:fs";
import { mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test, type TestContext } from "vitest";
import { assertFreeSpace, freeSpace, missingBytes, Store } from "../src/oci/store/index.js";
import { dockerV01, fakeGguf } from "./helpers/artifacts.js";
import { cliEnv, describeRun, lines, runCli, spawnCli } from "./helpers/cli.js";
import { digestOf, pushArtifact } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { startSlowProxy, type SlowProxy } from "./helpers/slow-proxy.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const MiB = 1024 * 1024;

let workDir: string;
let mountPoint: string;
/** Why no tmpfs could be mounted, or undefined when it was. */
let noMount: string | undefined;
let registry: RegistryHandle;
let proxy: SlowProxy;

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-store-space");
  mountPoint = join(workDir, "cache");
  await mkdir(mountPoint);
  const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", mountPoint], { encoding: "utf8" });
  if (mounted.error || mounted.status !== 0) {
    noMount = `cannot mount a tmpfs as the cache (needs root or CAP_SYS_ADMIN): ${(mounted.error?.message ?? mounted.stderr).trim()}`;
    return;
  }
  registry = await startRegistry();
  proxy = await startSlowProxy(registry.url);
});

afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
  if (noMount === undefined) spawnSync("umount", ["-l", mountPoint]);
  await removeDir(workDir);
});

/** A fresh, empty cache on the tmpfs. */
async function emptyCache(context: TestContext): Promise<string> {
  if (noMount !== undefined) context.skip(noMount);
  for (const entry of await readdir(mountPoint)) await rm(join(mountPoint, entry), { recursive: true, force: true });
  return mountPoint;
}

/** Fills the file system with one file until it is full; returns the file. */
function fillDisk(path: string): string {
  const fd = openSync(path, "w");
  const chunk = Buffer.alloc(MiB, 0x55);
  try {
    for (;;) {
      try {
        if (writeSync(fd, chunk) < chunk.length) continue;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOSPC") return path;
        throw error;
      }
    }
  } finally {
    closeSync(fd);
  }
}

const ERROR_LINE = /^error: not enough free space in (.+): ([\d.]+ [kMG]?B) needed, ([\d.]+ [kMG]?B) free \((.+)\)$/;

describe("free space before a download", () => {
  test("what is missing: cached blobs count nothing, a resumable partial counts what it lacks", async (context) => {
    const cache = await emptyCache(context);
    const store = new Store(cache);
    const cached = digestOf(Buffer.from("cached"));
    const partial = digestOf(Buffer.from("partial"));
    const stranger = digestOf(Buffer.from("a partial of another digest"));
    await mkdir(store.layout.blobsDir("sha256"), { recursive: true });
    await writeFile(store.blobs.path(cached), Buffer.alloc(MiB));
    await writeFile(store.blobs.partialPath(partial), Buffer.alloc(3 * MiB));
    await writeFile(store.blobs.partialDigestPath(partial), `${partial}\n`);
    await writeFile(store.blobs.partialPath(stranger), Buffer.alloc(MiB / 2));
    await writeFile(store.blobs.partialDigestPath(stranger), `${cached}\n`);

    expect(await missingBytes(store, [{ digest: cached, size: MiB }])).toBe(0);
    expect(await missingBytes(store, [{ digest: partial, size: 7 * MiB }])).toBe(4 * MiB);
    expect(await missingBytes(store, [{ digest: stranger, size: MiB }])).toBe(MiB);
    expect(await missingBytes(store, [{ digest: partial, size: 7 * MiB }, { digest: partial, size: 7 * MiB }])).toBe(4 * MiB);

    // About 3.5 MiB are free now: 7 MiB fit because 3 MiB of them are already there, 7 MiB of a new blob do not.
    const { free } = await freeSpace(store.root);
    expect(free).toBeLessThan(4 * MiB);
    await assertFreeSpace(store, [{ digest: partial, size: 6 * MiB }, { digest: cached, size: MiB }]);
    const error: unknown = await assertFreeSpace(store, [{ digest: digestOf(Buffer.from("new")), size: 7 * MiB }]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toMatchObject({ code: "NO_SPACE" });
    expect((error as Error).message).toMatch(new RegExp(`^not enough free space in ${store.root}: 7\\.34 MB needed, [\\d.]+ MB free$`));
  });

  test("a pull of a model larger than the free space fails before downloading, with one line", { timeout: 60_000 }, async (context) => {
    const cache = await emptyCache(context);
    const gguf = fakeGguf(10 * MiB, 1010);
    await pushArtifact({ registryUrl: registry.url, repository: "ai/too-big" }, "v1", dockerV01({ ggufs: [gguf] }));
    proxy.requests.length = 0;
    const run = await runCli(["pull", `${proxy.host}/ai/too-big:v1`], { env: cliEnv(join(workDir, "home"), cache) });
    expect(run.exitCode, describeRun(run)).toBe(1);
    const errors = lines(run.stderr).filter((line) => line.startsWith("error:"));
    expect(errors, describeRun(run)).toHaveLength(1);
    const [, dir, needed, free, hint] = ERROR_LINE.exec(errors[0]!) ?? [];
    expect(dir, errors[0]).toBe(join(cache, "oci"));
    expect(needed).toBe("10.5 MB");
    expect(Number(free!.split(" ")[0])).toBeLessThanOrEqual(8.39);
    expect(hint).toContain("--cache-dir");
    expect(proxy.requests.filter((r) => r.path.includes("/blobs/") && r.path.includes(digestOf(gguf)))).toEqual([]);
    const blobs = await readdir(join(cache, "oci", "blobs", "sha256")).catch(() => []);
    expect(blobs.filter((name) => !name.endsWith(".lock"))).toEqual([]);
  });
});

describe("a disk that fills up during a download", () => {
  test("fails with one line, keeps the partial's whole bytes, commits nothing; the next pull resumes", { timeout: 90_000 }, async (context) => {
    const cache = await emptyCache(context);
    const size = 6 * MiB;
    const gguf = fakeGguf(size, 606);
    const digest = digestOf(gguf);
    await pushArtifact({ registryUrl: registry.url, repository: "ai/fills-up" }, "v1", dockerV01({ ggufs: [gguf] }));
    const env = cliEnv(join(workDir, "home"), cache);
    const reference = `${proxy.host}/ai/fills-up:v1`;
    const blobsDir = join(cache, "oci", "blobs", "sha256");
    const hex = digest.slice("sha256:".length);
    const partial = join(blobsDir, `${hex}.tmp`);
    const kept = 2_000_000;

    // The download stops after 2 MB (so the free-space check, if any, has passed), the disk is filled, and the rest comes.
    proxy.hold(`/blobs/${digest}`, kept);
    const pull = spawnCli(["pull", reference], { env, timeoutMs: 60_000 });
    await proxy.held();
    for (let i = 0; (await stat(partial).catch(() => undefined))?.size !== kept; i++) {
      if (i > 400) throw new Error(`the partial never reached ${kept} bytes`);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    const filler = fillDisk(join(cache, "filler"));
    proxy.release();
    const run = await pull.result;

    expect(run.exitCode, describeRun(run)).toBe(1);
    const errors = lines(run.stderr).filter((line) => line.startsWith("error:"));
    expect(errors, describeRun(run)).toHaveLength(1);
    expect(errors[0]).toMatch(/^error: not enough free space in .+ writing model\.gguf: /);
    const [, dir, needed, , hint] = ERROR_LINE.exec(errors[0]!.replace(" writing model.gguf", "")) ?? [];
    expect(dir, errors[0]).toBe(join(cache, "oci"));
    expect(needed).toBe("4.29 MB");
    expect(hint).toBe("free some space, e.g. with llama-oci prune, and run the same pull again: it resumes from the 2 MB already downloaded");

    // The partial holds exactly the bytes that were written whole, and they are the blob's; nothing was committed.
    expect((await readFile(partial)).equals(gguf.subarray(0, kept))).toBe(true);
    expect((await readFile(join(blobsDir, `${hex}.digest`), "utf8")).trim()).toBe(digest);
    const names = await readdir(blobsDir);
    expect(names).not.toContain(hex);
    expect(names.filter((name) => name.endsWith(".lock"))).toEqual([]);
    expect(await readdir(join(cache, "oci", "models")).catch(() => [])).toEqual([]);

    await rm(filler);
    proxy.requests.length = 0;
    const again = await runCli(["pull", reference], { env, timeoutMs: 60_000 });
    expect(again.exitCode, describeRun(again)).toBe(0);
    expect(again.stderr).toContain(`${hex.slice(0, 12)}: Resuming download from 2.00 MB`);
    expect(proxy.requests.filter((r) => r.method === "GET" && r.path.endsWith(`/blobs/${digest}`)).map((r) => r.range)).toEqual([`bytes=${kept}-${size - 1}`]);
    expect((await readFile(lines(again.stdout).at(-1)!)).equals(gguf)).toBe(true);
    expect(await readdir(blobsDir)).not.toContain(`${hex}.tmp`);
  });
});
