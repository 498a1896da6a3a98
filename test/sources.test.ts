// More places models come from: OCI image layout folders (both ways, with skopeo on the other side), Ollama-format
// artifacts, Hugging Face's and the Ollama library's registries by their real names (served here by local
// registries behind a proxy that alone resolves those names), and platform selection in an index.
import { execFile } from "node:child_process";
import { copyFileSync, mkdirSync } from "node:fs";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { createServer as createHttpsServer } from "node:https";
import { request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { type LlamaOciError, listModels, pull, saveModel } from "../src/index.js";
import { parseReference } from "../src/oci/name/index.js";
import { dockerV01, fakeGguf } from "./helpers/artifacts.js";
import { cliEnv, describeRun, lines, runCli } from "./helpers/cli.js";
import { startForwardProxy, type ForwardProxy } from "./helpers/forward-proxy.js";
import { closeServer, listenLocal } from "./helpers/ports.js";
import { digestOf, pushArtifact, pushIndex } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { makeSelfSignedCert, type SelfSignedCert } from "./helpers/tls.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const run = promisify(execFile);
const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
const OLLAMA = (kind: string) => `application/vnd.ollama.image.${kind}`;

let workDir: string;
let registry: RegistryHandle;
let counter = 0;
const newDir = (name: string) => join(workDir, `${name}-${++counter}`);
const skopeo = (args: string[]) => run("skopeo", ["--insecure-policy", ...args], { maxBuffer: 64 * 1024 * 1024 });

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-sources");
  registry = await startRegistry();
});

afterAll(async () => {
  await registry?.stop();
  if (workDir) await removeDir(workDir);
});

