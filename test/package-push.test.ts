// `package` and `push` against real docker-registry instances: artifacts built from local GGUF files (a split model
// with projector, chat template and licenses), pushed, pulled back into a clean cache byte for byte, and read by
// another client (skopeo). A fault proxy in front of the registry records every request, so the tests can tell a
// HEAD-only second push, a cross-repository mount and a chunked upload apart by what went over the wire.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFile, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Writable } from "node:stream";
import { promisify } from "node:util";
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { LlamaOciError, packageModel, pull, pushModel, tagModel, type ProgressEvent, type PushResult } from "../src/index.js";
import { GgmlType, ggmlTensorBytes, GgufValueType } from "../src/gguf/types.js";
import { GgufWriter } from "../src/gguf/writer.js";
import { formatBinarySize, formatParameterCount } from "../src/oci/model/index.js";
import { createProgressRenderer } from "../src/cli/progress-renderer.js";
import { cliEnv, describeRun, lines, runCli } from "./helpers/cli.js";
import { authField, makeAuthSandbox } from "./helpers/docker-config.js";
import { startFaultProxy, type FaultProxy, type ProxiedRequest } from "./helpers/fault-proxy.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";
import { startTokenServer, type TokenServer } from "./helpers/token-server.js";

const run = promisify(execFile);

const MEDIA = {
  dockerConfig: "application/vnd.docker.ai.model.config.v0.1+json",
  dockerGguf: "application/vnd.docker.ai.gguf.v3",
  dockerMmproj: "application/vnd.docker.ai.mmproj",
  dockerTemplate: "application/vnd.docker.ai.chat.template.jinja",
  dockerLicense: "application/vnd.docker.ai.license",
  cncfArtifact: "application/vnd.cncf.model.manifest.v1+json",
  cncfConfig: "application/vnd.cncf.model.config.v1+json",
  cncfWeight: "application/vnd.cncf.model.weight.v1.raw",
  cncfWeightConfig: "application/vnd.cncf.model.weight.config.v1.raw",
  cncfDoc: "application/vnd.cncf.model.doc.v1.raw",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
};
const FILEPATH = "org.cncf.model.filepath";
const ALICE_PASSWORD = "alice-S3cret-push-5e1a";
const CREATED = new Date("2025-06-01T12:00:00Z");

interface Manifest {
  mediaType: string;
  artifactType?: string;
  config: { mediaType: string; digest: string; size: number };
  layers: { mediaType: string; digest: string; size: number; annotations?: Record<string, string> }[];
}

let workDir: string;
let registry: RegistryHandle;
let proxy: FaultProxy;
let tokenServer: TokenServer;
let tokenRegistry: RegistryHandle;
let counter = 0;
/** The split model, projector, template and licenses every test packages. */
let files: { shard1: string; shard2: string; mmproj: string; template: string; license: string; notice: string; big: string };
/** Elements and tensor bytes of the split model, for the config's facts. */
const SPLIT_ELEMENTS = 256 * 600 * 2 + 256;
const SPLIT_TENSOR_BYTES = (256 * 600 * 2 * 18) / 32 + 256 * 4;

const newDir = (name: string) => join(workDir, `${name}-${++counter}`);
const sha256 = (data: Buffer) => `sha256:${createHash("sha256").update(data).digest("hex")}`;
const uploads = (requests: ProxiedRequest[]) => requests.filter((r) => r.path.includes("/blobs/uploads/"));

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-package-push");
  tokenServer = await startTokenServer();
  tokenServer.setUser("alice", ALICE_PASSWORD);
  tokenServer.grant("alice", "team/private", ["push", "pull"]);
  tokenServer.grant("alice", "team/readonly", ["pull"]);
  [registry, tokenRegistry] = await Promise.all([startRegistry(), startRegistry({ auth: { kind: "token", tokenServer } })]);
  proxy = await startFaultProxy(registry.url);

  const dir = join(workDir, "src");
  files = {
    shard1: join(dir, "tiny-split-00001-of-00002.gguf"),
    shard2: join(dir, "tiny-split-00002-of-00002.gguf"),
    mmproj: join(dir, "tiny-vision.gguf"),
    template: join(dir, "chat.jinja"),
    license: join(dir, "LICENSE"),
    notice: join(dir, "NOTICE"),
    big: join(dir, "big-Q4_0.gguf"),
  };
  await run("mkdir", ["-p", dir]);
  await writeGguf(files.shard1, { seed: 1, split: [0, 2], tensors: [["token_embd.weight", [256, 600], GgmlType.Q4_0]] });
  await writeGguf(files.shard2, {
    seed: 2,
    split: [1, 2],
    tensors: [
      ["output.weight", [256, 600], GgmlType.Q4_0],
      ["output_norm.weight", [256], GgmlType.F32],
    ],
  });
  await writeGguf(files.mmproj, { seed: 3, arch: "clip", tensors: [["v.patch_embd.weight", [64, 64], GgmlType.F16]] });
  await writeGguf(files.big, { seed: 4, tensors: [["token_embd.weight", [256, 2000], GgmlType.Q4_0]] });
  await writeFile(files.template, "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}");
  await writeFile(files.license, "MIT License\n\nPermission is hereby granted...\n");
  await writeFile(files.notice, "This model includes work by others.\n");
}, 30_000);

