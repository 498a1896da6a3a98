// The cache as the source of truth when the registry has nothing to say: a model pulled by digest is listed and
// survives prune, and a tag the registry does not have (packaged locally, never pushed) is served from the cache.
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { listModels, packageModel, pruneCache, pull } from "../src/index.js";
import { dockerV01, fakeGguf } from "./helpers/artifacts.js";
import { pushArtifact } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { makeTinyLlama } from "./helpers/tiny-model.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

let registry: RegistryHandle;
let workDir: string;

beforeAll(async () => {
  registry = await startRegistry();
  workDir = await makeTempDir("llama-oci-cache-fallback");
});

afterAll(async () => {
  await registry?.stop();
  await removeDir(workDir);
});

test("a model pulled by digest is listed by ls and kept by prune", async () => {
  const cacheDir = join(workDir, "digest-cache");
  const gguf = fakeGguf(30_000, 41);
  const pushed = await pushArtifact({ registryUrl: registry.url, repository: "ai/bydigest" }, "v1", dockerV01({ ggufs: [gguf] }));
  const result = await pull(`${registry.host}/ai/bydigest@${pushed.digest}`, { cacheDir });
  const listed = await listModels({ cacheDir });
  expect(listed.map((m) => m.digest)).toContain(pushed.digest);
  const pruned = await pruneCache({ cacheDir });
  expect(pruned.items.map((i) => i.digest)).not.toContain(result.files[0]!.digest);
  const offline = await pull(`${registry.host}/ai/bydigest@${pushed.digest}`, { cacheDir, offline: true });
  expect(offline.path).toBe(result.path);
});

test("a tag the registry does not have is served from the cache with a warning", async () => {
  const cacheDir = join(workDir, "package-cache");
  const file = join(workDir, "local.gguf");
  await makeTinyLlama(file, { seed: 5 });
  const reference = `${registry.host}/local/only:v1`;
  const packaged = await packageModel({ reference, gguf: file, cacheDir });
  const warnings: string[] = [];
  const result = await pull(reference, { cacheDir, onWarning: (m) => warnings.push(m) });
  expect(result.path).toBe(packaged.path);
  expect(result.fromCache).toBe(true);
  expect(warnings.join("\n")).toMatch(/does not have it.*using the cached copy/);
  // Without a cached copy the same answer is an error, as before.
  await expect(pull(reference, { cacheDir: join(workDir, "empty-cache") })).rejects.toMatchObject({ code: "NOT_FOUND" });
});

test("a cached blob deleted during the pull (a concurrent prune) is fetched again", async () => {
  const cacheDir = join(workDir, "vanish-cache");
  const gguf = fakeGguf(40_000, 42);
  const target = { registryUrl: registry.url, repository: "ai/vanish" };
  await pushArtifact(target, "a", dockerV01({ ggufs: [gguf] }));
  await pushArtifact(target, "b", dockerV01({ ggufs: [gguf], contextSize: 1024 }));
  const first = await pull(`${registry.host}/ai/vanish:a`, { cacheDir });
  const blob = join(cacheDir, "oci", "blobs", "sha256", first.files[0]!.digest.slice("sha256:".length));
  let deleted = false;
  const second = await pull(`${registry.host}/ai/vanish:b`, {
    cacheDir,
    onProgress: (event) => {
      // The moment the shared layer is found in the cache, delete it, as a prune racing this pull could.
      if (event.type === "layer-done" && event.fromCache && event.digest === first.files[0]!.digest && !deleted) {
        deleted = true;
        rmSync(blob);
      }
    },
  });
  expect(deleted).toBe(true);
  expect(second.fromCache).toBe(false);
  expect(readFileSync(second.path).equals(gguf)).toBe(true);
});