describe("OCI image layout folders", () => {
  const gguf = fakeGguf(120_000, 401);
  let pushedDigest: string;

  beforeAll(async () => {
    pushedDigest = (await pushArtifact({ registryUrl: registry.url, repository: "ai/layout" }, "v1", dockerV01({ ggufs: [gguf], licenses: ["MIT"] }))).digest;
  });

  test("skopeo copy docker://... oci:<dir>:<tag>, then pull oci:<dir>:<tag> with no network", async () => {
    const dir = newDir("from-skopeo");
    await skopeo(["copy", "--src-tls-verify=false", `docker://${registry.host}/ai/layout:v1`, `oci:${dir}:v1`]);
    const cacheDir = newDir("cache");
    // No registry is reachable under this environment: a proxy that does not exist for everything.
    const env = { ...process.env, HTTPS_PROXY: "http://127.0.0.1:9", HTTP_PROXY: "http://127.0.0.1:9" };
    const result = await pull(`oci:${dir}:v1`, { cacheDir, env });
    expect(result.digest).toBe(pushedDigest);
    expect((await readFile(result.path)).equals(gguf)).toBe(true);
    expect(result.reference).toMatch(/^localhost\/oci-layout\/from-skopeo-\d+:v1$/);
    expect(result.files.map((f) => f.kind)).toEqual(["gguf", "license"]);
    expect((await listModels({ cacheDir })).map((m) => m.reference)).toEqual([result.reference]);
    const again = await pull(`oci:${dir}:v1`, { cacheDir, env });
    expect(again.fromCache).toBe(true);
    // The name it was recorded under works offline.
    expect((await pull(result.reference, { cacheDir, offline: true })).path).toBe(result.path);
  });

  test("llama-oci save <ref> oci:<dir>:<tag>, skopeo copy to a registry, and a clean pull by reference gets the same model", async () => {
    const cacheDir = newDir("cache");
    const home = newDir("home");
    const pulled = await pull(`${registry.host}/ai/layout:v1`, { cacheDir });
    const dir = newDir("saved");
    const saved = await runCli(["save", `${registry.host}/ai/layout:v1`, `oci:${dir}:carried`, "--json"], { env: cliEnv(home, cacheDir) });
    expect(saved.exitCode, describeRun(saved)).toBe(0);
    expect(JSON.parse(saved.stdout)).toMatchObject({ tag: "carried", digest: pulled.digest });
    const layout = JSON.parse(await readFile(join(dir, "index.json"), "utf8")) as { manifests: { annotations: Record<string, string> }[] };
    expect(layout.manifests[0]!.annotations["org.opencontainers.image.ref.name"]).toBe("carried");
    expect(JSON.parse(await readFile(join(dir, "oci-layout"), "utf8"))).toEqual({ imageLayoutVersion: "1.0.0" });

    await skopeo(["copy", "--dest-tls-verify=false", `oci:${dir}:carried`, `docker://${registry.host}/ai/carried:v2`]);
    const fresh = await pull(`${registry.host}/ai/carried:v2`, { cacheDir: newDir("cache") });
    expect(fresh.digest).toBe(pulled.digest);
    expect((await readFile(fresh.path)).equals(gguf)).toBe(true);

    // On the air-gapped side, the layout brings the model back under the name it was saved from.
    const airGapped = newDir("cache");
    const fromDisk = await pull(`oci:${dir}:carried`, { cacheDir: airGapped });
    expect(fromDisk.reference).toBe(`${registry.host}/ai/layout:carried`);
    expect((await pull(`${registry.host}/ai/layout:carried`, { cacheDir: airGapped, offline: true })).digest).toBe(pulled.digest);
  });

  test("a second save into the same folder keeps the first model; a damaged blob is refused and nothing is recorded", async () => {
    const cacheDir = newDir("cache");
    await pull(`${registry.host}/ai/layout:v1`, { cacheDir });
    const dir = newDir("two");
    await saveModel(`${registry.host}/ai/layout:v1`, `oci:${dir}:a`, { cacheDir });
    await saveModel(`${registry.host}/ai/layout:v1`, `oci:${dir}:b`, { cacheDir });
    const { stdout } = await skopeo(["inspect", "--raw", `oci:${dir}:a`]);
    expect(digestOf(Buffer.from(stdout))).toBe(pushedDigest);

    const missing = (await pull(`oci:${dir}:nosuch`, { cacheDir: newDir("cache") }).catch((e: unknown) => e)) as LlamaOciError;
    expect(missing.code).toBe("NOT_FOUND");
    expect(missing.message).toMatch(/has no manifest named "nosuch" \(it has: a, b\)/);

    const blobs = join(dir, "blobs", "sha256");
    const ggufBlob = join(blobs, digestOf(gguf).slice("sha256:".length));
    const bytes = await readFile(ggufBlob);
    bytes[1000] = bytes[1000]! ^ 0xff;
    await writeFile(ggufBlob, bytes);
    const damagedCache = newDir("cache");
    const damaged = (await pull(`oci:${dir}:a`, { cacheDir: damagedCache }).catch((e: unknown) => e)) as LlamaOciError;
    expect(damaged.code).toBe("DIGEST_MISMATCH");
    expect(await listModels({ cacheDir: damagedCache })).toEqual([]);
    expect((await readdir(join(damagedCache, "oci", "blobs", "sha256"))).filter((n) => n === digestOf(gguf).slice(7))).toEqual([]);
  });

  test("a folder that is not a layout is a clear error", async () => {
    const error = (await pull(`oci:${workDir}:v1`, { cacheDir: newDir("cache") }).catch((e: unknown) => e)) as LlamaOciError;
    expect(error.message).toMatch(/is not an OCI image layout \(it has no oci-layout file\)/);
  });
});

