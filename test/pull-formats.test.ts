// Pulls every model artifact format from a real docker-registry (anonymous mode) through the library API,
// and checks what a user would: the files on disk are byte-identical, named as llama.cpp expects, and cached.
import { readFile, readdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { pull } from "../src/index.js";
import { dockerV01, dockerV02, fakeGguf, modelPack, preRelease } from "./helpers/artifacts.js";
import { startFaultProxy, type FaultProxy } from "./helpers/fault-proxy.js";
import { OCI_MANIFEST, pushArtifact, pushIndex, type PushTarget } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

let registry: RegistryHandle;
let proxy: FaultProxy;
let workDir: string;
let cacheCount = 0;

const target = (repository: string): PushTarget => ({ registryUrl: registry.url, repository });
const newCache = () => join(workDir, `cache-${++cacheCount}`);

beforeAll(async () => {
  registry = await startRegistry();
  proxy = await startFaultProxy(registry.url);
  workDir = await makeTempDir("llama-oci-formats");
});

afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
  await removeDir(workDir);
});

describe("artifact formats", () => {
  test("Docker v0.1 single file: path is a plain file with the pushed bytes", async () => {
    const gguf = fakeGguf(300_000, 1);
    const pushed = await pushArtifact(target("ai/single"), "Q4_0", dockerV01({ ggufs: [gguf] }));
    const result = await pull(`${registry.host}/ai/single:Q4_0`, { cacheDir: newCache() });
    expect(result.reference).toBe(`${registry.host}/ai/single:Q4_0`);
    expect(result.digest).toBe(pushed.digest);
    expect(result.fromCache).toBe(false);
    expect(result.format).toBe("docker-v0.1");
    expect(result.path.endsWith("model.gguf")).toBe(true);
    expect((await stat(result.path)).isFile()).toBe(true);
    expect((await readFile(result.path)).equals(gguf)).toBe(true);
    expect(result.size).toBe(gguf.length);
  });

  test("Docker v0.1 sharded with projector, template and licenses: every file, llama.cpp shard names", async () => {
    const shards = [fakeGguf(120_000, 2), fakeGguf(110_000, 3), fakeGguf(90_000, 4)];
    const mmproj = fakeGguf(50_000, 5);
    await pushArtifact(
      target("ai/sharded"),
      "latest",
      dockerV01({ ggufs: shards, mmproj, chatTemplate: "{{ messages }}", licenses: ["MIT text", "Apache text"] }),
    );
    const result = await pull(`${registry.host}/ai/sharded`, { cacheDir: newCache() });
    const names = (await readdir(result.modelDir)).sort();
    expect(names).toEqual(
      ["LICENSE", "LICENSE-2", "mmproj-model.gguf", "model-00001-of-00003.gguf", "model-00002-of-00003.gguf", "model-00003-of-00003.gguf", "template.jinja"].sort(),
    );
    expect(result.path).toBe(join(result.modelDir, "model-00001-of-00003.gguf"));
    for (const [i, shard] of shards.entries()) {
      expect((await readFile(join(result.modelDir, `model-0000${i + 1}-of-00003.gguf`))).equals(shard)).toBe(true);
    }
    expect(result.mmprojPath && (await readFile(result.mmprojPath)).equals(mmproj)).toBe(true);
    expect(result.chatTemplatePath && (await readFile(result.chatTemplatePath, "utf8"))).toBe("{{ messages }}");
    expect(result.files.filter((f) => f.kind === "license")).toHaveLength(2);
  });

  test("Docker v0.2 uses the filepath annotations", async () => {
    const gguf = fakeGguf(80_000, 6);
    await pushArtifact(
      target("team/v02"),
      "v1",
      dockerV02({ files: [{ path: "smol-Q4_0.gguf", data: gguf }, { path: "LICENSE", data: Buffer.from("license") }] }),
    );
    const result = await pull(`${registry.host}/team/v02:v1`, { cacheDir: newCache() });
    expect(result.format).toBe("docker-v0.2");
    expect(result.path.endsWith("smol-Q4_0.gguf")).toBe(true);
    expect((await readFile(result.path)).equals(gguf)).toBe(true);
  });

  test("CNCF ModelPack weight.v1.raw with an mmproj found by name, and the legacy weight.v1.gguf type", async () => {
    const gguf = fakeGguf(70_000, 7);
    const mmproj = fakeGguf(30_000, 8);
    await pushArtifact(
      target("cncf/model"),
      "raw",
      modelPack({ files: [{ path: "model-Q4_0.gguf", data: gguf }, { path: "mmproj-f16.gguf", data: mmproj }] }),
    );
    const raw = await pull(`${registry.host}/cncf/model:raw`, { cacheDir: newCache() });
    expect(raw.format).toBe("cncf-modelpack");
    expect((await readFile(raw.path)).equals(gguf)).toBe(true);
    expect(raw.mmprojPath && (await readFile(raw.mmprojPath)).equals(mmproj)).toBe(true);

    await pushArtifact(target("cncf/model"), "legacy", modelPack({ files: [{ path: "m.gguf", data: gguf }], legacyGgufType: true }));
    const legacy = await pull(`${registry.host}/cncf/model:legacy`, { cacheDir: newCache() });
    expect((await readFile(legacy.path)).equals(gguf)).toBe(true);
  });

  test("pre-release model.file.v1+gguf and any media type containing gguf", async () => {
    const gguf = fakeGguf(40_000, 9);
    await pushArtifact(target("old/model"), "v0", preRelease({ gguf }));
    const old = await pull(`${registry.host}/old/model:v0`, { cacheDir: newCache() });
    expect(old.format).toBe("docker-pre-release");
    expect((await readFile(old.path)).equals(gguf)).toBe(true);

    await pushArtifact(target("odd/model"), "v0", {
      config: { mediaType: "application/vnd.example.config+json", data: Buffer.from("{}") },
      layers: [{ mediaType: "application/x-custom-gguf", data: gguf }],
    });
    const generic = await pull(`${registry.host}/odd/model:v0`, { cacheDir: newCache() });
    expect(generic.format).toBe("generic-gguf");
    expect((await readFile(generic.path)).equals(gguf)).toBe(true);
  });

  test("an image index resolves to the model manifest", async () => {
    const gguf = fakeGguf(60_000, 10);
    const model = await pushArtifact(target("ai/indexed"), "model-only", dockerV01({ ggufs: [gguf] }));
    const other = await pushArtifact(target("ai/indexed"), "arm", dockerV01({ ggufs: [fakeGguf(1000, 11)] }));
    await pushIndex(target("ai/indexed"), "multi", [
      { digest: other.digest, size: other.manifest.length, mediaType: OCI_MANIFEST, platform: { os: "linux", architecture: "arm64" } },
      { digest: model.digest, size: model.manifest.length, mediaType: OCI_MANIFEST, platform: { os: "linux", architecture: "amd64" } },
    ]);
    const result = await pull(`${registry.host}/ai/indexed:multi`, { cacheDir: newCache() });
    expect(result.digest).toBe(model.digest);
    expect((await readFile(result.path)).equals(gguf)).toBe(true);
  });

  test("a file path that escapes the model folder is refused and nothing is cached", async () => {
    const gguf = fakeGguf(10_000, 12);
    await pushArtifact(target("evil/model"), "v1", dockerV02({ files: [{ path: "../../escape.gguf", data: gguf, mediaType: "application/vnd.docker.ai.gguf.v3" }] }));
    const cacheDir = newCache();
    await expect(pull(`${registry.host}/evil/model:v1`, { cacheDir })).rejects.toThrow(/escape|\.\./);
    await expect(stat(join(cacheDir, "..", "escape.gguf"))).rejects.toThrow();
    await expect(readdir(join(cacheDir, "oci", "models")).catch(() => [])).resolves.toEqual([]);
  });
});

