// Registry mirrors: parsing of --registry-mirror / LLAMA_OCI_REGISTRY_MIRRORS entries, the endpoints a pull tries,
// and real pulls through a docker-registry pull-through cache of another local registry (the origin). Fault proxies
// in front of both count who served what: the reference names the origin's proxy, the mirror fetches from the
// origin directly, so every request the origin's proxy sees came from the client.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { pull } from "../src/index.js";
import { LlamaOciError } from "../src/errors.js";
import { configuredMirrors, parseRegistryMirrors, pullEndpoints } from "../src/oci/remote/index.js";
import { parseReference } from "../src/oci/name/index.js";
import { dockerV01, fakeGguf } from "./helpers/artifacts.js";
import { cliEnv, describeRun, runCli } from "./helpers/cli.js";
import { authField, makeAuthSandbox } from "./helpers/docker-config.js";
import { startFaultProxy, type FaultProxy } from "./helpers/fault-proxy.js";
import { freePort } from "./helpers/ports.js";
import { pushArtifact } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

describe("mirror entries", () => {
  test("a plain URL mirrors Docker Hub; HOST=URL mirrors HOST; whitespace and blank entries are ignored", () => {
    const mirrors = parseRegistryMirrors(
      [" https://mirror.corp/ , registry.example.com = http://127.0.0.1:5001", ",", "index.docker.io=https://hub-cache.corp:8443"],
      "test",
    );
    expect(mirrors).toEqual([
      { registry: "docker.io", url: "https://mirror.corp", host: "mirror.corp", scheme: "https" },
      { registry: "registry.example.com", url: "http://127.0.0.1:5001", host: "127.0.0.1:5001", scheme: "http" },
      { registry: "docker.io", url: "https://hub-cache.corp:8443", host: "hub-cache.corp:8443", scheme: "https" },
    ]);
  });

  test("the issue's LLAMA_OCI_REGISTRY_MIRRORS example; options come before the environment, repeats dropped", () => {
    const env = { LLAMA_OCI_REGISTRY_MIRRORS: "docker.io=https://mirror.corp,registry.example.com=http://127.0.0.1:5001" };
    const mirrors = configuredMirrors(["https://first.corp", "https://mirror.corp"], env);
    expect(mirrors.map((m) => `${m.registry}=${m.url}`)).toEqual([
      "docker.io=https://first.corp",
      "docker.io=https://mirror.corp",
      "registry.example.com=http://127.0.0.1:5001",
    ]);
    expect(configuredMirrors(undefined, {})).toEqual([]);
  });

  test.each([
    ["mirror.corp:5000", "needs a scheme"],
    ["docker.io=mirror.corp", "needs a scheme"],
    ["ftp://mirror.corp", "unsupported scheme ftp"],
    ["https://mirror.corp/v2/", "no path, query or fragment"],
    ["https://mirror.corp?x=1", "no path, query or fragment"],
    ["Bad Host=https://mirror.corp", "is not a registry host[:port]"],
    ["registry.example.com/team=https://mirror.corp", "is not a registry host[:port]"],
  ])("invalid entry %j: a clear error naming the entry and the variable", (entry, problem) => {
    const env = { LLAMA_OCI_REGISTRY_MIRRORS: `https://ok.corp, ${entry}` };
    let error: unknown;
    try {
      configuredMirrors([], env);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(LlamaOciError);
    expect((error as LlamaOciError).code).toBe("INVALID_ARGUMENT");
    expect((error as LlamaOciError).message).toContain(`LLAMA_OCI_REGISTRY_MIRRORS entry ${JSON.stringify(entry)}`);
    expect((error as LlamaOciError).message).toContain(problem);
  });

  test("credentials in a mirror URL are refused without echoing the password", () => {
    expect(() => parseRegistryMirrors(["https://alice:s3cret@mirror.corp"], "--registry-mirror")).toThrow(/must not hold credentials/);
    expect(() => parseRegistryMirrors(["https://alice:s3cret@mirror.corp"], "--registry-mirror")).not.toThrow(/s3cret/);
  });

  test("endpoints for a Docker Hub reference: the plain-URL mirrors in order, then registry-1.docker.io", () => {
    const mirrors = parseRegistryMirrors(["https://m1.corp", "ghcr.io=https://ghcr-cache.corp", "http://10.0.0.5:5000"], "test");
    const endpoints = pullEndpoints(parseReference("ai/smollm2:135M-Q4_0"), mirrors);
    expect(endpoints).toEqual([
      { kind: "mirror", registry: "m1.corp", apiHost: "m1.corp", scheme: "https", repository: "ai/smollm2", label: "https://m1.corp" },
      { kind: "mirror", registry: "10.0.0.5:5000", apiHost: "10.0.0.5:5000", scheme: "http", repository: "ai/smollm2", label: "http://10.0.0.5:5000" },
      { kind: "origin", registry: "docker.io", apiHost: "registry-1.docker.io", repository: "ai/smollm2", label: "docker.io" },
    ]);
    expect(pullEndpoints(parseReference("ghcr.io/o/m:v1"), mirrors).map((e) => e.label)).toEqual(["https://ghcr-cache.corp", "ghcr.io"]);
    expect(pullEndpoints(parseReference("quay.io/o/m:v1"), mirrors).map((e) => e.label)).toEqual(["quay.io"]);
  });
});

describe("pulls through a mirror", () => {
  let origin: RegistryHandle;
  let originProxy: FaultProxy;
  let cache: RegistryHandle;
  let mirrorProxy: FaultProxy;
  let workDir: string;
  let cacheCount = 0;
  const gguf = fakeGguf(200_000, 41);
  let pushedDigest = "";
  let reference = "";

  const newCache = () => join(workDir, `cache-${++cacheCount}`);
  const options = (extra: Parameters<typeof pull>[1] = {}) => ({
    cacheDir: newCache(),
    env: { HOME: join(workDir, "home") },
    retry: { attempts: 2, baseDelayMs: 10, maxDelayMs: 20 },
    ...extra,
  });
  const manifestAndBlobRequests = (proxy: FaultProxy) => proxy.requests.filter((r) => /\/v2\/team\/model\/(manifests|blobs)\//.test(r.path));

  beforeAll(async () => {
    workDir = await makeTempDir("llama-oci-mirrors");
    origin = await startRegistry();
    originProxy = await startFaultProxy(origin.url);
    cache = await startRegistry({ proxy: { remoteUrl: origin.url } });
    mirrorProxy = await startFaultProxy(cache.url);
    pushedDigest = (await pushArtifact({ registryUrl: origin.url, repository: "team/model" }, "v1", dockerV01({ ggufs: [gguf] }))).digest;
    reference = `${originProxy.host}/team/model:v1`;
  });

  afterAll(async () => {
    await mirrorProxy?.stop();
    await cache?.stop();
    await originProxy?.stop();
    await origin?.stop();
    await removeDir(workDir);
  });

  const reset = () => {
    originProxy.resetStats();
    mirrorProxy.resetStats();
    mirrorProxy.clearFaults();
  };

  test("the mirror serves the manifest and blobs; the origin sees nothing; the cache keeps the origin's name", async () => {
    reset();
    const debug: string[] = [];
    const opts = options({ registryMirrors: [`${originProxy.host}=${mirrorProxy.url}`], verbose: true, onDebug: (m) => debug.push(m) });
    const result = await pull(reference, opts);
    expect((await readFile(result.path)).equals(gguf)).toBe(true);
    expect(result.digest).toBe(pushedDigest);
    expect(result.reference).toBe(reference);
    expect(result.mirror).toBe(mirrorProxy.url);

    const served = manifestAndBlobRequests(mirrorProxy);
    expect(served.some((r) => r.method === "GET" && r.path.includes("/manifests/v1") && r.status === 200)).toBe(true);
    for (const file of result.files) {
      expect(served.some((r) => r.method === "GET" && r.path.endsWith(`/blobs/${file.digest}`) && r.status === 200)).toBe(true);
    }
    expect(originProxy.requests).toEqual([]);
    expect(debug.some((line) => line.includes(`from mirror ${mirrorProxy.url}`))).toBe(true);

    // Offline, the same origin reference resolves from the cache the mirror filled.
    const offline = await pull(reference, { ...opts, offline: true });
    expect(offline.path).toBe(result.path);
    expect(offline.reference).toBe(reference);
  });

  test("LLAMA_OCI_REGISTRY_MIRRORS alone routes the pull through the mirror", async () => {
    reset();
    const result = await pull(reference, options({ env: { HOME: join(workDir, "home"), LLAMA_OCI_REGISTRY_MIRRORS: ` ${originProxy.host} = ${mirrorProxy.url} ` } }));
    expect(result.mirror).toBe(mirrorProxy.url);
    expect(manifestAndBlobRequests(mirrorProxy).length).toBeGreaterThan(0);
    expect(originProxy.requests).toEqual([]);
  });

  test("a mirror answering 503 is skipped with a warning naming it; the origin serves", async () => {
    reset();
    mirrorProxy.addFault({ kind: "status", status: 503, times: 1000 });
    const warnings: string[] = [];
    const result = await pull(reference, options({ registryMirrors: [`${originProxy.host}=${mirrorProxy.url}`], onWarning: (m) => warnings.push(m) }));
    expect((await readFile(result.path)).equals(gguf)).toBe(true);
    expect(result.mirror).toBeUndefined();
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(`registry mirror ${mirrorProxy.url} failed`);
    expect(warnings[0]).toContain(`trying the registry ${originProxy.host}`);
    expect(manifestAndBlobRequests(originProxy).length).toBeGreaterThan(0);
  });

  test("two mirrors, the first down (nothing listening): the second serves", async () => {
    reset();
    const dead = `http://127.0.0.1:${await freePort()}`;
    const warnings: string[] = [];
    const result = await pull(
      reference,
      options({ registryMirrors: [`${originProxy.host}=${dead}`, `${originProxy.host}=${mirrorProxy.url}`], onWarning: (m) => warnings.push(m) }),
    );
    expect(result.mirror).toBe(mirrorProxy.url);
    expect((await readFile(result.path)).equals(gguf)).toBe(true);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(`registry mirror ${dead} failed`);
    expect(warnings[0]).toContain(`trying mirror ${mirrorProxy.url}`);
    expect(originProxy.requests).toEqual([]);
  });

  test("a mirror that does not have the repository (plain registry, 404) falls through to the origin", async () => {
    reset();
    const empty = await startRegistry();
    try {
      const warnings: string[] = [];
      const result = await pull(reference, options({ registryMirrors: [`${originProxy.host}=${empty.url}`], onWarning: (m) => warnings.push(m) }));
      expect(result.digest).toBe(pushedDigest);
      expect(result.mirror).toBeUndefined();
      expect(warnings.join("\n")).toMatch(/registry mirror http:\/\/127\.0\.0\.1:\d+ failed .*not found/i);
      expect(manifestAndBlobRequests(originProxy).length).toBeGreaterThan(0);
    } finally {
      await empty.stop();
    }
  });

  test("blobs failing on the mirror after retries come from the origin", async () => {
    reset();
    mirrorProxy.addFault({ kind: "status", status: 503, times: 1000, match: (r) => r.path.includes("/blobs/") });
    const warnings: string[] = [];
    const result = await pull(reference, options({ registryMirrors: [`${originProxy.host}=${mirrorProxy.url}`], onWarning: (m) => warnings.push(m) }));
    expect((await readFile(result.path)).equals(gguf)).toBe(true);
    expect(result.mirror).toBe(mirrorProxy.url);
    expect(warnings.some((w) => w.includes(`registry mirror ${mirrorProxy.url} failed downloading`) && w.includes(`downloading the rest from ${originProxy.host}`))).toBe(true);
    expect(originProxy.requests.some((r) => r.method === "GET" && r.path.includes("/blobs/") && r.status === 200)).toBe(true);
    expect(originProxy.requests.some((r) => r.path.includes("/manifests/"))).toBe(false);
  });

  test("CLI: --registry-mirror routes the pull, -v names the mirror, a bad entry fails with one clear line", async () => {
    reset();
    const env = cliEnv(join(workDir, "home"), newCache());
    const run = await runCli(["pull", "-q", "-v", "--registry-mirror", `${originProxy.host}=${mirrorProxy.url}`, reference], { env });
    expect(run.exitCode, describeRun(run)).toBe(0);
    expect((await readFile(run.stdout.trim())).equals(gguf)).toBe(true);
    expect(run.stderr).toContain(`from mirror ${mirrorProxy.url}`);
    expect(originProxy.requests).toEqual([]);

    const bad = await runCli(["pull", "--registry-mirror", "mirror.corp", reference], { env });
    expect(bad.exitCode, describeRun(bad)).toBe(1);
    expect(bad.stderr).toContain('invalid registry mirror entry "mirror.corp": the mirror URL needs a scheme');
  });

  test("an auth-protected mirror gets the credentials stored for the mirror's host, and is skipped without them", async () => {
    const authCache = await startRegistry({ auth: { kind: "htpasswd", users: { mirroruser: "mirrorpass" } }, proxy: { remoteUrl: origin.url } });
    const authProxy = await startFaultProxy(authCache.url);
    try {
      const mirrors = [`${originProxy.host}=${authProxy.url}`];
      reset();
      const warnings: string[] = [];
      const anonymous = await pull(reference, options({ registryMirrors: mirrors, onWarning: (m) => warnings.push(m) }));
      expect(anonymous.mirror).toBeUndefined();
      expect(warnings.join("\n")).toContain(`registry mirror ${authProxy.url} failed`);
      expect(warnings.join("\n")).not.toContain("mirrorpass");

      const sandbox = await makeAuthSandbox(join(workDir, "auth"));
      await sandbox.writeDockerConfig({ auths: { [authProxy.host]: { auth: authField("mirroruser", "mirrorpass") } } });
      reset();
      authProxy.resetStats();
      const authed = await pull(reference, options({ registryMirrors: mirrors, env: sandbox.env() }));
      expect(authed.mirror).toBe(authProxy.url);
      expect((await readFile(authed.path)).equals(gguf)).toBe(true);
      expect(authProxy.requests.some((r) => r.path.includes("/manifests/v1") && r.status === 200)).toBe(true);
      expect(originProxy.requests).toEqual([]);
    } finally {
      await authProxy.stop();
      await authCache.stop();
    }
  });
});