describe("Ollama-format artifacts", () => {
  test("model, params, system, template and license layers: defaults and system prompt come back, the Go template is kept, push keeps the format", async () => {
    const gguf = fakeGguf(60_000, 402);
    const params = { stop: ["<|end|>", "<|user|>"], temperature: 0.6, top_k: 30, num_ctx: 2048, repeat_penalty: 1.1, bogus: "x" };
    const pushed = await pushArtifact({ registryUrl: registry.url, repository: "library/ollamafmt" }, "v1", {
      manifestMediaType: DOCKER_MANIFEST,
      config: { mediaType: "application/vnd.docker.container.image.v1+json", data: Buffer.from(JSON.stringify({ model_format: "gguf", model_family: "llama" })) },
      layers: [
        { mediaType: OLLAMA("model"), data: gguf },
        { mediaType: OLLAMA("template"), data: Buffer.from("{{ .System }}{{ .Prompt }}") },
        { mediaType: OLLAMA("system"), data: Buffer.from("You are a careful assistant.") },
        { mediaType: OLLAMA("params"), data: Buffer.from(JSON.stringify(params)) },
        { mediaType: OLLAMA("license"), data: Buffer.from("MIT") },
      ],
    });
    const cacheDir = newDir("cache");
    const warnings: string[] = [];
    const result = await pull(`${registry.host}/library/ollamafmt:v1`, { cacheDir, onWarning: (m) => warnings.push(m) });
    expect(result.format).toBe("ollama");
    expect(result.files.map((f) => [f.kind, f.filename])).toEqual([
      ["gguf", "model.gguf"],
      ["go-template", "template.gotmpl"],
      ["system-prompt", "system.txt"],
      ["params", "params.json"],
      ["license", "LICENSE"],
    ]);
    expect((await readFile(result.path)).equals(gguf)).toBe(true);
    expect(result.defaults).toEqual({ stop: ["<|end|>", "<|user|>"], temperature: 0.6, topK: 30, contextSize: 2048, repeatPenalty: 1.1 });
    expect(result.systemPrompt).toBe("You are a careful assistant.");
    expect(await readFile(result.goTemplatePath!, "utf8")).toBe("{{ .System }}{{ .Prompt }}");
    expect(warnings.join("\n")).toMatch(/has only a Go chat template/);

    const home = newDir("home");
    const ls = await runCli(["ls", "--json"], { env: cliEnv(home, cacheDir) });
    expect(JSON.parse(ls.stdout)).toEqual([expect.objectContaining({ reference: `${registry.host}/library/ollamafmt:v1` })]);
    const pushedAgain = await runCli(["push", `${registry.host}/library/ollamafmt:v1`, "-q"], { env: cliEnv(home, cacheDir) });
    expect(pushedAgain.exitCode, describeRun(pushedAgain)).toBe(0);
    const { stdout } = await skopeo(["inspect", "--raw", "--tls-verify=false", `docker://${registry.host}/library/ollamafmt:v1`]);
    expect(digestOf(Buffer.from(stdout))).toBe(pushed.digest);
  });
});

