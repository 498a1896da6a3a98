// `inspect` against a real docker-registry behind the counting fault proxy: a ~69 MB model inspected with --remote
// costs only its GGUF header in blob bytes, the cached copy gives the same facts with no network, and the CLI
// prints both a readable summary and valid JSON.
import { mkdir, readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { inspectModel, LlamaOciError, pull, type InspectResult } from "../src/index.js";
import { fileTypeName } from "../src/gguf/facts.js";
import { GgmlType, GgufValueType } from "../src/gguf/types.js";
import { GgufWriter } from "../src/gguf/writer.js";
import { dockerV01, modelPack } from "./helpers/artifacts.js";
import { cliEnv, describeRun, runCli } from "./helpers/cli.js";
import { startCdn, type Cdn } from "./helpers/cdn.js";
import { startFaultProxy, type FaultProxy } from "./helpers/fault-proxy.js";
import { digestOf, pushArtifact, type PushTarget } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { LLAMA_CPP_SOURCE_DIR, makeTinyLlama, type TinyModel } from "./helpers/tiny-model.js";
import { startTokenServer, type TokenServer } from "./helpers/token-server.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const CHAT_TEMPLATE =
  "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";
const CONTEXT_LENGTH = 4096;

let registry: RegistryHandle;
let proxy: FaultProxy;
let workDir: string;
let big: TinyModel;
let bigBytes: Buffer;
let bigDigest: string;
let cacheCount = 0;

const home = () => join(workDir, "home");
const newCache = () => join(workDir, `cache-${++cacheCount}`);
const target = (repository: string): PushTarget => ({ registryUrl: registry.url, repository });
/** References go through the proxy, so every byte the client receives is counted. */
const viaProxy = (repositoryAndTag: string) => `${proxy.host}/${repositoryAndTag}`;
const blobPath = (repository: string, digest: string) => `/v2/${repository}/blobs/${digest}`;

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-inspect");
  await mkdir(home());
  registry = await startRegistry();
  proxy = await startFaultProxy(registry.url);
  // token_embd and output are 32000 x 256 F32 each: 65.5 MB of weights behind a ~700 KB header (32000-token vocab).
  big = await makeTinyLlama(join(workDir, "big.gguf"), { nEmbd: 256, nFf: 256, contextLength: CONTEXT_LENGTH, chatTemplate: CHAT_TEMPLATE });
  bigBytes = await readFile(big.path);
  bigDigest = digestOf(bigBytes);
  await pushArtifact(target("ai/big"), "F32", dockerV01({ ggufs: [bigBytes], contextSize: 2048 }));
}, 120_000);

afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
  if (workDir) await removeDir(workDir);
});

function expectBigModelFacts(result: InspectResult): void {
  const { gguf } = result;
  expect(gguf.architecture).toBe("llama");
  expect(gguf.name).toBe("tiny-llama");
  expect(gguf.tensorCount).toBe(big.tensors.length);
  expect(gguf.parameterCount).toBe(big.tensors.reduce((sum, t) => sum + t.shape.reduce((a, b) => a * b, 1), 0));
  expect(gguf.quantization).toBe("F32");
  expect(gguf.fileType).toBe(0);
  expect(gguf.contextLength).toBe(CONTEXT_LENGTH);
  expect(gguf.embeddingLength).toBe(256);
  expect(gguf.blockCount).toBe(2);
  expect(gguf.vocabularySize).toBe(big.vocabSize);
  expect(gguf.chatTemplate).toBe(CHAT_TEMPLATE);
  expect(gguf.version).toBe(3);
  expect(gguf.shards).toBe(1);
}

