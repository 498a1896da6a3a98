// Eight `llama-oci pull` processes of the same model at once, sharing one cache: the per-blob lock must make one
// of them download while the others wait, so every process succeeds with the same path, the blob crosses the
// network about once, and the cache ends up with one copy and no temporary files.
import { readdir, readFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { dockerV01, fakeGguf } from "./helpers/artifacts.js";
import { cliEnv, describeRun, lines, spawnCli } from "./helpers/cli.js";
import { startFaultProxy, type FaultProxy } from "./helpers/fault-proxy.js";
import { digestOf, pushArtifact } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const PROCESSES = 8;
const SIZE = 20 * 1024 * 1024;

let registry: RegistryHandle;
let proxy: FaultProxy;
let workDir: string;

beforeAll(async () => {
  registry = await startRegistry();
  proxy = await startFaultProxy(registry.url);
  workDir = await makeTempDir("llama-oci-cli-concurrency");
});

afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
  await removeDir(workDir);
});

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => relative(dir, join(e.parentPath, e.name)));
}

test(`${PROCESSES} concurrent pulls of one reference download the blob once`, async () => {
  const gguf = fakeGguf(SIZE, 201);
  const digest = digestOf(gguf);
  await pushArtifact({ registryUrl: registry.url, repository: "ai/crowd" }, "v1", dockerV01({ ggufs: [gguf] }));
  const cache = join(workDir, "cache");
  const env = cliEnv(join(workDir, "home"), cache);

  const runs = await Promise.all(
    Array.from({ length: PROCESSES }, () => spawnCli(["pull", `${proxy.host}/ai/crowd:v1`], { env, timeoutMs: 25_000 }).result),
  );
  for (const run of runs) expect(run.exitCode, describeRun(run)).toBe(0);
  const paths = new Set(runs.map((run) => lines(run.stdout).at(-1)));
  expect(paths.size).toBe(1);
  const [path] = paths;
  expect((await readFile(path!)).equals(gguf)).toBe(true);

  const blobBytes = proxy.bytesByPath.get(`/v2/ai/crowd/blobs/${digest}`) ?? 0;
  expect(blobBytes).toBeGreaterThanOrEqual(SIZE);
  expect(blobBytes).toBeLessThan(SIZE * 1.5);
  // One process downloaded; the rest found the blob in the cache after waiting for the lock.
  const short = digest.slice("sha256:".length, "sha256:".length + 12);
  expect(runs.filter((run) => lines(run.stderr).includes(`${short}: Download complete`))).toHaveLength(1);
  expect(runs.filter((run) => lines(run.stderr).includes(`${short}: Already exists`))).toHaveLength(PROCESSES - 1);

  const blobs = await readdir(join(cache, "oci", "blobs", "sha256"));
  expect(blobs.filter((name) => name.startsWith(digest.slice(7)))).toEqual([digest.slice(7)]);
  const leftovers = (await listFiles(join(cache, "oci"))).filter((name) => /\.(tmp|lock|digest|new|link)$/.test(name));
  expect(leftovers).toEqual([]);
});
