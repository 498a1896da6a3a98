// A registry that fails in front of a cached model: 5xx, 429, 401/403, TLS and terminal-escaping error bodies, through
// a fault proxy in front of a real docker-registry. Pings, tokens, HEADs and GETs retry with the one policy; a cached
// tag is served from the cache with one warning; a 429 on the HEAD never becomes a GET; manifest and token requests
// follow redirects (Authorization dropped across origins); the OAuth2 POST falls back to GET.
import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from "node:http";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { llama, LlamaOciError, pull, type PullOptions } from "../src/index.js";
import { dockerV01, fakeGguf } from "./helpers/artifacts.js";
import { cliEnv, describeRun, lines, runCli } from "./helpers/cli.js";
import { startFaultProxy, type FaultProxy, type FaultRequestInfo } from "./helpers/fault-proxy.js";
import { closeServer, listenLocal } from "./helpers/ports.js";
import { pushArtifact } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { DEFAULT_TINY_VOCAB, makeTinyLlama } from "./helpers/tiny-model.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";
import { startTokenServer, type TokenServer } from "./helpers/token-server.js";

const FAST_RETRY: PullOptions["retry"] = { baseDelayMs: 10, maxDelayMs: 40 };
const ATTEMPTS = 5;
const everything = () => true;
const manifestsHead = (req: FaultRequestInfo) => req.method === "HEAD" && req.path.includes("/manifests/");

let workDir: string;
let registry: RegistryHandle;
let proxy: FaultProxy;
let reference: string;
let cacheCount = 0;
const newCache = () => join(workDir, `cache-${++cacheCount}`);

/** A cache in which `reference` was pulled while the registry was healthy. */
async function warmCache(): Promise<string> {
  const cacheDir = newCache();
  proxy.clearFaults();
  await pull(reference, { cacheDir, retry: FAST_RETRY });
  proxy.resetStats();
  return cacheDir;
}

async function pullCollecting(cacheDir: string, extra: PullOptions = {}) {
  const warnings: string[] = [];
  const result = await pull(reference, { cacheDir, retry: FAST_RETRY, onWarning: (m) => warnings.push(m), ...extra });
  return { result, warnings };
}

const seen = (predicate: (r: { method: string; path: string }) => boolean) => proxy.requests.filter(predicate).length;

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-registry-failures");
  registry = await startRegistry();
  proxy = await startFaultProxy(registry.url);
  const modelPath = join(workDir, "tiny.gguf");
  await makeTinyLlama(modelPath, { vocabFrom: DEFAULT_TINY_VOCAB, seed: 23, contextLength: 256 });
  await pushArtifact({ registryUrl: registry.url, repository: "ai/failing" }, "v1", dockerV01({ ggufs: [await readFile(modelPath)] }));
  reference = `${proxy.host}/ai/failing:v1`;
});

afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
  if (workDir) await removeDir(workDir);
});