describe("inspect --remote", () => {
  test("reads only the GGUF header of a 69 MB model: under 2% of its bytes, with the right facts", async () => {
    expect(bigBytes.length).toBeGreaterThan(50_000_000);
    proxy.resetStats();
    const cacheDir = newCache();
    const result = await inspectModel(viaProxy("ai/big:F32"), { cacheDir, remote: true });

    expect(result.source).toBe("registry");
    expect(result.format).toBe("docker-v0.1");
    expect(result.layers).toEqual([
      expect.objectContaining({ mediaType: "application/vnd.docker.ai.gguf.v3", digest: bigDigest, size: bigBytes.length, filename: "model.gguf" }),
    ]);
    expectBigModelFacts(result);
    // The header (with its 32000-token vocabulary) is longer than the first 256 KiB range: more ranges were needed.
    expect(result.gguf.headerBytes).toBeGreaterThan(256 * 1024);

    const blobBytes = proxy.bytesByPath.get(blobPath("ai/big", bigDigest)) ?? 0;
    expect(blobBytes).toBeGreaterThan(result.gguf.headerBytes - 1);
    expect(blobBytes).toBeLessThan(bigBytes.length * 0.02);
    const blobRequests = proxy.requests.filter((r) => r.path === blobPath("ai/big", bigDigest) && r.method === "GET");
    expect(blobRequests.length).toBeGreaterThan(1);
    expect(blobRequests.every((r) => r.range !== undefined && r.status === 206)).toBe(true);
    // inspect writes nothing to the cache.
    await expect(readdir(cacheDir)).rejects.toThrow();
  });

  test("the config blob's facts are shown as the packager wrote them", async () => {
    const result = await inspectModel(viaProxy("ai/big:F32"), { cacheDir: newCache(), remote: true });
    expect(result.config.mediaType).toBe("application/vnd.docker.ai.model.config.v0.1+json");
    expect(result.config.summary).toMatchObject({
      format: "gguf",
      architecture: "llama",
      parameters: "134.52M",
      quantization: "Q4_0",
      contextSize: 2048,
      gguf: { "general.architecture": "llama", "llama.context_length": "8192" },
    });
    expect((result.config.content as { rootfs: { diff_ids: string[] } }).rootfs.diff_ids).toEqual([bigDigest]);
  });

  test("a registry that ignores Range is read only as far as the header, then the connection is dropped", async () => {
    proxy.resetStats();
    proxy.addFault({ kind: "ignore-range", times: 100, match: (req) => req.path.includes("/blobs/") });
    try {
      const result = await inspectModel(viaProxy("ai/big:F32"), { cacheDir: newCache(), remote: true });
      expectBigModelFacts(result);
    } finally {
      proxy.clearFaults();
    }
    const blobBytes = proxy.bytesByPath.get(blobPath("ai/big", bigDigest)) ?? 0;
    // One 200 is read as far as the header goes, then dropped; only what socket buffers took in before the close
    // is extra (a few MB on loopback).
    expect(proxy.requests.filter((r) => r.path === blobPath("ai/big", bigDigest)).map((r) => r.status)).toEqual([200]);
    expect(blobBytes).toBeLessThan(bigBytes.length * 0.15);
  });

  test("a model that is not cached is inspected from the registry without --remote", async () => {
    proxy.resetStats();
    const result = await inspectModel(viaProxy("ai/big:F32"), { cacheDir: newCache() });
    expect(result.source).toBe("registry");
    expect(result.bytesTransferred).toBeLessThan(bigBytes.length * 0.02);
    expect(proxy.requests.length).toBeGreaterThan(0);
  });
});

