// How `llama-oci pull` reaches registries: HTTPS with a private CA (NODE_EXTRA_CA_CERTS) and no silent downgrade
// to plain HTTP when a certificate is not trusted, HTTP_PROXY / HTTPS_PROXY / NO_PROXY, and --insecure-registry.
import { copyFile, mkdir, readFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { isLoopbackHost } from "../src/oci/name/index.js";
import { allowsPlainHttp, bypassesProxy, parseInsecureList, parseNoProxy } from "../src/oci/transport/index.js";
import { dockerV01, fakeGguf } from "./helpers/artifacts.js";
import { cliEnv, describeRun, lines, runCli } from "./helpers/cli.js";
import { startForwardProxy, type ForwardProxy } from "./helpers/forward-proxy.js";
import { pushArtifact } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { makeClientCert, makeSelfSignedCert, type ClientCert, type SelfSignedCert } from "./helpers/tls.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const gguf = fakeGguf(200_000, 301);
/** A registry name that is not loopback: only the forward proxy resolves it (to 127.0.0.1). */
const PROXIED_NAME = "registry.proxied.test";

let plain: RegistryHandle;
let secure: RegistryHandle;
let cert: SelfSignedCert;
let workDir: string;
let dirCount = 0;

async function freshDirs(): Promise<{ home: string; cache: string }> {
  const base = join(workDir, `run-${++dirCount}`);
  await mkdir(join(base, "home"), { recursive: true });
  return { home: join(base, "home"), cache: join(base, "cache") };
}

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-cli-network");
  cert = await makeSelfSignedCert("127.0.0.1", [PROXIED_NAME]);
  plain = await startRegistry();
  await pushArtifact({ registryUrl: plain.url, repository: "ai/net" }, "v1", dockerV01({ ggufs: [gguf] }));
  // The same storage served over HTTPS (pushing there would need the test process to trust the certificate).
  secure = await startRegistry({ rootDir: plain.rootDir, tls: { certPath: cert.certPath, keyPath: cert.keyPath } });
});

afterAll(async () => {
  await secure?.stop();
  await plain?.stop();
  await cert?.remove();
  await removeDir(workDir);
});

async function expectModel(stdout: string): Promise<void> {
  expect((await readFile(lines(stdout).at(-1)!)).equals(gguf)).toBe(true);
}

describe("HTTPS with a self-signed certificate", () => {
  test("is refused with a certificate error, not retried over plain HTTP", async () => {
    const { home, cache } = await freshDirs();
    const run = await runCli(["pull", "-v", `${secure.host}/ai/net:v1`], { env: cliEnv(home, cache) });
    expect(run.exitCode, describeRun(run)).toBe(1);
    const errors = lines(run.stderr).filter((l) => !l.startsWith("debug: "));
    expect(errors, run.stderr).toHaveLength(1);
    expect(errors[0]).toMatch(/^error: .*certificate/i);
    expect(errors[0]).toContain(secure.host);
    expect(errors[0]).toContain("NODE_EXTRA_CA_CERTS");
    // A TLS server that fails verification is still TLS: going to http:// would be a silent downgrade.
    expect(run.stderr).not.toContain(`http://${secure.host}`);
  });

  test("works with NODE_EXTRA_CA_CERTS naming the certificate", async () => {
    const { home, cache } = await freshDirs();
    const run = await runCli(["pull", "-v", `${secure.host}/ai/net:v1`], { env: cliEnv(home, cache, { NODE_EXTRA_CA_CERTS: cert.certPath }) });
    expect(run.exitCode, describeRun(run)).toBe(0);
    await expectModel(run.stdout);
    expect(run.stderr).toContain(`GET https://${secure.host}/v2/ai/net/manifests/v1 -> 200`);
    expect(run.stderr).not.toContain(`http://${secure.host}`);
  });
});