afterAll(async () => {
  await proxy?.stop();
  await Promise.all([registry?.stop(), tokenRegistry?.stop()]);
  await tokenServer?.stop();
  if (workDir) await removeDir(workDir);
});

beforeEach(() => {
  proxy.resetStats();
  tokenServer.requests.splice(0);
});

/** A GGUF with llama-style metadata (Q4_0 file type, context length, a 100-token vocabulary) and random tensors. */
async function writeGguf(
  path: string,
  opts: { seed: number; arch?: string; split?: [number, number]; tensors: [string, number[], number][] },
): Promise<void> {
  const arch = opts.arch ?? "llama";
  const writer = new GgufWriter()
    .addMetadata("general.architecture", GgufValueType.STRING, arch)
    .addMetadata("general.name", GgufValueType.STRING, `tiny-${opts.seed}`)
    .addMetadata("general.file_type", GgufValueType.UINT32, 2)
    .addMetadata(`${arch}.context_length`, GgufValueType.UINT32, 4096)
    .addArray("tokenizer.ggml.tokens", GgufValueType.STRING, Array.from({ length: 100 }, (_, i) => `tok${i}`))
    .addArray("test.short_list", GgufValueType.UINT32, [1, 2, 3]);
  if (opts.split) {
    writer.addMetadata("split.no", GgufValueType.UINT16, opts.split[0]);
    writer.addMetadata("split.count", GgufValueType.UINT16, opts.split[1]);
  }
  for (const [name, shape, type] of opts.tensors) {
    const bytes = ggmlTensorBytes(shape, type)!;
    writer.addTensor(name, shape, type, seeded(opts.seed, name, bytes));
  }
  await writer.write(path);
}

function seeded(seed: number, name: string, length: number): Uint8Array {
  const out = Buffer.alloc(length);
  let block = createHash("sha256").update(`${seed}:${name}`).digest();
  for (let offset = 0; offset < length; offset += block.length) {
    block.copy(out, offset);
    block = createHash("sha256").update(block).digest();
  }
  return out;
}

/** skopeo with no host configuration: a fresh HOME, no signature policy, plain HTTP allowed. */
async function skopeo(args: string[]): Promise<string> {
  const home = newDir("skopeo-home");
  await run("mkdir", ["-p", home]);
  const { stdout } = await run("skopeo", ["--insecure-policy", ...args], { env: { PATH: process.env.PATH, HOME: home }, maxBuffer: 64 << 20 });
  return stdout;
}

async function rawManifest(host: string, repository: string, tag: string): Promise<Manifest> {
  return JSON.parse(await skopeo(["inspect", "--raw", "--tls-verify=false", `docker://${host}/${repository}:${tag}`])) as Manifest;
}

interface RawConfig {
  config: Record<string, unknown> & { parameters?: string; gguf: Record<string, string> };
  descriptor: { created: string };
  [key: string]: unknown;
}

async function rawConfig(host: string, repository: string, tag: string): Promise<RawConfig> {
  return JSON.parse(await skopeo(["inspect", "--config", "--raw", "--tls-verify=false", `docker://${host}/${repository}:${tag}`])) as RawConfig;
}