describe("inspect from the cache", () => {
  test("a pulled model gives the same GGUF facts with no network at all", async () => {
    const cacheDir = newCache();
    const remote = await inspectModel(viaProxy("ai/big:F32"), { cacheDir, remote: true });
    const pulled = await pull(viaProxy("ai/big:F32"), { cacheDir });
    proxy.resetStats();

    const local = await inspectModel(viaProxy("ai/big:F32"), { cacheDir });
    expect(proxy.requests).toEqual([]);
    expect(local.source).toBe("cache");
    expect(local.bytesTransferred).toBe(0);
    expect(local.digest).toBe(pulled.digest);
    expect(local.id).toBe(pulled.digest.slice("sha256:".length, "sha256:".length + 12));
    expect(local.pulledAt).toBeDefined();
    expect(local.gguf).toEqual(remote.gguf);
    expect(local.config).toEqual(remote.config);
    expect(local.layers).toEqual(remote.layers);
    expectBigModelFacts(local);

    // By digest and by the model ID `ls` shows, still without the network.
    const byDigest = await inspectModel(`${proxy.host}/ai/big@${pulled.digest}`, { cacheDir });
    expect(byDigest.gguf).toEqual(remote.gguf);
    const byId = await inspectModel(local.id, { cacheDir });
    expect(byId.digest).toBe(pulled.digest);
    expect(byId.reference).toBe(`${proxy.host}/ai/big:F32`);
    expect(proxy.requests).toEqual([]);

    // --remote asks the registry even so.
    const fresh = await inspectModel(viaProxy("ai/big:F32"), { cacheDir, remote: true });
    expect(fresh.source).toBe("registry");
    expect(proxy.requests.length).toBeGreaterThan(0);
  });

  test("--offline on a model that is not cached fails clearly", async () => {
    const error = await inspectModel(viaProxy("ai/big:F32"), { cacheDir: newCache(), offline: true }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LlamaOciError);
    expect((error as LlamaOciError).code).toBe("OFFLINE");
    expect((error as LlamaOciError).message).toContain(`${proxy.host}/ai/big:F32 is not in the cache`);
  });
});

describe("GGUF facts", () => {
  test("general.file_type names are llama.h's llama_ftype names", async () => {
    const header = await readFile(join(LLAMA_CPP_SOURCE_DIR, "include", "llama.h"), "utf8");
    const entries = [...header.matchAll(/^\s*LLAMA_FTYPE_(?:MOSTLY_|ALL_)(\w+)\s*=\s*(\d+),/gm)].map((m) => [m[1]!, Number(m[2])] as const);
    expect(entries.length).toBeGreaterThan(30);
    for (const [name, value] of entries) expect(fileTypeName(value), `llama_ftype ${value}`).toBe(name);
  });
});

describe("inspect: other artifacts", () => {
  test("a sharded model reports its shard count, and tensors and parameters of all shards", async () => {
    const shardCount = 3;
    const shards = Array.from({ length: shardCount }, (_, i) => shardGguf(i, shardCount));
    await pushArtifact(target("ai/sharded"), "latest", dockerV01({ ggufs: shards.map((s) => s.bytes) }));
    const result = await inspectModel(viaProxy("ai/sharded"), { cacheDir: newCache(), remote: true });
    expect(result.gguf.shards).toBe(3);
    expect(result.gguf.tensorCount).toBe(6);
    expect(result.gguf.parameterCount).toBe(shards.reduce((sum, s) => sum + s.parameters, 0));
    expect(result.gguf.architecture).toBe("llama");
    expect(result.gguf.contextLength).toBe(1024);
    expect(result.gguf.quantization).toBe("Q8_0");
    expect(result.gguf.quantizationGuessed).toBe(true);
    expect(result.layers.map((l) => l.shard)).toEqual([1, 2, 3].map((index) => ({ index, count: 3 })));
  });

  test("CNCF ModelPack: descriptor and config facts", async () => {
    const small = await makeTinyLlama(join(workDir, "small.gguf"), { seed: 5 });
    await pushArtifact(target("cncf/small"), "v1", modelPack({ files: [{ path: "small-F32.gguf", data: await readFile(small.path) }] }));
    const result = await inspectModel(viaProxy("cncf/small:v1"), { cacheDir: newCache() });
    expect(result.format).toBe("cncf-modelpack");
    expect(result.manifest.artifactType).toBe("application/vnd.cncf.model.manifest.v1+json");
    expect(result.config.summary).toMatchObject({ name: "test-model", family: "llama", architecture: "llama", parameters: "135M", quantization: "Q4_0" });
    expect(result.layers[0]?.filename).toBe("small-F32.gguf");
    expect(result.gguf.tensorCount).toBe(small.tensors.length);
  });

  test("a model ID that is not cached is NOT_FOUND, not a Docker Hub repository named sha256", async () => {
    const error = await inspectModel(`sha256:${"0".repeat(64)}`, { cacheDir: newCache(), env: { HOME: workDir } }).catch((e: unknown) => e);
    expect((error as LlamaOciError).code).toBe("NOT_FOUND");
    expect((error as LlamaOciError).message).toMatch(/^model ID sha256:0+ is not in the cache/);
  });

  test("an unknown reference is a clear NOT_FOUND error", async () => {
    const error = await inspectModel(viaProxy("ai/big:no-such-tag"), { cacheDir: newCache() }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LlamaOciError);
    expect((error as LlamaOciError).code).toBe("NOT_FOUND");
    expect((error as LlamaOciError).message).toContain("ai/big:no-such-tag");
  });
});