describe("cache", () => {
  test("a second pull transfers no blob bytes and uses a manifest HEAD, not a GET", async () => {
    const gguf = fakeGguf(500_000, 20);
    await pushArtifact(target("ai/cached"), "v1", dockerV01({ ggufs: [gguf] }));
    const cacheDir = newCache();
    const first = await pull(`${proxy.host}/ai/cached:v1`, { cacheDir });
    expect(first.fromCache).toBe(false);
    proxy.resetStats();
    const second = await pull(`${proxy.host}/ai/cached:v1`, { cacheDir });
    expect(second.fromCache).toBe(true);
    expect(second.path).toBe(first.path);
    const manifestRequests = proxy.requests.filter((r) => r.path.includes("/manifests/"));
    expect(manifestRequests.map((r) => r.method)).toEqual(["HEAD"]);
    expect(proxy.requests.some((r) => r.path.includes("/blobs/"))).toBe(false);
  });

  test("the same blob under two tags is stored once", async () => {
    const gguf = fakeGguf(200_000, 21);
    await pushArtifact(target("ai/twotags"), "a", dockerV01({ ggufs: [gguf] }));
    await pushArtifact(target("ai/twotags"), "b", dockerV01({ ggufs: [gguf], contextSize: 4096 }));
    const cacheDir = newCache();
    const a = await pull(`${registry.host}/ai/twotags:a`, { cacheDir });
    const b = await pull(`${registry.host}/ai/twotags:b`, { cacheDir });
    expect(b.bytesTransferred).toBeLessThan(gguf.length / 100); // only b's own small config blob
    expect(a.digest).not.toBe(b.digest);
    expect((await stat(a.path)).ino).toBe((await stat(b.path)).ino);
  });

  test("offline pull resolves from the cache with no network; an uncached one fails clearly", async () => {
    const gguf = fakeGguf(50_000, 22);
    await pushArtifact(target("ai/offline"), "v1", dockerV01({ ggufs: [gguf] }));
    const cacheDir = newCache();
    const online = await pull(`${proxy.host}/ai/offline:v1`, { cacheDir });
    proxy.resetStats();
    const offline = await pull(`${proxy.host}/ai/offline:v1`, { cacheDir, offline: true });
    expect(offline.path).toBe(online.path);
    expect(offline.fromCache).toBe(true);
    expect(proxy.requests).toHaveLength(0);
    const viaEnv = await pull(`${proxy.host}/ai/offline:v1`, { cacheDir, env: { ...process.env, LLAMA_OCI_OFFLINE: "1" } });
    expect(viaEnv.path).toBe(online.path);
    await expect(pull(`${proxy.host}/ai/offline:v2`, { cacheDir, offline: true })).rejects.toMatchObject({ code: "OFFLINE" });
    expect(proxy.requests).toHaveLength(0);
  });

  test("an unreachable registry falls back to the cached copy with a warning", async () => {
    const gguf = fakeGguf(50_000, 23);
    await pushArtifact(target("ai/fallback"), "v1", dockerV01({ ggufs: [gguf] }));
    const cacheDir = newCache();
    const spare = await startFaultProxy(registry.url);
    const reference = `${spare.host}/ai/fallback:v1`;
    const online = await pull(reference, { cacheDir });
    await spare.stop();
    const warnings: string[] = [];
    const result = await pull(reference, { cacheDir, onWarning: (m) => warnings.push(m) });
    expect(result.path).toBe(online.path);
    expect(warnings.join("\n")).toMatch(/unreachable.*cached copy/);
  });

  test("a digest reference that is cached needs no network", async () => {
    const gguf = fakeGguf(50_000, 24);
    const pushed = await pushArtifact(target("ai/bydigest"), "v1", dockerV01({ ggufs: [gguf] }));
    const cacheDir = newCache();
    await pull(`${proxy.host}/ai/bydigest@${pushed.digest}`, { cacheDir });
    proxy.resetStats();
    const again = await pull(`${proxy.host}/ai/bydigest@${pushed.digest}`, { cacheDir });
    expect(again.fromCache).toBe(true);
    expect(proxy.requests).toHaveLength(0);
  });

  test("a moved tag downloads the new content", async () => {
    const cacheDir = newCache();
    await pushArtifact(target("ai/moving"), "latest", dockerV01({ ggufs: [fakeGguf(40_000, 25)] }));
    const before = await pull(`${registry.host}/ai/moving`, { cacheDir });
    const newer = fakeGguf(45_000, 26);
    const pushed = await pushArtifact(target("ai/moving"), "latest", dockerV01({ ggufs: [newer] }));
    const after = await pull(`${registry.host}/ai/moving`, { cacheDir });
    expect(after.digest).toBe(pushed.digest);
    expect(after.digest).not.toBe(before.digest);
    expect((await readFile(after.path)).equals(newer)).toBe(true);
  });

  test("--verify re-hashes cached files and replaces a corrupted one", async () => {
    const gguf = fakeGguf(60_000, 27);
    await pushArtifact(target("ai/verify"), "v1", dockerV01({ ggufs: [gguf] }));
    const cacheDir = newCache();
    const first = await pull(`${registry.host}/ai/verify:v1`, { cacheDir });
    const damaged = Buffer.from(gguf);
    damaged[1000] ^= 0xff;
    await writeFile(first.path, damaged); // same inode as the blob: corrupts the cache in place
    const trusted = await pull(`${registry.host}/ai/verify:v1`, { cacheDir });
    expect(trusted.fromCache).toBe(true); // recorded verification: no re-hash without --verify
    const warnings: string[] = [];
    const verified = await pull(`${registry.host}/ai/verify:v1`, { cacheDir, verify: true, onWarning: (m) => warnings.push(m) });
    expect(verified.fromCache).toBe(false);
    expect(warnings.join("\n")).toMatch(/corrupt/);
    expect((await readFile(verified.path)).equals(gguf)).toBe(true);
  });
});