/** The files of the split model as a pull of a Docker-format artifact lays them out, with their source bytes. */
async function expectedFiles(names: Record<keyof typeof files, string>, which: (keyof typeof files)[]): Promise<Map<string, Buffer>> {
  const expected = new Map<string, Buffer>();
  for (const key of which) expected.set(names[key], await readFile(files[key]));
  return expected;
}

async function expectModelDir(modelDir: string, expected: Map<string, Buffer>): Promise<void> {
  expect((await readdir(modelDir)).sort()).toEqual([...expected.keys()].sort());
  for (const [name, data] of expected) expect((await readFile(join(modelDir, name))).equals(data), name).toBe(true);
}

const DOCKER_NAMES = {
  shard1: "tiny-split-00001-of-00002.gguf",
  shard2: "tiny-split-00002-of-00002.gguf",
  mmproj: "tiny-vision.gguf",
  template: "chat.jinja",
  license: "LICENSE",
  notice: "NOTICE",
  big: "big-Q4_0.gguf",
};
const CNCF_NAMES = { ...DOCKER_NAMES, mmproj: "mmproj-tiny-vision.gguf", notice: "LICENSE-NOTICE" };
const ALL: (keyof typeof files)[] = ["shard1", "shard2", "mmproj", "template", "license", "notice"];