describe("inspect: a token-auth registry that redirects blobs to a CDN", () => {
  let tokenServer: TokenServer;
  let cdn: Cdn;
  let cdnRegistry: RegistryHandle;
  let model: Buffer;

  beforeAll(async () => {
    const rootDir = join(workDir, "cdn-registry-data");
    await mkdir(rootDir);
    tokenServer = await startTokenServer();
    tokenServer.setUser("admin", "admin-secret");
    tokenServer.setUser("alice", "alice-secret");
    tokenServer.grant("admin", "*", ["*"]);
    tokenServer.grant("alice", "private/model", ["pull"]);
    cdn = await startCdn(rootDir);
    cdnRegistry = await startRegistry({ auth: { kind: "token", tokenServer }, rootDir, redirectTo: cdn.url });
    const tiny = await makeTinyLlama(join(workDir, "private.gguf"), { seed: 9, chatTemplate: CHAT_TEMPLATE });
    model = await readFile(tiny.path);
    const admin = { username: "admin", password: "admin-secret" };
    await pushArtifact({ registryUrl: cdnRegistry.url, repository: "private/model", auth: admin }, "v1", dockerV01({ ggufs: [model] }));
  }, 60_000);

  afterAll(async () => {
    await cdnRegistry?.stop();
    await cdn?.stop();
    await tokenServer?.stop();
  });

  test("credentials get a pull token; the header ranges go to the CDN without Authorization", async () => {
    const result = await inspectModel(`${cdnRegistry.host}/private/model:v1`, {
      cacheDir: newCache(),
      credentials: { username: "alice", password: "alice-secret" },
    });
    expect(result.gguf.chatTemplate).toBe(CHAT_TEMPLATE);
    const ggufPath = (r: { path: string }) => r.path.endsWith(`/${digestOf(model).slice(7)}/data`);
    const ranged = cdn.requests.filter(ggufPath);
    expect(ranged.length).toBeGreaterThan(0);
    expect(ranged.every((r) => typeof r.headers.range === "string" && r.headers.authorization === undefined)).toBe(true);
    expect(result.bytesTransferred).toBeLessThan(model.length / 10);
  });

  test("without credentials the private model is refused clearly", async () => {
    const error = await inspectModel(`${cdnRegistry.host}/private/model:v1`, { cacheDir: newCache(), env: { HOME: workDir } }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LlamaOciError);
    expect((error as LlamaOciError).code).toBe("UNAUTHORIZED");
    expect((error as LlamaOciError).message).toContain(`${cdnRegistry.host}/private/model:v1`);
    expect((error as LlamaOciError).hint).toContain(`docker login ${cdnRegistry.host}`);
  });
});