describe("a cached tag whose registry check fails is served from the cache, with one warning", () => {
  test.each([503, 500, 502])("the registry answers %i to everything: every request was retried, then the cache answered", async (status) => {
    const cacheDir = await warmCache();
    proxy.addFault({ kind: "status", status, times: 1000, match: everything });
    const { result, warnings } = await pullCollecting(cacheDir);
    expect(result.fromCache).toBe(true);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(new RegExp(`could not be checked .*answered ${status} \\(try again later\\).*using the cached copy`));
    // The ping (GET /v2/) was attempted as often as the policy allows, and nothing else was asked.
    expect(seen((r) => r.path === "/v2/")).toBe(ATTEMPTS);
    expect(seen((r) => r.path !== "/v2/")).toBe(0);
  });

  test("without a cached copy the same failure is an error that says to try again later, not 'not an OCI registry'", async () => {
    proxy.clearFaults();
    proxy.resetStats();
    proxy.addFault({ kind: "status", status: 503, times: 1000, match: everything });
    const error = (await pull(reference, { cacheDir: newCache(), retry: FAST_RETRY }).catch((e: unknown) => e)) as LlamaOciError;
    expect(error).toBeInstanceOf(LlamaOciError);
    expect(error.code).toBe("REGISTRY");
    expect(error.message).toBe(`${proxy.host} answered 503 (try again later)`);
    expect(error.message).not.toMatch(/OCI registry/);
    proxy.clearFaults();
  });

  test("a 503 that passes is retried through: ping, HEAD and GET each recover, and the pull succeeds", async () => {
    proxy.clearFaults();
    proxy.resetStats();
    proxy.addFault({ kind: "status", status: 503, times: 2, match: (r) => r.path === "/v2/" });
    proxy.addFault({ kind: "status", status: 503, times: 2, match: (r) => r.method === "GET" && r.path.includes("/manifests/") });
    const { result, warnings } = await pullCollecting(newCache());
    expect(result.fromCache).toBe(false);
    expect(warnings).toEqual([]);
    expect(seen((r) => r.path === "/v2/")).toBe(3);
    expect(seen((r) => r.method === "GET" && r.path.includes("/manifests/"))).toBe(3);
  });

  test.each([
    ["429 with a Retry-After longer than the policy waits", { status: 429, retryAfter: "3600" }, /rate limit reached.*retry after 3600/],
    ["429 retried until the policy gives up", { status: 429, retryAfter: "0" }, /rate limit reached/],
    ["401", { status: 401 }, /could not be checked .*authentication required/],
    ["403", { status: 403 }, /could not be checked .*denied/],
  ] as const)("%s on the manifest HEAD: the cache answers, and no GET is ever sent", async (_, fault, pattern) => {
    const cacheDir = await warmCache();
    proxy.addFault({ kind: "status", times: 1000, match: manifestsHead, ...fault });
    const { result, warnings } = await pullCollecting(cacheDir);
    expect(result.fromCache).toBe(true);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(pattern);
    expect(warnings[0]).toMatch(/using the cached copy/);
    expect(seen((r) => r.method === "GET" && r.path.includes("/manifests/"))).toBe(0);
    const heads = seen((r) => r.method === "HEAD");
    if (fault.status === 429 && fault.retryAfter === "0") expect(heads).toBe(ATTEMPTS);
    else if (fault.status === 429) expect(heads).toBe(1);
    proxy.clearFaults();
  });

  test("an unreachable registry: the cache answers after the retries", async () => {
    const cacheDir = await warmCache();
    const stopped = await startFaultProxy(registry.url);
    const ref = `${stopped.host}/ai/failing:v1`;
    await pull(ref, { cacheDir, retry: FAST_RETRY });
    await stopped.stop();
    const warnings: string[] = [];
    const result = await pull(ref, { cacheDir, retry: FAST_RETRY, onWarning: (m) => warnings.push(m) });
    expect(result.fromCache).toBe(true);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/is unreachable .*ECONNREFUSED.*using the cached copy/);
  });

  test("llama.fromDocker() loads the cached model while the registry answers 503", async () => {
    const cacheDir = await warmCache();
    proxy.addFault({ kind: "status", status: 503, times: 1000, match: everything });
    const warnings: string[] = [];
    const model = await llama.fromDocker(reference, { cacheDir, retry: FAST_RETRY, onWarning: (m) => warnings.push(m), gpuLayers: 0 });
    try {
      expect((await model.complete("Hello", { maxTokens: 4, temperature: 0 })).length).toBeGreaterThan(0);
    } finally {
      await model.dispose();
    }
    expect(warnings).toHaveLength(1);
    proxy.clearFaults();
  });

  test("llama-oci run of a cached model under Docker Hub's rate limit (429 to everything) runs, with one warning line", async () => {
    const home = join(workDir, `home-${++cacheCount}`);
    const cacheDir = await warmCache();
    proxy.addFault({ kind: "status", status: 429, retryAfter: "3600", times: 1000, match: everything });
    const run = await runCli(["run", reference, "-p", "Hello", "-n", "4", "--temp", "0", "-ngl", "0"], { env: cliEnv(home, cacheDir) });
    expect(run.exitCode, describeRun(run)).toBe(0);
    expect(run.stdout.trim().length).toBeGreaterThan(0);
    const warningLines = lines(run.stderr).filter((l) => l.startsWith("warning:"));
    expect(warningLines, run.stderr).toHaveLength(1);
    expect(warningLines[0]).toMatch(/answered 429 .*using the cached copy/);
    proxy.clearFaults();
  });
});