describe("package --push, then pull and skopeo", () => {
  test("Docker format (CLI): pull in a clean cache gives byte-identical files; skopeo sees the v0.1 artifact", async () => {
    const reference = `${proxy.host}/team/docker-model:v1`;
    const home = newDir("home");
    const result = await runCli(
      [
        "package",
        "--gguf",
        files.shard1,
        "--mmproj",
        files.mmproj,
        "--chat-template",
        files.template,
        "-l",
        files.license,
        "--license",
        files.notice,
        "--context-size",
        "2048",
        reference,
        "--push",
      ],
      { env: cliEnv(home, newDir("cache")) },
    );
    expect(result.exitCode, describeRun(result)).toBe(0);
    const [printed] = lines(result.stdout);
    expect(printed).toMatch(new RegExp(`^${reference.replace(/[.:/]/g, "\\$&")}@sha256:[0-9a-f]{64}$`));
    const digest = printed!.slice(printed!.indexOf("@") + 1);
    expect(result.stderr).toContain(`Pushing ${reference} (6 files,`);
    expect(result.stderr).toMatch(/^[0-9a-f]{12}: Added tiny-split-00001-of-00002\.gguf \(/m);
    expect(lines(result.stderr).filter((line) => /^[0-9a-f]{12}: Pushed$/.test(line))).toHaveLength(6);

    const pulled = await pull(reference, { cacheDir: newDir("clean-cache") });
    expect(pulled.digest).toBe(digest);
    expect(pulled.format).toBe("docker-v0.1");
    expect(pulled.fromCache).toBe(false);
    await expectModelDir(pulled.modelDir, await expectedFiles(DOCKER_NAMES, ALL));
    expect(pulled.path).toBe(join(pulled.modelDir, DOCKER_NAMES.shard1));
    expect(pulled.mmprojPath).toBe(join(pulled.modelDir, DOCKER_NAMES.mmproj));
    expect(pulled.chatTemplatePath).toBe(join(pulled.modelDir, DOCKER_NAMES.template));

    // Another client reads the registry directly (not through the proxy).
    const manifest = await rawManifest(registry.host, "team/docker-model", "v1");
    expect(sha256(Buffer.from(JSON.stringify(manifest)))).toBe(digest);
    expect(manifest.mediaType).toBe(MEDIA.ociManifest);
    expect(manifest.artifactType).toBeUndefined();
    expect(manifest.config.mediaType).toBe(MEDIA.dockerConfig);
    expect(manifest.layers.map((l) => l.mediaType)).toEqual([
      MEDIA.dockerGguf,
      MEDIA.dockerGguf,
      MEDIA.dockerMmproj,
      MEDIA.dockerTemplate,
      MEDIA.dockerLicense,
      MEDIA.dockerLicense,
    ]);
    expect(manifest.layers.map((l) => l.annotations?.[FILEPATH])).toEqual(ALL.map((key) => DOCKER_NAMES[key]));
    for (const [i, key] of ALL.entries()) expect(manifest.layers[i]!.digest).toBe(sha256(await readFile(files[key])));

    const config = await rawConfig(registry.host, "team/docker-model", "v1");
    expect(config.config).toMatchObject({
      format: "gguf",
      architecture: "llama",
      quantization: "Q4_0",
      parameters: formatParameterCount(SPLIT_ELEMENTS),
      size: formatBinarySize(SPLIT_TENSOR_BYTES),
      context_size: 2048,
    });
    expect(config.config.parameters).toBe("307.46K");
    expect(config.config.gguf["general.architecture"]).toBe("llama");
    expect(config.config.gguf["llama.context_length"]).toBe("4096");
    expect(config.config.gguf["test.short_list"]).toBe("[1, 2, 3]");
    expect(config.config.gguf).not.toHaveProperty("tokenizer.ggml.tokens");
    expect(Date.parse(config.descriptor.created)).toBeGreaterThan(Date.now() - 120_000);
    expect(config.rootfs).toEqual({ type: "rootfs", diff_ids: manifest.layers.map((l) => l.digest) });

    // skopeo copies every blob, and each file it writes hashes to the digest it names.
    const copyDir = newDir("skopeo-dir");
    await skopeo(["copy", "--src-tls-verify=false", `docker://${registry.host}/team/docker-model:v1`, `dir:${copyDir}`]);
    const copied = await readdir(copyDir);
    for (const descriptor of [manifest.config, ...manifest.layers]) {
      const hex = descriptor.digest.slice("sha256:".length);
      expect(copied).toContain(hex);
      expect(sha256(await readFile(join(copyDir, hex)))).toBe(descriptor.digest);
    }
    expect(sha256(await readFile(join(copyDir, "manifest.json")))).toBe(digest);
  });

  test("CNCF ModelPack (library): pull gives byte-identical files, template and license included; skopeo sees ModelPack", async () => {
    const reference = `${proxy.host}/team/cncf-model:v1`;
    const events: ProgressEvent[] = [];
    const packaged = await packageModel({
      reference,
      format: "cncf",
      gguf: files.shard1,
      mmproj: files.mmproj,
      chatTemplate: files.template,
      licenses: [files.license, files.notice],
      push: true,
      created: CREATED,
      cacheDir: newDir("cache"),
      onProgress: (event) => events.push(event),
    });
    expect(packaged.format).toBe("cncf-modelpack");
    expect(packaged.pushed?.blobs.map((b) => b.outcome)).toEqual(Array(7).fill("pushed"));
    // Progress shows the six files; the config blob goes up too, silently.
    expect(events.filter((e) => e.type === "layer-pushed")).toHaveLength(6);

    const pulled = await pull(reference, { cacheDir: newDir("clean-cache") });
    expect(pulled.digest).toBe(packaged.digest);
    expect(pulled.format).toBe("cncf-modelpack");
    await expectModelDir(pulled.modelDir, await expectedFiles(CNCF_NAMES, ALL));
    expect(pulled.mmprojPath).toBe(join(pulled.modelDir, CNCF_NAMES.mmproj));
    expect(pulled.chatTemplatePath).toBe(join(pulled.modelDir, CNCF_NAMES.template));
    expect(pulled.files.filter((f) => f.kind === "license").map((f) => f.filename)).toEqual(["LICENSE", "LICENSE-NOTICE"]);

    const manifest = await rawManifest(registry.host, "team/cncf-model", "v1");
    expect(manifest.artifactType).toBe(MEDIA.cncfArtifact);
    expect(manifest.config.mediaType).toBe(MEDIA.cncfConfig);
    expect(manifest.layers.map((l) => l.mediaType)).toEqual([
      MEDIA.cncfWeight,
      MEDIA.cncfWeight,
      MEDIA.cncfWeight,
      MEDIA.cncfWeightConfig,
      MEDIA.cncfDoc,
      MEDIA.cncfDoc,
    ]);
    const config = await rawConfig(registry.host, "team/cncf-model", "v1");
    expect(config).toMatchObject({
      descriptor: { createdAt: CREATED.toISOString(), family: "llama" },
      modelfs: { type: "layers", diffIds: manifest.layers.map((l) => l.digest) },
      config: { architecture: "llama", format: "gguf", paramSize: "307.46k", quantization: "Q4_0" },
    });

    const copyDir = newDir("skopeo-dir");
    await skopeo(["copy", "--src-tls-verify=false", `docker://${registry.host}/team/cncf-model:v1`, `dir:${copyDir}`]);
    for (const descriptor of [manifest.config, ...manifest.layers]) {
      expect(sha256(await readFile(join(copyDir, descriptor.digest.slice("sha256:".length))))).toBe(descriptor.digest);
    }
  });
});

describe("package into the cache", () => {
  test("without --push nothing goes over the network, and pull --offline finds the model", async () => {
    const reference = `${proxy.host}/team/local-only:v1`;
    const cache = newDir("cache");
    const env = cliEnv(newDir("home"), cache);
    const packaged = await runCli(["package", "--gguf", files.big, "-l", files.license, reference], { env });
    expect(packaged.exitCode, describeRun(packaged)).toBe(0);
    const digest = lines(packaged.stdout)[0]!.split("@")[1];

    const pulled = await runCli(["pull", reference, "--offline", "--json"], { env });
    expect(pulled.exitCode, describeRun(pulled)).toBe(0);
    const result = JSON.parse(pulled.stdout) as { digest: string; path: string; fromCache: boolean; format: string };
    expect(result).toMatchObject({ digest, fromCache: true, format: "docker-v0.1" });
    expect((await readFile(result.path)).equals(await readFile(files.big))).toBe(true);
    expect(proxy.requests).toEqual([]);
  });

  test("the same files under two names share one copy of each blob in the cache", async () => {
    const cache = newDir("cache");
    const a = await packageModel({ reference: `${proxy.host}/team/a:v1`, gguf: files.big, created: CREATED, cacheDir: cache });
    const b = await packageModel({ reference: `${proxy.host}/team/b:v1`, gguf: files.big, created: CREATED, cacheDir: cache });
    expect(b.digest).toBe(a.digest);
    const blobs = await readdir(join(cache, "oci", "blobs", "sha256"));
    expect(blobs.sort()).toEqual([a.configDigest, a.files[0]!.digest].map((d) => d.slice("sha256:".length)).sort());
  });

  test("bad input fails before anything is cached: a second shard, a missing shard, a digest reference", async () => {
    const cache = newDir("cache");
    const second = await packageModel({ reference: "127.0.0.1:1/x/y:v1", gguf: files.shard2, cacheDir: cache }).catch((e: unknown) => e);
    expect(second).toBeInstanceOf(LlamaOciError);
    expect((second as LlamaOciError).message).toContain("shard 2 of 2, not the first");

    const lonely = join(newDir("lonely"), "m-00001-of-00003.gguf");
    await run("mkdir", ["-p", join(lonely, "..")]);
    await copyFile(files.shard1, lonely);
    const missing = await packageModel({ reference: "127.0.0.1:1/x/y:v1", gguf: lonely, cacheDir: cache }).catch((e: unknown) => e);
    expect((missing as LlamaOciError).code).toBe("NOT_FOUND");
    expect((missing as LlamaOciError).message).toContain("shard 2 of 3 is missing");

    const byDigest = await runCli(["package", "--gguf", files.big, `127.0.0.1:1/x/y@sha256:${"a".repeat(64)}`], {
      env: cliEnv(newDir("home"), cache),
    });
    expect(byDigest.exitCode).toBe(1);
    expect(byDigest.stderr).toMatch(/^error: cannot package to .*give a tag/m);
    expect(await readdir(cache).catch(() => [])).toEqual([]);
  });
});

describe("push", () => {
  test("a second push of the same model only asks HEAD for each blob, then puts the manifest", async () => {
    const reference = `${proxy.host}/team/twice:v1`;
    const cache = newDir("cache");
    const first = await packageModel({ reference, gguf: files.shard1, mmproj: files.mmproj, push: true, cacheDir: cache });
    expect(first.pushed?.bytesUploaded).toBeGreaterThan(0);
    proxy.resetStats();

    const again = await runCli(["push", reference], { env: cliEnv(newDir("home"), cache) });
    expect(again.exitCode, describeRun(again)).toBe(0);
    expect(lines(again.stdout)).toEqual([`${reference}@${first.digest}`]);
    expect(lines(again.stderr).filter((line) => /^[0-9a-f]{12}: Layer already exists$/.test(line))).toHaveLength(3);
    const blobRequests = proxy.requests.filter((r) => r.path.includes("/blobs/"));
    expect(blobRequests.map((r) => r.method)).toEqual(Array(4).fill("HEAD"));
    expect(proxy.requests.filter((r) => r.method !== "HEAD" && r.path.startsWith("/v2/team/"))).toEqual([
      expect.objectContaining({ method: "PUT", path: "/v2/team/twice/manifests/v1", status: 201 }),
    ]);
  });

  test("pushing to another repository of the same registry mounts every blob instead of uploading it", async () => {
    const cache = newDir("cache");
    const source = `${proxy.host}/team/mount-source:v1`;
    const inputs = { gguf: files.shard1, chatTemplate: files.template, created: CREATED, cacheDir: cache };
    await packageModel({ reference: source, ...inputs, push: true });
    proxy.resetStats();

    const target = `${proxy.host}/other/mount-target:v2`;
    const events: ProgressEvent[] = [];
    const packaged = await packageModel({ reference: target, ...inputs, push: true, onProgress: (e) => events.push(e) });
    const pushed = packaged.pushed as PushResult;
    expect(pushed.blobs.map((b) => [b.outcome, b.from])).toEqual(Array(4).fill(["mounted", "team/mount-source"]));
    expect(pushed.bytesUploaded).toBe(0);
    expect(events.filter((e) => e.type === "layer-pushed").every((e) => e.type === "layer-pushed" && e.outcome === "mounted")).toBe(true);

    const posts = uploads(proxy.requests);
    expect(posts).toHaveLength(4);
    for (const post of posts) {
      expect(post.method).toBe("POST");
      const query = new URL(post.path, "http://x").searchParams;
      expect(query.get("from")).toBe("team/mount-source");
      expect(query.get("mount")).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(post.status).toBe(201);
    }
    expect(proxy.requests.some((r) => r.method === "PATCH" || (r.method === "PUT" && r.path.includes("/blobs/")))).toBe(false);

    const pulled = await pull(target, { cacheDir: newDir("clean-cache") });
    expect((await readFile(pulled.path)).equals(await readFile(files.shard1))).toBe(true);
    expect(pulled.chatTemplatePath && (await readFile(pulled.chatTemplatePath, "utf8"))).toBe(await readFile(files.template, "utf8"));
  });

  test("a pulled model, tagged for another repository, is pushed by mounting its blobs from where it came from", async () => {
    const origin = `${proxy.host}/team/pulled-origin:v1`;
    await packageModel({ reference: origin, gguf: files.big, licenses: [files.license], push: true, cacheDir: newDir("cache") });
    const cache = newDir("cache");
    const pulled = await pull(origin, { cacheDir: cache });
    await tagModel(origin, `${proxy.host}/team/pulled-copy:v1`, { cacheDir: cache });
    proxy.resetStats();

    const pushed = await pushModel(`${proxy.host}/team/pulled-copy:v1`, { cacheDir: cache });
    expect(pushed.digest).toBe(pulled.digest);
    expect(pushed.blobs.map((b) => [b.outcome, b.from])).toEqual(Array(3).fill(["mounted", "team/pulled-origin"]));
    expect(proxy.requests.some((r) => r.method === "PATCH" || (r.method === "PUT" && r.path.includes("/blobs/")))).toBe(false);
    const again = await pull(`${proxy.host}/team/pulled-copy:v1`, { cacheDir: newDir("clean-cache") });
    expect(again.digest).toBe(pulled.digest);
  });

  test("a blob larger than chunkSize goes up in several PATCH requests and arrives intact", async () => {
    const reference = `${proxy.host}/team/chunked:v1`;
    const chunkSize = 64 * 1024;
    const size = (await readFile(files.big)).length;
    const packaged = await packageModel({ reference, gguf: files.big, push: true, chunkSize, cacheDir: newDir("cache") });
    const gguf = packaged.files[0]!;

    const patches = proxy.requests.filter((r) => r.method === "PATCH");
    expect(patches).toHaveLength(Math.ceil(size / chunkSize));
    expect(patches.every((r) => r.status === 202)).toBe(true);
    const puts = proxy.requests.filter((r) => r.method === "PUT" && r.path.includes("/blobs/uploads/"));
    expect(puts.map((r) => new URL(r.path, "http://x").searchParams.get("digest")).sort()).toEqual([gguf.digest, packaged.configDigest].sort());

    const pulled = await pull(reference, { cacheDir: newDir("clean-cache") });
    expect((await readFile(pulled.path)).equals(await readFile(files.big))).toBe(true);
  });

  test("a 503 in the middle of a chunked upload: the blob is sent again and the push succeeds", async () => {
    const reference = `${proxy.host}/team/flaky:v1`;
    const cache = newDir("cache");
    await packageModel({ reference, gguf: files.big, cacheDir: cache });
    const secondPatch = (req: { method: string }) => req.method === "PATCH" && proxy.requests.filter((r) => r.method === "PATCH").length === 2;
    proxy.addFault({ kind: "status", status: 503, times: 1, match: secondPatch });
    const events: ProgressEvent[] = [];
    const pushed = await pushModel(reference, {
      cacheDir: cache,
      chunkSize: 64 * 1024,
      retry: { baseDelayMs: 10 },
      onProgress: (event) => events.push(event),
    });
    expect(proxy.pendingFaults).toEqual([]);
    expect(events.filter((e) => e.type === "layer-retry")).toEqual([expect.objectContaining({ attempt: 2, digest: pushed.blobs[1]!.digest })]);
    expect(proxy.requests.some((r) => r.method === "PATCH" && r.status === 503)).toBe(true);
    const pulled = await pull(reference, { cacheDir: newDir("clean-cache") });
    expect((await readFile(pulled.path)).equals(await readFile(files.big))).toBe(true);
  });

  test("a model that is not in the cache: NOT_FOUND naming the reference, nothing sent", async () => {
    const error = await pushModel(`${proxy.host}/team/nothing:v1`, { cacheDir: newDir("cache") }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LlamaOciError);
    expect((error as LlamaOciError).code).toBe("NOT_FOUND");
    expect((error as LlamaOciError).message).toContain(`${proxy.host}/team/nothing:v1`);
    expect(proxy.requests).toEqual([]);
  });
});

describe("push to a token-auth registry", () => {
  test("credentials from config.json: the token server issued a push,pull token to alice, and a pull gets the files back", async () => {
    const sandbox = await makeAuthSandbox(newDir("auth"));
    await sandbox.writeDockerConfig({ auths: { [tokenRegistry.host]: { auth: authField("alice", ALICE_PASSWORD) } } });
    const reference = `${tokenRegistry.host}/team/private:v1`;
    const debug: string[] = [];
    const packaged = await packageModel({
      reference,
      gguf: files.big,
      licenses: [files.license],
      push: true,
      chunkSize: 128 * 1024,
      cacheDir: newDir("cache"),
      env: sandbox.env(),
      verbose: true,
      onDebug: (m) => debug.push(m),
    });
    expect(packaged.pushed?.blobs.map((b) => b.outcome)).toEqual(["pushed", "pushed", "pushed"]);
    const scopes = tokenServer.requests.map((r) => r.query.scope);
    expect(scopes).toContain("repository:team/private:push,pull");
    expect(tokenServer.requests.every((r) => r.authorization === `Basic ${authField("alice", ALICE_PASSWORD)}`)).toBe(true);
    for (const line of debug) expect(line).not.toContain(ALICE_PASSWORD);

    const pulled = await pull(reference, { cacheDir: newDir("clean-cache"), env: sandbox.env() });
    expect((await readFile(pulled.path)).equals(await readFile(files.big))).toBe(true);
  });

  test("no credentials: UNAUTHORIZED with a docker login hint (CLI: exit 1, one error line)", async () => {
    const sandbox = await makeAuthSandbox(newDir("auth"));
    const reference = `${tokenRegistry.host}/team/private:anon`;
    const cache = newDir("cache");
    await packageModel({ reference, gguf: files.shard1, cacheDir: cache });
    const error = await pushModel(reference, { cacheDir: cache, env: sandbox.env() }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LlamaOciError);
    expect((error as LlamaOciError).code).toBe("UNAUTHORIZED");
    expect((error as LlamaOciError).message).toContain(`requires authentication to push to ${tokenRegistry.host}/team/private`);
    expect((error as LlamaOciError).hint).toContain(`docker login ${tokenRegistry.host}`);

    const cli = await runCli(["push", reference], { env: cliEnv(sandbox.home, cache) });
    expect(cli.exitCode).toBe(1);
    expect(lines(cli.stderr).filter((line) => line.startsWith("error: "))).toEqual([
      `error: ${(error as LlamaOciError).message} (${(error as LlamaOciError).hint ?? ""})`,
    ]);
  });

  test("credentials that may only pull: DENIED naming the repository, not a password problem", async () => {
    const sandbox = await makeAuthSandbox(newDir("auth"));
    await sandbox.writeDockerConfig({ auths: { [tokenRegistry.host]: { auth: authField("alice", ALICE_PASSWORD) } } });
    const reference = `${tokenRegistry.host}/team/readonly:v1`;
    const cache = newDir("cache");
    await packageModel({ reference, gguf: files.shard1, cacheDir: cache });
    const error = await pushModel(reference, { cacheDir: cache, env: sandbox.env() }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LlamaOciError);
    expect((error as LlamaOciError).code).toBe("DENIED");
    expect((error as LlamaOciError).message).toContain(`denied push access to ${tokenRegistry.host}/team/readonly`);
    expect((error as LlamaOciError).message).toContain(join(sandbox.home, ".docker", "config.json"));
    expect((error as LlamaOciError).hint).not.toMatch(/password/);
  });
});


describe("push progress", () => {
  const A = `sha256:aaaaaaaaaaaa${"1".repeat(52)}`;
  const B = `sha256:bbbbbbbbbbbb${"2".repeat(52)}`;
  const C = `sha256:cccccccccccc${"3".repeat(52)}`;
  const events: ProgressEvent[] = [
    { type: "push-resolved", reference: "127.0.0.1:5000/team/m:v1", digest: A, files: 3, totalBytes: 3_000_000 },
    { type: "layer-pushed", digest: A, size: 1_000_000, outcome: "exists" },
    { type: "layer-pushed", digest: B, size: 1_000_000, outcome: "mounted", from: "team/base" },
    { type: "layer-push-start", digest: C, size: 1_000_000, filename: "model.gguf" },
    { type: "layer-push-progress", digest: C, size: 1_000_000, completed: 500_000 },
  ];

  function render(tty: boolean): string {
    let text = "";
    const stream = Object.assign(
      new Writable({
        write(chunk: Buffer, _encoding, callback) {
          text += chunk.toString();
          callback();
        },
      }),
      { isTTY: tty, columns: 200 },
    );
    let now = 0;
    const renderer = createProgressRenderer({ stream, env: { NO_COLOR: "1" }, now: () => (now += 100) });
    for (const event of events) renderer.onProgress(event);
    const partial = text;
    renderer.onProgress({ type: "layer-pushed", digest: C, size: 1_000_000, outcome: "pushed" });
    renderer.close();
    return tty ? `${partial}\n---\n${text}` : text;
  }

  test("without a terminal: one line per step, in docker push's words", () => {
    expect(lines(render(false))).toEqual([
      "Pushing 127.0.0.1:5000/team/m:v1 (3 files, 3.00 MB)",
      "aaaaaaaaaaaa: Layer already exists",
      "bbbbbbbbbbbb: Mounted from team/base",
      "cccccccccccc: Pushing model.gguf (1.00 MB)",
      "cccccccccccc: Pushed",
    ]);
  });

  test("on a terminal: the bar says Pushing, finished lines say what happened", () => {
    const [during, after] = render(true).split("\n---\n") as [string, string];
    expect(during).toMatch(/cccccccccccc: Pushing \[=+> +\] 50\.0% \(0\.50 MB \/ 1\.00 MB\)/);
    expect(during).not.toContain("Downloading");
    expect(after).toContain("aaaaaaaaaaaa: Layer already exists");
    expect(after).toContain("bbbbbbbbbbbb: Mounted from team/base");
    expect(after).toContain("cccccccccccc: Pushed");
  });
});