describe("proxies from the environment", () => {
  let proxy: ForwardProxy;
  // The registries as a non-loopback name reaches them (through the proxy, which alone resolves the name).
  const named = (handle: RegistryHandle) => `${PROXIED_NAME}:${handle.host.slice(handle.host.lastIndexOf(":") + 1)}`;

  beforeAll(async () => {
    proxy = await startForwardProxy({ resolve: { [PROXIED_NAME]: "127.0.0.1" } });
  });
  afterAll(() => proxy?.stop());

  const proxiedTo = (host: string) => proxy.requests.filter((r) => r.target === host || r.target.startsWith(`http://${host}/`));

  test("the forward proxy also relays absolute-URI requests (self-check of the helper)", async () => {
    proxy.requests.splice(0);
    const status = await new Promise<number>((resolve, reject) => {
      const proxyUrl = new URL(proxy.url);
      const req = httpRequest({ host: proxyUrl.hostname, port: proxyUrl.port, path: `http://${named(plain)}/v2/`, method: "GET" }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("error", reject);
      req.end();
    });
    expect(status).toBe(200);
    expect(proxy.requests).toEqual([expect.objectContaining({ method: "GET", target: `http://${named(plain)}/v2/` })]);
  });

  test("HTTP_PROXY carries the pull of a plain-HTTP registry", async () => {
    const { home, cache } = await freshDirs();
    proxy.requests.splice(0);
    const run = await runCli(["pull", "--insecure-registry", PROXIED_NAME, `${named(plain)}/ai/net:v1`], {
      env: cliEnv(home, cache, { HTTP_PROXY: proxy.url }),
    });
    expect(run.exitCode, describeRun(run)).toBe(0);
    await expectModel(run.stdout);
    expect(proxiedTo(named(plain)).length).toBeGreaterThan(0);
  });

  test("HTTPS_PROXY carries an HTTPS pull as a CONNECT tunnel", async () => {
    const { home, cache } = await freshDirs();
    proxy.requests.splice(0);
    const env = cliEnv(home, cache, { HTTPS_PROXY: proxy.url, NODE_EXTRA_CA_CERTS: cert.certPath });
    const run = await runCli(["pull", `${named(secure)}/ai/net:v1`], { env });
    expect(run.exitCode, describeRun(run)).toBe(0);
    await expectModel(run.stdout);
    expect(proxy.requests.filter((r) => r.method === "CONNECT" && r.target === named(secure)).length).toBeGreaterThan(0);
  });

  test("a loopback registry never goes through the proxy, as with Docker and skopeo", async () => {
    const { home, cache } = await freshDirs();
    proxy.requests.splice(0);
    const env = cliEnv(home, cache, { HTTP_PROXY: proxy.url, HTTPS_PROXY: proxy.url });
    const run = await runCli(["pull", `${plain.host}/ai/net:v1`], { env });
    expect(run.exitCode, describeRun(run)).toBe(0);
    await expectModel(run.stdout);
    expect(proxy.requests).toEqual([]);
  });

  test("NO_PROXY names, suffixes and CIDR ranges bypass the proxy", async () => {
    const { home, cache } = await freshDirs();
    proxy.requests.splice(0);
    // Bypassed, the name is resolved locally, where it does not exist: the pull fails without touching the proxy.
    const env = cliEnv(home, cache, { HTTP_PROXY: proxy.url, HTTPS_PROXY: proxy.url, NO_PROXY: "10.0.0.0/8, .proxied.test" });
    const run = await runCli(["pull", "--insecure-registry", PROXIED_NAME, `${named(plain)}/ai/net:v1`], { env });
    expect(run.exitCode, describeRun(run)).toBe(1);
    expect(lines(run.stderr).filter((l) => l.startsWith("error:")).join("\n")).toMatch(/cannot reach registry\.proxied\.test/);
    expect(proxy.requests).toEqual([]);

    const rules = parseNoProxy("10.0.0.0/8, fd00::/8, 192.168.1.7, example.com, other.example:8443, [fe80::1]");
    const bypass = (url: string) => bypassesProxy(new URL(url), rules);
    expect(bypass("https://10.20.30.40:5000/")).toBe(true);
    expect(bypass("https://11.0.0.1/")).toBe(false);
    expect(bypass("https://[fd12::5]:5000/")).toBe(true);
    expect(bypass("https://[fe80::1]/")).toBe(true);
    expect(bypass("https://[fe80::2]/")).toBe(false);
    expect(bypass("https://192.168.1.7/")).toBe(true);
    expect(bypass("https://registry.example.com/")).toBe(true);
    expect(bypass("https://notexample.com/")).toBe(false);
    expect(bypass("https://other.example:8443/")).toBe(true);
    expect(bypass("https://other.example/")).toBe(false);
    expect(bypass("http://localhost:5000/")).toBe(true);
    expect(bypass("http://127.8.9.10/")).toBe(true);
    expect(bypassesProxy(new URL("https://anything.example/"), parseNoProxy("*"))).toBe(true);
  });
});

describe("per-registry certificates in certs.d", () => {
  let client: ClientCert;
  let mtls: RegistryHandle;

  beforeAll(async () => {
    client = await makeClientCert();
    mtls = await startRegistry({
      rootDir: plain.rootDir,
      tls: { certPath: cert.certPath, keyPath: cert.keyPath, clientCaPath: client.caPath, probeClient: { certPath: client.certPath, keyPath: client.keyPath } },
    });
  });
  afterAll(async () => {
    await mtls?.stop();
    await client?.remove();
  });

  async function certsDir(home: string, files: Record<string, string>): Promise<void> {
    const dir = join(home, ".config", "containers", "certs.d", mtls.host);
    await mkdir(dir, { recursive: true });
    for (const [name, from] of Object.entries(files)) await copyFile(from, join(dir, name));
  }

  test("a registry demanding a client certificate is pulled from with the CA and client pair from certs.d", async () => {
    const { home, cache } = await freshDirs();
    await certsDir(home, { "ca.crt": cert.certPath, "client.cert": client.certPath, "client.key": client.keyPath });
    const run = await runCli(["pull", "-v", `${mtls.host}/ai/net:v1`], { env: cliEnv(home, cache) });
    expect(run.exitCode, describeRun(run)).toBe(0);
    await expectModel(run.stdout);
    expect(run.stderr).toMatch(/TLS for 127\.0\.0\.1:\d+ from .*certs\.d.* \(client certificate\)/);
  });

  test("without the client pair the registry refuses the connection, and the CA alone still verifies it", async () => {
    const { home, cache } = await freshDirs();
    await certsDir(home, { "ca.crt": cert.certPath });
    const run = await runCli(["pull", `${mtls.host}/ai/net:v1`], { env: cliEnv(home, cache) });
    expect(run.exitCode, describeRun(run)).toBe(1);
    const errors = lines(run.stderr).filter((l) => l.startsWith("error:"));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toContain(mtls.host);
    expect(errors[0]).not.toMatch(/certificate of .* is not trusted/);
  });

  test("a .cert without its .key is a clear error", async () => {
    const { home, cache } = await freshDirs();
    await certsDir(home, { "ca.crt": cert.certPath, "client.cert": client.certPath });
    const run = await runCli(["pull", `${mtls.host}/ai/net:v1`], { env: cliEnv(home, cache) });
    expect(run.exitCode, describeRun(run)).toBe(1);
    expect(lines(run.stderr).filter((l) => l.startsWith("error:"))[0]).toMatch(/client certificate .*client\.cert has no key beside it/);
  });
});

describe("--insecure-registry", () => {
  test("is accepted (repeatable) and a loopback registry pulls as without it", async () => {
    const { home, cache } = await freshDirs();
    const run = await runCli(
      ["pull", "--insecure-registry", plain.host, "--insecure-registry", "other.example:5000", `${plain.host}/ai/net:v1`],
      { env: cliEnv(home, cache) },
    );
    expect(run.exitCode, describeRun(run)).toBe(0);
    await expectModel(run.stdout);
  });

  test("a flag without its value is a usage error", async () => {
    const { home, cache } = await freshDirs();
    const run = await runCli(["pull", `${plain.host}/ai/net:v1`, "--insecure-registry"], { env: cliEnv(home, cache) });
    expect(run.exitCode, describeRun(run)).toBe(2);
    expect(lines(run.stderr)).toHaveLength(1);
  });

  test("allowsPlainHttp: loopback always; other hosts only when listed, by host or host:port", () => {
    expect(allowsPlainHttp("127.0.0.1:5000", [])).toBe(true);
    expect(allowsPlainHttp("localhost:5000", [])).toBe(true);
    expect(allowsPlainHttp("[::1]:5000", [])).toBe(true);
    expect(allowsPlainHttp("registry.example.com", [])).toBe(false);
    expect(allowsPlainHttp("registry.example.com:5000", [])).toBe(false);
    expect(allowsPlainHttp("10.0.0.5:5000", [])).toBe(false);
    expect(allowsPlainHttp("127.0.0.1.example.com", [])).toBe(false);

    expect(allowsPlainHttp("registry.example.com:5000", ["registry.example.com:5000"])).toBe(true);
    expect(allowsPlainHttp("registry.example.com:5001", ["registry.example.com:5000"])).toBe(false);
    expect(allowsPlainHttp("registry.example.com", ["registry.example.com:5000"])).toBe(false);
    expect(allowsPlainHttp("registry.example.com:5001", ["registry.example.com"])).toBe(true);
    expect(allowsPlainHttp("Registry.Example.COM", ["registry.example.com"])).toBe(true);
    expect(allowsPlainHttp("evil-registry.example.com", ["registry.example.com"])).toBe(false);
    expect(allowsPlainHttp("registry.example.com.evil.net", ["registry.example.com"])).toBe(false);
    expect(allowsPlainHttp("10.0.0.5:5000", ["10.0.0.5"])).toBe(true);
    expect(allowsPlainHttp("[fd00::1]:5000", ["[fd00::1]"])).toBe(true);
    expect(allowsPlainHttp("[fd00::1]:5000", ["[fd00::1]:5000"])).toBe(true);
    expect(allowsPlainHttp("[fd00::2]:5000", ["[fd00::1]"])).toBe(false);

    // What --insecure-registry / LLAMA_OCI_INSECURE_REGISTRIES values become
    const listed = parseInsecureList(" http://Registry.Example.com:5000/ , other.example ,, ");
    expect(listed).toEqual(["registry.example.com:5000", "other.example"]);
    expect(allowsPlainHttp("registry.example.com:5000", listed)).toBe(true);
    expect(allowsPlainHttp("other.example:443", listed)).toBe(true);
    expect(isLoopbackHost("127.255.0.1:80")).toBe(true);
    expect(isLoopbackHost("128.0.0.1")).toBe(false);
  });
});
