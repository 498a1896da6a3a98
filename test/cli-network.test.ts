// How `llama-oci pull` reaches registries: HTTPS with a private CA (NODE_EXTRA_CA_CERTS) and no silent downgrade
// to plain HTTP when a certificate is not trusted, HTTP_PROXY / HTTPS_PROXY / NO_PROXY, and --insecure-registry.
import { mkdir, readFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { isLoopbackHost } from "../src/oci/name/index.js";
import { allowsPlainHttp, parseInsecureList } from "../src/oci/transport/index.js";
import { dockerV01, fakeGguf } from "./helpers/artifacts.js";
import { cliEnv, describeRun, lines, runCli } from "./helpers/cli.js";
import { startForwardProxy, type ForwardProxy } from "./helpers/forward-proxy.js";
import { pushArtifact } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { makeSelfSignedCert, type SelfSignedCert } from "./helpers/tls.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const gguf = fakeGguf(200_000, 301);

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
  cert = await makeSelfSignedCert();
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

  beforeAll(async () => {
    proxy = await startForwardProxy();
  });
  afterAll(() => proxy?.stop());

  const proxiedTo = (host: string) => proxy.requests.filter((r) => r.target === host || r.target.startsWith(`http://${host}/`));

  test("the forward proxy also relays absolute-URI requests (self-check of the helper)", async () => {
    proxy.requests.splice(0);
    const status = await new Promise<number>((resolve, reject) => {
      const proxyUrl = new URL(proxy.url);
      const req = httpRequest({ host: proxyUrl.hostname, port: proxyUrl.port, path: `${plain.url}/v2/`, method: "GET" }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("error", reject);
      req.end();
    });
    expect(status).toBe(200);
    expect(proxy.requests).toEqual([expect.objectContaining({ method: "GET", target: `${plain.url}/v2/` })]);
  });

  test("HTTP_PROXY carries the pull of a plain-HTTP registry", async () => {
    const { home, cache } = await freshDirs();
    proxy.requests.splice(0);
    const run = await runCli(["pull", `${plain.host}/ai/net:v1`], { env: cliEnv(home, cache, { HTTP_PROXY: proxy.url }) });
    expect(run.exitCode, describeRun(run)).toBe(0);
    await expectModel(run.stdout);
    expect(proxiedTo(plain.host).length).toBeGreaterThan(0);
  });

  test("HTTPS_PROXY carries an HTTPS pull as a CONNECT tunnel", async () => {
    const { home, cache } = await freshDirs();
    proxy.requests.splice(0);
    const env = cliEnv(home, cache, { HTTPS_PROXY: proxy.url, NODE_EXTRA_CA_CERTS: cert.certPath });
    const run = await runCli(["pull", `${secure.host}/ai/net:v1`], { env });
    expect(run.exitCode, describeRun(run)).toBe(0);
    await expectModel(run.stdout);
    expect(proxy.requests.filter((r) => r.method === "CONNECT" && r.target === secure.host).length).toBeGreaterThan(0);
  });

  test("NO_PROXY=127.0.0.1 bypasses the proxy", async () => {
    const { home, cache } = await freshDirs();
    proxy.requests.splice(0);
    const env = cliEnv(home, cache, { HTTP_PROXY: proxy.url, HTTPS_PROXY: proxy.url, NO_PROXY: "127.0.0.1" });
    const run = await runCli(["pull", `${plain.host}/ai/net:v1`], { env });
    expect(run.exitCode, describeRun(run)).toBe(0);
    await expectModel(run.stdout);
    expect(proxy.requests).toEqual([]);
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