describe("bounded inputs", () => {
  test("a config blob larger than a model config can be is refused before anything is downloaded", async () => {
    const artifact = dockerV01({ ggufs: [fakeGguf(20_000, 74)] });
    artifact.config = { mediaType: artifact.config.mediaType, data: Buffer.alloc(5 * 1024 * 1024, 0x20) };
    await pushArtifact({ registryUrl: registry.url, repository: "ai/bigconfig" }, "v1", artifact);
    proxy.clearFaults();
    proxy.resetStats();
    const error = (await pull(`${proxy.host}/ai/bigconfig:v1`, { cacheDir: newCache(), retry: FAST_RETRY }).catch((e: unknown) => e)) as LlamaOciError;
    expect(error).toBeInstanceOf(LlamaOciError);
    expect(error.code).toBe("UNSUPPORTED_ARTIFACT");
    expect(error.message).toMatch(/config blob is 5242880 bytes, more than a model config can be \(4194304\)/);
    expect(seen((r) => r.path.includes("/blobs/"))).toBe(0);
  });
});

describe("terminal safety", () => {
  test("escape sequences in a registry's error message never reach the terminal", async () => {
    proxy.clearFaults();
    const hostile =
      "clipboard \u001b]52;c;ZWNobyBwd25lZA==\u0007 title \u001b]0;owned\u001b\\ colour \u001b[31mred\u001b[0m c1 \u009b2J bell \u0007 cr \r end";
    proxy.addFault({
      kind: "status",
      status: 404,
      times: 1000,
      match: (r) => r.path.includes("/manifests/"),
      body: JSON.stringify({ errors: [{ code: "MANIFEST_UNKNOWN", message: hostile }] }),
    });
    const home = join(workDir, `home-${++cacheCount}`);
    const run = await runCli(["pull", reference], { env: cliEnv(home, newCache()) });
    expect(run.exitCode, describeRun(run)).toBe(1);
    expect(run.stderr).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
    const errorLines = lines(run.stderr).filter((l) => l.startsWith("error:"));
    expect(errorLines).toHaveLength(1);
    expect(errorLines[0]).toContain("clipboard");
    expect(errorLines[0]).toContain("red");
    expect(errorLines[0]).not.toContain("ZWNobyBwd25lZA==");
    proxy.clearFaults();
  });
});

describe("terminal safety of inspect", () => {
  test("names, templates, media types and annotations from a model are shown without their escape sequences", async () => {
    const path = join(workDir, "hostile.gguf");
    const osc52 = "\u001b]52;c;cm0gLXJmIH4=\u0007";
    await makeTinyLlama(path, {
      vocabFrom: DEFAULT_TINY_VOCAB,
      seed: 29,
      name: `hostile${osc52}\u001b[2Jname\u009b31m`,
      chatTemplate: `{{ bos_token }}\u001b]0;retitled\u0007{% for m in messages %}{{ m.content }}{% endfor %}`,
    });
    const artifact = dockerV01({ ggufs: [await readFile(path)] });
    artifact.layers.push({ mediaType: `application/x-note\u001b[31m${osc52}`, data: Buffer.from("note"), annotations: { "org.example.note": `a\u001b[1mb` } });
    await pushArtifact({ registryUrl: registry.url, repository: "ai/hostile" }, "v1", artifact);
    const home = join(workDir, `home-${++cacheCount}`);
    const text = await runCli(["inspect", "--remote", `${registry.host}/ai/hostile:v1`], { env: cliEnv(home, newCache()) });
    expect(text.exitCode, describeRun(text)).toBe(0);
    expect(text.stdout).toContain("hostile");
    expect(text.stdout).toContain("application/x-note");
    expect(text.stdout).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
    const json = await runCli(["inspect", "--remote", "--json", `${registry.host}/ai/hostile:v1`], { env: cliEnv(home, newCache()) });
    expect(json.exitCode, describeRun(json)).toBe(0);
    expect(json.stdout).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
    // The JSON keeps the exact strings, escaped: a program reading it gets what the model says.
    const parsed = JSON.parse(json.stdout) as { gguf: { name?: string } };
    expect(parsed.gguf.name).toContain("\u001b]52;c;");
  });
});