describe("llama-oci inspect (CLI)", () => {
  test("--json prints the whole result as valid JSON, with the full chat template", async () => {
    const run = await runCli(["inspect", viaProxy("ai/big:F32"), "--remote", "--json"], { env: cliEnv(home(), newCache()) });
    expect(run.exitCode, describeRun(run)).toBe(0);
    const json = JSON.parse(run.stdout) as InspectResult;
    expect(json.reference).toBe(`${proxy.host}/ai/big:F32`);
    expectBigModelFacts(json);
    expect(json.gguf.metadata["tokenizer.chat_template"]).toBe(CHAT_TEMPLATE);
    expect(json.gguf.metadata["tokenizer.ggml.tokens"]).toEqual({ itemType: "string", length: big.vocabSize });
    expect(json.bytesTransferred).toBeLessThan(bigBytes.length * 0.02);
  });

  test("the default output is readable key: value lines with the template shortened", async () => {
    const run = await runCli(["inspect", viaProxy("ai/big:F32")], { env: cliEnv(home(), newCache()) });
    expect(run.exitCode, describeRun(run)).toBe(0);
    const out = run.stdout;
    expect(out).toMatch(new RegExp(`^Reference: +${proxy.host}/ai/big:F32$`, "m"));
    expect(out).toMatch(/^ID: +[0-9a-f]{12}$/m);
    const mb = (bigBytes.length / 1e6).toFixed(1).replace(".", "\\.");
    expect(out).toMatch(new RegExp(`^Source: +registry \\(read 1\\.\\d+ MB: the config and the GGUF header of ${mb} MB of weights\\)$`, "m"));
    expect(out).toMatch(new RegExp(`^ {2}1 +application/vnd\\.docker\\.ai\\.gguf\\.v3 +${mb} MB +${bigDigest.slice(7, 19)} +model\\.gguf$`, "m"));
    expect(out).toMatch(/^ {2}config +application\/vnd\.docker\.ai\.model\.config\.v0\.1\+json +\d+ B +[0-9a-f]{12} +-$/m);
    expect(out).toMatch(/^ {2}architecture: +llama$/m);
    expect(out).toMatch(/^ {2}quantization: +F32 \(general\.file_type 0\)$/m);
    expect(out).toMatch(new RegExp(`^ {2}context length: +${CONTEXT_LENGTH}$`, "m"));
    expect(out).toMatch(new RegExp(`^ {2}tensors: +${big.tensors.length}$`, "m"));
    expect(out).toMatch(/^ {2}shards: +1$/m);
    expect(out).toMatch(new RegExp(`^ {2}chat template: +"\\{% for message in messages %\\}.*"… \\(${CHAT_TEMPLATE.length} characters; --json shows all\\)$`, "m"));
    expect(out).not.toContain("add_generation_prompt");
  });

  test("an unknown reference exits 1 with a one-line error", async () => {
    const run = await runCli(["inspect", viaProxy("ai/nothing-here:latest")], { env: cliEnv(home(), newCache()) });
    expect(run.exitCode, describeRun(run)).toBe(1);
    expect(run.stdout).toBe("");
    expect(run.stderr).toMatch(/^error: .*ai\/nothing-here:latest.*\n$/);
  });

  test("usage errors exit 2", async () => {
    const run = await runCli(["inspect"], { env: cliEnv(home(), newCache()) });
    expect(run.exitCode, describeRun(run)).toBe(2);
    expect(run.stderr).toContain("inspect takes exactly one reference");
  });
});

/** One shard of a llama-style split GGUF: two Q8_0 tensors each; the first shard carries the model metadata. */
function shardGguf(index: number, count: number): { bytes: Buffer; parameters: number } {
  const writer = new GgufWriter();
  if (index === 0) {
    writer
      .addMetadata("general.architecture", GgufValueType.STRING, "llama")
      .addMetadata("llama.context_length", GgufValueType.UINT32, 1024)
      .addMetadata("llama.block_count", GgufValueType.UINT32, count);
  }
  writer
    .addMetadata("split.no", GgufValueType.UINT16, index)
    .addMetadata("split.count", GgufValueType.UINT16, count)
    .addMetadata("split.tensors.count", GgufValueType.INT32, count * 2);
  let parameters = 0;
  for (const name of ["attn_q", "ffn_up"]) {
    const shape = [64, 8 * (index + 1)];
    const elements = shape[0]! * shape[1]!;
    // Q8_0: blocks of 32 values, 2 bytes of scale + 32 bytes of quants each.
    writer.addTensor(`blk.${index}.${name}.weight`, shape, GgmlType.Q8_0, new Uint8Array((elements / 32) * 34));
    parameters += elements;
  }
  return { bytes: writer.toBuffer(), parameters };
}