/** An HTTPS front for a registry under a real-world name, forwarding to the local one, recording what it saw. */
async function startNamedFront(
  cert: SelfSignedCert,
  upstream: RegistryHandle,
  rewrite: (path: string) => string,
  own?: (path: string) => { status: number; body?: string } | undefined,
) {
  const seen: { path: string; headers: IncomingHttpHeaders }[] = [];
  const server = createHttpsServer({ cert: await readFile(cert.certPath), key: await readFile(cert.keyPath) }, (req, res) => {
    const path = req.url ?? "/";
    seen.push({ path, headers: req.headers });
    const answer = own?.(path);
    if (answer) {
      res.writeHead(answer.status, { "content-type": "application/json" });
      res.end(answer.body ?? "{}");
      return;
    }
    const target = new URL(upstream.url);
    const forwarded = httpRequest(
      { host: target.hostname, port: target.port, method: req.method, path: rewrite(path), headers: { ...req.headers, host: target.host } },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    forwarded.on("error", () => res.destroy());
    req.pipe(forwarded);
  });
  const port = await listenLocal(server);
  return { port, seen, stop: () => closeServer(server) };
}

describe("Hugging Face and the Ollama library by reference", () => {
  let cert: SelfSignedCert;
  let proxy: ForwardProxy;
  let hf: Awaited<ReturnType<typeof startNamedFront>>;
  let ollama: Awaited<ReturnType<typeof startNamedFront>>;
  const hfGguf = fakeGguf(50_000, 403);
  const ollamaGguf = fakeGguf(40_000, 404);

  beforeAll(async () => {
    cert = await makeSelfSignedCert("hf.co", ["hf.co", "registry.ollama.ai"]);
    // docker-registry wants lowercase names; Hugging Face's keep their capitals: the front lowercases for it.
    await pushArtifact({ registryUrl: registry.url, repository: "bartowski/tiny-gguf" }, "q4_k_m", {
      manifestMediaType: DOCKER_MANIFEST,
      config: { mediaType: "application/vnd.docker.container.image.v1+json", data: Buffer.from("{}") },
      layers: [{ mediaType: OLLAMA("model"), data: hfGguf }],
    });
    await pushArtifact({ registryUrl: registry.url, repository: "library/tiny" }, "v1", dockerV01({ ggufs: [ollamaGguf] }));
    hf = await startNamedFront(cert, registry, (path) => path.toLowerCase());
    // The Ollama library answers 404 to the /v2/ ping and serves its API all the same.
    ollama = await startNamedFront(cert, registry, (path) => path, (path) => (path === "/v2/" ? { status: 404 } : undefined));
    proxy = await startForwardProxy({ resolve: { "hf.co:443": `127.0.0.1:${hf.port}`, "registry.ollama.ai:443": `127.0.0.1:${ollama.port}` } });
  });
  afterAll(async () => {
    await proxy?.stop();
    await hf?.stop();
    await ollama?.stop();
    await cert?.remove();
  });

  /** A HOME whose certs.d trusts the fronts' certificate (this process cannot take NODE_EXTRA_CA_CERTS any more). */
  const env = (extra: NodeJS.ProcessEnv = {}) => {
    const home = newDir("home");
    for (const host of ["hf.co", "registry.ollama.ai"]) {
      const dir = join(home, ".config", "containers", "certs.d", host);
      mkdirSync(dir, { recursive: true });
      copyFileSync(cert.certPath, join(dir, "ca.crt"));
    }
    return { ...process.env, HTTPS_PROXY: proxy.url, HOME: home, ...extra };
  };

  test("names keep their capitals on Hugging Face only; huggingface.co and ollama.com are aliases", () => {
    expect(parseReference("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M")).toMatchObject({
      registry: "hf.co",
      repository: "bartowski/Llama-3.2-1B-Instruct-GGUF",
      tag: "Q4_K_M",
      apiHost: "hf.co",
    });
    expect(parseReference("huggingface.co/Qwen/Qwen3-0.6B-GGUF").registry).toBe("hf.co");
    expect(() => parseReference("registry.example.com/Team/Model:v1")).toThrow(/must be lowercase/);
    expect(parseReference("ollama.com/llama3.2:1b")).toMatchObject({ registry: "registry.ollama.ai", repository: "library/llama3.2", tag: "1b" });
    expect(parseReference("registry.ollama.ai/library/llama3.2:1b").repository).toBe("library/llama3.2");
  });

  test("hf.co/<User>/<Repo>:<quant> is asked for with its capitals, with HF_TOKEN as the Bearer token", async () => {
    const result = await pull("hf.co/Bartowski/Tiny-GGUF:Q4_K_M", { cacheDir: newDir("cache"), env: env({ HF_TOKEN: "hf_test_token_5d1c" }) });
    expect((await readFile(result.path)).equals(hfGguf)).toBe(true);
    expect(result.reference).toBe("hf.co/Bartowski/Tiny-GGUF:Q4_K_M");
    const manifestRequests = hf.seen.filter((r) => r.path.includes("/manifests/"));
    expect(manifestRequests.map((r) => r.path)).toContain("/v2/Bartowski/Tiny-GGUF/manifests/Q4_K_M");
    expect(manifestRequests.every((r) => r.headers.authorization === "Bearer hf_test_token_5d1c")).toBe(true);
  });

  test("the Hugging Face CLI's token file is used when HF_TOKEN is not set", async () => {
    hf.seen.length = 0;
    const hfHome = newDir("hf-home");
    await run("mkdir", ["-p", hfHome]);
    await writeFile(join(hfHome, "token"), "hf_file_token_8e2a\n");
    await pull("huggingface.co/Bartowski/Tiny-GGUF:Q4_K_M", { cacheDir: newDir("cache"), env: env({ HF_HOME: hfHome }) });
    expect(hf.seen.some((r) => r.headers.authorization === "Bearer hf_file_token_8e2a")).toBe(true);
  });

  test("ollama.com/<model>:<tag> is the Ollama library's library/<model>, pulled although its /v2/ answers 404", async () => {
    const home = newDir("home");
    const out = await runCli(["pull", "ollama.com/tiny:v1"], { env: { ...env(), ...cliEnv(home, newDir("cache")), HTTPS_PROXY: proxy.url, NODE_EXTRA_CA_CERTS: cert.certPath } });
    expect(out.exitCode, describeRun(out)).toBe(0);
    expect((await readFile(lines(out.stdout).at(-1)!)).equals(ollamaGguf)).toBe(true);
    expect(ollama.seen.map((r) => r.path)).toContain("/v2/library/tiny/manifests/v1");
  });
});

describe("platform selection in an index", () => {
  let amd64: Buffer;
  let arm64: Buffer;

  beforeAll(async () => {
    amd64 = fakeGguf(30_000, 405);
    arm64 = fakeGguf(30_000, 406);
    const target = { registryUrl: registry.url, repository: "ai/multi" };
    const a = await pushArtifact(target, "amd64", dockerV01({ ggufs: [amd64] }));
    const b = await pushArtifact(target, "arm64", dockerV01({ ggufs: [arm64] }));
    await pushIndex(target, "v1", [
      { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: a.digest, size: a.manifest.length, platform: { os: "linux", architecture: "amd64" } },
      { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: b.digest, size: b.manifest.length, platform: { os: "linux", architecture: "arm64" } },
    ]);
  });

  test("the default rule, --platform, DOCKER_DEFAULT_PLATFORM, and a cached tag asked for on another platform", async () => {
    const cacheDir = newDir("cache");
    const ref = `${registry.host}/ai/multi:v1`;
    expect((await readFile((await pull(ref, { cacheDir })).path)).equals(amd64)).toBe(true);
    expect((await readFile((await pull(ref, { cacheDir, platform: "linux/arm64" })).path)).equals(arm64)).toBe(true);
    const env = { ...process.env, DOCKER_DEFAULT_PLATFORM: "linux/amd64" };
    expect((await readFile((await pull(ref, { cacheDir, env })).path)).equals(amd64)).toBe(true);
    expect((await readFile((await pull(ref, { cacheDir, platform: "linux/arm64", offline: true })).path)).equals(arm64)).toBe(true);
  });

  test("a platform the index does not hold is one line listing what it holds", async () => {
    const home = newDir("home");
    const out = await runCli(["pull", "--platform", "linux/riscv64", `${registry.host}/ai/multi:v1`], { env: cliEnv(home, newDir("cache")) });
    expect(out.exitCode).toBe(1);
    const errors = lines(out.stderr).filter((l) => l.startsWith("error:"));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/no manifest for platform linux\/riscv64 \(it holds: linux\/amd64, linux\/arm64\)/);
    const bad = await runCli(["pull", "--platform", "linux", `${registry.host}/ai/multi:v1`], { env: cliEnv(home, newDir("cache")) });
    expect(lines(bad.stderr).filter((l) => l.startsWith("error:"))[0]).toMatch(/invalid platform "linux": expected os\/arch/);
  });
});