/** A server that answers some requests itself and forwards the rest to `upstream`, recording what it saw. */
async function startFront(
  upstream: string,
  answer: (req: { method: string; path: string; headers: IncomingHttpHeaders }) => { status: number; headers?: Record<string, string>; body?: Buffer } | undefined,
): Promise<{ url: string; seen: { method: string; path: string; headers: IncomingHttpHeaders }[]; server: Server }> {
  const target = new URL(upstream);
  const seen: { method: string; path: string; headers: IncomingHttpHeaders }[] = [];
  const server = createServer((req, res) => {
    const info = { method: req.method ?? "GET", path: req.url ?? "/", headers: req.headers };
    seen.push(info);
    const own = answer(info);
    if (own) {
      res.writeHead(own.status, own.headers);
      res.end(own.body);
      return;
    }
    const forwarded = httpRequest(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: { ...req.headers, host: target.host } },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    forwarded.on("error", () => res.destroy());
    req.pipe(forwarded);
  });
  const port = await listenLocal(server);
  return { url: `http://127.0.0.1:${port}`, seen, server };
}

describe("redirects and token requests", () => {
  let tokens: TokenServer;
  const servers: Server[] = [];

  beforeAll(async () => {
    tokens = await startTokenServer();
    tokens.setUser("alice", "alice-pw-7c1d");
    tokens.setIdentityToken("idtok-33e1", "alice");
    tokens.grant(null, "open/model", ["pull"]);
    tokens.grant("alice", "team/model", ["pull", "push"]);
    tokens.grant("alice", "open/model", ["pull", "push"]);
  });
  afterAll(async () => {
    for (const server of servers) await closeServer(server);
    await tokens?.stop();
  });

  test("a manifest GET redirected to another origin is followed, without the Authorization header", async () => {
    const registryWithAuth = await startRegistry({ auth: { kind: "htpasswd", users: { bob: "bob-pw-91aa" } } });
    try {
      const pushed = await pushArtifact(
        { registryUrl: registryWithAuth.url, repository: "team/redirected", auth: { username: "bob", password: "bob-pw-91aa" } },
        "v1",
        dockerV01({ ggufs: [fakeGguf(20_000, 71)] }),
      );
      const store = await startFront("http://127.0.0.1:1", (req) => ({
        status: 200,
        headers: { "content-type": "application/vnd.oci.image.manifest.v1+json", "docker-content-digest": pushed.digest },
        body: req.method === "HEAD" ? undefined : pushed.manifest,
      }));
      servers.push(store.server);
      const front = await startFront(registryWithAuth.url, (req) =>
        req.path.includes("/manifests/") ? { status: 307, headers: { location: `${store.url}/manifests/${pushed.digest}` } } : undefined,
      );
      servers.push(front.server);
      const host = front.url.slice("http://".length);
      const result = await pull(`${host}/team/redirected:v1`, {
        cacheDir: newCache(),
        retry: FAST_RETRY,
        credentials: { username: "bob", password: "bob-pw-91aa" },
      });
      expect(result.digest).toBe(pushed.digest);
      expect(front.seen.filter((r) => r.path.includes("/manifests/")).every((r) => r.headers.authorization !== undefined)).toBe(true);
      expect(store.seen.length).toBeGreaterThan(0);
      for (const request of store.seen) expect(request.headers.authorization).toBeUndefined();
    } finally {
      await registryWithAuth.stop();
    }
  });

  test("a token realm that redirects is followed", async () => {
    const realmFront = await startFront(tokens.url, (req) =>
      req.path.startsWith("/redirect") ? { status: 307, headers: { location: `${tokens.url}/token${req.path.slice("/redirect".length)}` } } : undefined,
    );
    servers.push(realmFront.server);
    // Pushed through a registry with the plain realm; served by one on the same storage whose realm redirects.
    const direct = await startRegistry({ auth: { kind: "token", tokenServer: tokens } });
    await pushArtifact(
      { registryUrl: direct.url, repository: "open/model", auth: { username: "alice", password: "alice-pw-7c1d" } },
      "v1",
      dockerV01({ ggufs: [fakeGguf(20_000, 72)] }),
    );
    const tokenRegistry = await startRegistry({ rootDir: direct.rootDir, auth: { kind: "token", tokenServer: { ...tokens, realm: `${realmFront.url}/redirect` } } });
    try {
      const before = tokens.requests.length;
      const result = await pull(`${tokenRegistry.host}/open/model:v1`, { cacheDir: newCache(), retry: FAST_RETRY });
      expect(result.fromCache).toBe(false);
      expect(realmFront.seen.some((r) => r.path.startsWith("/redirect"))).toBe(true);
      expect(tokens.requests.length).toBeGreaterThan(before);
    } finally {
      await tokenRegistry.stop();
      await direct.stop();
    }
  });

  test("a token response larger than a token can be is refused, not buffered", async () => {
    const huge = Buffer.from(JSON.stringify({ token: "x".repeat(2 * 1024 * 1024) }));
    const realmFront = await startFront(tokens.url, () => ({ status: 200, headers: { "content-type": "application/json" }, body: huge }));
    servers.push(realmFront.server);
    const tokenRegistry = await startRegistry({ auth: { kind: "token", tokenServer: { ...tokens, realm: `${realmFront.url}/token` } } });
    try {
      const error = (await pull(`${tokenRegistry.host}/open/model:v1`, { cacheDir: newCache(), retry: FAST_RETRY }).catch((e: unknown) => e)) as LlamaOciError;
      expect(error).toBeInstanceOf(LlamaOciError);
      expect(error.message).toMatch(/token server 127\.0\.0\.1:\d+ sent a response larger than 1048576 bytes/);
    } finally {
      await tokenRegistry.stop();
    }
  });

  test.each([400, 401, 404, 405])("the OAuth2 token POST answered %i falls back to GET with the identity token", async (status) => {
    const realmFront = await startFront(tokens.url, (req) => (req.method === "POST" ? { status, headers: { "content-type": "application/json" }, body: Buffer.from("{}") } : undefined));
    servers.push(realmFront.server);
    const tokenRegistry = await startRegistry({ auth: { kind: "token", tokenServer: { ...tokens, realm: `${realmFront.url}/token` } } });
    try {
      await pushArtifact(
        { registryUrl: tokenRegistry.url, repository: "team/model", auth: { username: "alice", password: "alice-pw-7c1d" } },
        "v1",
        dockerV01({ ggufs: [fakeGguf(20_000, 73)] }),
      );
      const result = await pull(`${tokenRegistry.host}/team/model:v1`, {
        cacheDir: newCache(),
        retry: FAST_RETRY,
        credentials: { identityToken: "idtok-33e1" },
      });
      expect(result.fromCache).toBe(false);
      expect(realmFront.seen.some((r) => r.method === "POST")).toBe(true);
      expect(realmFront.seen.some((r) => r.method === "GET")).toBe(true);
    } finally {
      await tokenRegistry.stop();
    }
  });
});
