// The `llama-oci pull` command as a user runs it: a separate process (bin/llama-oci.js over the built dist/),
// against a real docker-registry, with HOME and LLAMA_CACHE in temp dirs. Checks what reaches stdout and stderr,
// exit codes, resuming after a SIGKILL, --verbose traces without secrets, and the progress display on a terminal.
import { spawn, type ChildProcess } from "node:child_process";
import { readdir, readFile, stat, mkdir, writeFile } from "node:fs/promises";
import { isAbsolute, join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { dockerV01, fakeGguf } from "./helpers/artifacts.js";
import { cliEnv, CLI_PATH, describeRun, lines, ROOT_DIR, runCli, spawnCli } from "./helpers/cli.js";
import { startFaultProxy } from "./helpers/fault-proxy.js";
import { digestOf, pushArtifact, type PushTarget } from "./helpers/push.js";
import { hasScript, runInPty } from "./helpers/pty.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";
import { startTokenServer, type TokenServer } from "./helpers/token-server.js";

const MB = 1024 * 1024;
const ESCAPE = "\x1b";

let registry: RegistryHandle;
let workDir: string;
let dirCount = 0;

/** A fresh HOME and cache for one child, so no test sees another's cache or credentials. */
async function freshDirs(): Promise<{ home: string; cache: string }> {
  const base = join(workDir, `run-${++dirCount}`);
  const home = join(base, "home");
  const cache = join(base, "cache");
  await mkdir(home, { recursive: true });
  return { home, cache };
}

const target = (repository: string, registryUrl = registry.url): PushTarget => ({ registryUrl, repository });
const hexOf = (digest: string) => digest.slice("sha256:".length);
const blobsDir = (cache: string) => join(cache, "oci", "blobs", "sha256");

beforeAll(async () => {
  registry = await startRegistry();
  workDir = await makeTempDir("llama-oci-cli");
});

afterAll(async () => {
  await registry?.stop();
  await removeDir(workDir);
});

describe("pull output", () => {
  const gguf = fakeGguf(600_000, 101);
  const license = Buffer.from("MIT license text");
  let ref: string;
  let ggufDigest: string;

  beforeAll(async () => {
    await pushArtifact(target("ai/cli-model"), "Q4_0", dockerV01({ ggufs: [gguf], licenses: ["MIT license text"] }));
    ref = `${registry.host}/ai/cli-model:Q4_0`;
    ggufDigest = digestOf(gguf);
  });

  test("stdout's last line is the absolute path of the GGUF; progress goes to stderr as plain lines per layer", async () => {
    const { home, cache } = await freshDirs();
    const run = await runCli(["pull", ref], { env: cliEnv(home, cache) });
    expect(run.exitCode, describeRun(run)).toBe(0);

    const out = lines(run.stdout);
    const path = out.at(-1)!;
    expect(isAbsolute(path)).toBe(true);
    expect(path.startsWith(join(cache, "oci"))).toBe(true);
    expect(path.endsWith(".gguf")).toBe(true);
    expect((await readFile(path)).equals(gguf)).toBe(true);
    // Nothing but the path on stdout, so `$(llama-oci pull ...)` works.
    expect(out).toEqual([path]);

    expect(run.stderr).not.toContain(ESCAPE);
    expect(run.stderr).not.toContain("\r");
    const err = lines(run.stderr);
    for (const digest of [ggufDigest, digestOf(license)]) {
      const short = hexOf(digest).slice(0, 12);
      expect(err.filter((l) => l.startsWith(`${short}: Downloading `)), run.stderr).toHaveLength(1);
      expect(err.filter((l) => l === `${short}: Download complete`), run.stderr).toHaveLength(1);
    }
    expect(run.stderr).not.toContain(path);
  });

  test("--json prints the whole result; a second run reports fromCache", async () => {
    const { home, cache } = await freshDirs();
    const first = await runCli(["pull", ref, "--json"], { env: cliEnv(home, cache) });
    expect(first.exitCode, describeRun(first)).toBe(0);
    const result = JSON.parse(first.stdout) as {
      path: string;
      digest: string;
      size: number;
      reference: string;
      fromCache: boolean;
      files: { kind: string; path: string; digest: string; size: number }[];
    };
    expect(result.reference).toBe(ref);
    expect(result.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(result.size).toBe(gguf.length + license.length);
    expect(result.fromCache).toBe(false);
    expect((await readFile(result.path)).equals(gguf)).toBe(true);
    expect(result.files.map((f) => [f.kind, f.digest, f.size]).sort()).toEqual(
      [["gguf", ggufDigest, gguf.length], ["license", digestOf(license), license.length]].sort(),
    );
    for (const file of result.files) expect((await stat(file.path)).size).toBe(file.size);

    const second = await runCli(["pull", ref, "--json"], { env: cliEnv(home, cache) });
    expect(second.exitCode, describeRun(second)).toBe(0);
    const again = JSON.parse(second.stdout) as typeof result;
    expect(again.fromCache).toBe(true);
    expect(again.path).toBe(result.path);
    expect(again.digest).toBe(result.digest);
  });

  test("-q prints nothing on stderr, and --cache-dir overrides LLAMA_CACHE", async () => {
    const { home, cache } = await freshDirs();
    const override = join(home, "elsewhere");
    const run = await runCli(["pull", "-q", "--cache-dir", override, ref], { env: cliEnv(home, cache) });
    expect(run.exitCode, describeRun(run)).toBe(0);
    expect(run.stderr).toBe("");
    const path = lines(run.stdout).at(-1)!;
    expect(path.startsWith(join(override, "oci"))).toBe(true);
    expect((await readFile(path)).equals(gguf)).toBe(true);
    await expect(stat(cache)).rejects.toMatchObject({ code: "ENOENT" });
  });
});

describe("errors", () => {
  beforeAll(async () => {
    await pushArtifact(target("ai/errors"), "exists", dockerV01({ ggufs: [fakeGguf(10_000, 102)] }));
  });

  /** One line, `error: ...`, as the CLI promises for every failure. */
  function expectOneErrorLine(stderr: string): string {
    const err = lines(stderr);
    expect(err, stderr).toHaveLength(1);
    expect(err[0]).toMatch(/^error: /);
    return err[0]!;
  }

  test("an unknown tag fails with one error line naming the tag and a hint", async () => {
    const { home, cache } = await freshDirs();
    const run = await runCli(["pull", `${registry.host}/ai/errors:missing`], { env: cliEnv(home, cache) });
    expect(run.exitCode, describeRun(run)).toBe(1);
    expect(run.stdout).toBe("");
    const line = expectOneErrorLine(run.stderr);
    expect(line).toContain("ai/errors:missing");
    expect(line).toMatch(/not found|unknown/i);
    expect(line).toMatch(/\(.+\)$/); // the hint
  });

  test("an invalid reference fails with one error line before any network use", async () => {
    const { home, cache } = await freshDirs();
    const run = await runCli(["pull", "Foo/Bar"], { env: cliEnv(home, cache) });
    expect([1, 2], describeRun(run)).toContain(run.exitCode);
    expect(run.stdout).toBe("");
    const line = expectOneErrorLine(run.stderr);
    expect(line).toContain("Foo/Bar");
    expect(line).toMatch(/lowercase|invalid/i);
  });

  test("an unknown command, an unknown flag or a missing reference is a usage error (exit 2)", async () => {
    const { home, cache } = await freshDirs();
    const env = cliEnv(home, cache);
    const command = await runCli(["fetch", "ai/x"], { env });
    expect(command.exitCode, describeRun(command)).toBe(2);
    expect(expectOneErrorLine(command.stderr)).toMatch(/unknown command 'fetch'.*--help/);

    const flag = await runCli(["pull", "--frobnicate", `${registry.host}/ai/errors:exists`], { env });
    expect(flag.exitCode, describeRun(flag)).toBe(2);
    expect(expectOneErrorLine(flag.stderr)).toMatch(/--frobnicate.*llama-oci pull --help/);

    const none = await runCli(["pull"], { env });
    expect(none.exitCode, describeRun(none)).toBe(2);
    expectOneErrorLine(none.stderr);

    const bare = await runCli([], { env });
    expect(bare.exitCode).toBe(2);
    expect(bare.stdout).toMatch(/^Usage: llama-oci/);
  });

  test("--offline with nothing cached says so and touches no network", async () => {
    const { home, cache } = await freshDirs();
    const proxy = await startFaultProxy(registry.url);
    try {
      const run = await runCli(["pull", "--offline", `${proxy.host}/ai/errors:exists`], { env: cliEnv(home, cache) });
      expect(run.exitCode, describeRun(run)).toBe(1);
      const line = expectOneErrorLine(run.stderr);
      expect(line).toMatch(/not in the cache/);
      expect(line).toMatch(/offline/);
      expect(proxy.requests).toHaveLength(0);
    } finally {
      await proxy.stop();
    }
  });
});

describe("SIGKILL mid-download", () => {
  test("a re-run resumes from the partial file with a Range request, past the dead process's lock", async () => {
    const size = 30 * MB;
    const stallAt = 10 * MB;
    const gguf = fakeGguf(size, 103);
    const digest = digestOf(gguf);
    await pushArtifact(target("ai/killed"), "v1", dockerV01({ ggufs: [gguf] }));
    const proxy = await startFaultProxy(registry.url);
    const blobPath = `/v2/ai/killed/blobs/${digest}`;
    const { home, cache } = await freshDirs();
    const env = cliEnv(home, cache);
    const partial = join(blobsDir(cache), `${hexOf(digest)}.tmp`);
    const lockPath = join(blobsDir(cache), `${hexOf(digest)}.lock`);
    try {
      proxy.addFault({ kind: "stall", afterBytes: stallAt, ms: 60_000, match: (r) => r.path === blobPath });
      const first = spawnCli(["pull", `${proxy.host}/ai/killed:v1`], { env, timeoutMs: 30_000 });
      // Wait until the proxy has sent the bytes before the stall and they all reached the partial file.
      await waitFor(async () => (proxy.bytesByPath.get(blobPath) ?? 0) >= stallAt && (await sizeOf(partial)) >= stallAt, 20_000, () =>
        `proxy sent ${proxy.bytesByPath.get(blobPath) ?? 0} bytes; child output: ${JSON.stringify(first.output())}`,
      );
      first.child.kill("SIGKILL");
      const killed = await first.result;
      expect(killed.signal).toBe("SIGKILL");
      const kept = await sizeOf(partial);
      expect(kept).toBeGreaterThanOrEqual(stallAt);
      expect(kept).toBeLessThan(size);
      // The dead process's lock is still there, naming it.
      expect(JSON.parse(await readFile(lockPath, "utf8"))).toMatchObject({ pid: first.pid });

      proxy.resetStats();
      const second = await runCli(["pull", `${proxy.host}/ai/killed:v1`], { env, timeoutMs: 30_000 });
      expect(second.exitCode, describeRun(second)).toBe(0);
      // Not held up until the lock goes stale (30 s): a lock of a dead pid is taken over at once.
      expect(second.durationMs).toBeLessThan(15_000);
      expect((await readFile(lines(second.stdout).at(-1)!)).equals(gguf)).toBe(true);

      const blobRequests = proxy.requests.filter((r) => r.method === "GET" && r.path === blobPath);
      expect(blobRequests.length).toBeGreaterThan(0);
      expect(blobRequests[0]!.range).toBe(`bytes=${kept}-${size - 1}`);
      const resent = proxy.bytesByPath.get(blobPath) ?? 0;
      expect(resent).toBe(size - kept);
      expect(resent).toBeLessThan(size * 0.75);
      expect(lines(second.stderr).some((l) => l.startsWith(`${hexOf(digest).slice(0, 12)}: Resuming `))).toBe(true);

      const left = await readdir(blobsDir(cache));
      const lockLeft = left.includes(`${hexOf(digest)}.lock`) ? await readFile(lockPath, "utf8") : "";
      expect(left.filter((name) => /\.(tmp|lock|digest)$/.test(name)), `${left.join(", ")} lock=${lockLeft} first=${first.pid} stderr=${second.stderr}`).toEqual([]);
    } finally {
      await proxy.stop();
    }
  });
});

describe("killed after the blob was in place, before it cleaned up", () => {
  const LOCK_MODULE = pathToFileURL(join(ROOT_DIR, "dist", "esm", "oci", "store", "lock.js")).href;

  /** A real process holding the lock at path (the library's own lock code); resolves once it holds it. */
  async function holdLock(path: string): Promise<ChildProcess> {
    const script = `const { acquireLock } = await import(${JSON.stringify(LOCK_MODULE)}); await acquireLock(${JSON.stringify(path)}); console.log("held"); setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (chunk: Buffer) => {
        if (chunk.toString().includes("held")) resolve();
      });
      child.once("exit", (code) => reject(new Error(`lock holder exited (${code ?? "by a signal"}) before holding ${path}`)));
    });
    return child;
  }

  test("a pull that shares a blob removes a dead writer's lock and .digest beside it, and leaves a live holder's lock alone", async () => {
    // v1 and v2 share the GGUF and the license; v2 adds a chat template, so pulling it goes through the shared blobs.
    const gguf = fakeGguf(200_000, 107);
    const license = "shared license text";
    await pushArtifact(target("ai/tidy"), "v1", dockerV01({ ggufs: [gguf], licenses: [license] }));
    await pushArtifact(target("ai/tidy"), "v2", dockerV01({ ggufs: [gguf], licenses: [license], chatTemplate: "{{ messages }}" }));
    const { home, cache } = await freshDirs();
    const env = cliEnv(home, cache);
    const first = await runCli(["pull", `${registry.host}/ai/tidy:v1`], { env });
    expect(first.exitCode, describeRun(first)).toBe(0);

    // The GGUF's writer died holding its lock, its .digest still there; the license's lock is held by a live process.
    const ggufHex = hexOf(digestOf(gguf));
    const licenseHex = hexOf(digestOf(Buffer.from(license)));
    const deadLock = join(blobsDir(cache), `${ggufHex}.lock`);
    const dead = await holdLock(deadLock);
    dead.kill("SIGKILL");
    await new Promise((resolve) => dead.once("exit", resolve));
    await writeFile(join(blobsDir(cache), `${ggufHex}.digest`), `${digestOf(gguf)}\n`);
    const liveLock = join(blobsDir(cache), `${licenseHex}.lock`);
    const live = await holdLock(liveLock);
    try {
      const second = await runCli(["pull", `${registry.host}/ai/tidy:v2`], { env, timeoutMs: 30_000 });
      expect(second.exitCode, describeRun(second)).toBe(0);
      expect(second.durationMs).toBeLessThan(15_000);
      expect((await readFile(lines(second.stdout).at(-1)!)).equals(gguf)).toBe(true);
      const left = await readdir(blobsDir(cache));
      expect(left.filter((name) => name.startsWith(ggufHex))).toEqual([ggufHex]);
      expect(left.filter((name) => /\.takeover-|\.new$/.test(name))).toEqual([]);
      expect(JSON.parse(await readFile(liveLock, "utf8"))).toMatchObject({ pid: live.pid });
    } finally {
      live.kill("SIGKILL");
    }
  });
});

describe("--verbose", () => {
  const USER = "alice";
  const PASSWORD = "s3cret-Pa55word-xyz";
  let authRegistry: RegistryHandle;
  let ref: string;

  beforeAll(async () => {
    authRegistry = await startRegistry({ auth: { kind: "htpasswd", users: { [USER]: PASSWORD } } });
    await pushArtifact(
      { registryUrl: authRegistry.url, repository: "team/private", auth: { username: USER, password: PASSWORD } },
      "v1",
      dockerV01({ ggufs: [fakeGguf(50_000, 104)] }),
    );
    ref = `${authRegistry.host}/team/private:v1`;
  });

  afterAll(() => authRegistry?.stop());

  async function homeWithLogin(): Promise<{ home: string; cache: string }> {
    const dirs = await freshDirs();
    const auth = Buffer.from(`${USER}:${PASSWORD}`).toString("base64");
    await mkdir(join(dirs.home, ".docker"), { recursive: true });
    await writeFile(join(dirs.home, ".docker", "config.json"), JSON.stringify({ auths: { [authRegistry.host]: { auth } } }));
    return dirs;
  }

  function expectTracesWithoutSecrets(stderr: string): void {
    const debug = lines(stderr).filter((l) => l.startsWith("debug: "));
    // method, URL, status and auth scheme of each exchange
    expect(debug.some((l) => new RegExp(`GET https?://${authRegistry.host}/v2/ -> 401`).test(l)), stderr).toBe(true);
    expect(debug.some((l) => /GET https?:\/\/\S+\/v2\/team\/private\/manifests\/v1 -> 200 \(auth: basic/.test(l)), stderr).toBe(true);
    expect(debug.some((l) => /GET https?:\/\/\S+\/v2\/team\/private\/blobs\/sha256:[0-9a-f]{64} -> 200 \(auth: basic/.test(l)), stderr).toBe(true);
    expect(stderr).not.toContain(PASSWORD);
    expect(stderr).not.toContain(Buffer.from(`${USER}:${PASSWORD}`).toString("base64"));
    expect(stderr).not.toMatch(/authorization:/i);
    // Each trace is one line (the failed https probe of this plain-HTTP registry carries OpenSSL's multi-line text).
    for (const line of lines(stderr)) expect(line).toMatch(/^(debug: |Pulling |[0-9a-f]{12}: )/);
  }

  test("-v traces every HTTP exchange with its auth scheme and never the password", async () => {
    const { home, cache } = await homeWithLogin();
    const run = await runCli(["pull", "-v", ref], { env: cliEnv(home, cache) });
    expect(run.exitCode, describeRun(run)).toBe(0);
    expectTracesWithoutSecrets(run.stderr);
    expect(run.stdout).not.toContain("debug:");
  });

  test("LLAMA_OCI_DEBUG=1 does the same; without either there are no traces", async () => {
    const { home, cache } = await homeWithLogin();
    const traced = await runCli(["pull", ref], { env: cliEnv(home, cache, { LLAMA_OCI_DEBUG: "1" }) });
    expect(traced.exitCode, describeRun(traced)).toBe(0);
    expectTracesWithoutSecrets(traced.stderr);

    const other = await homeWithLogin();
    const quiet = await runCli(["pull", ref], { env: cliEnv(other.home, other.cache) });
    expect(quiet.exitCode, describeRun(quiet)).toBe(0);
    expect(quiet.stderr).not.toContain("debug:");
  });
});

describe("--verbose with a token server", () => {
  const USER = "bob";
  const PASSWORD = "token-flow-Pa55word";
  let tokenServer: TokenServer;
  let tokenRegistry: RegistryHandle;

  beforeAll(async () => {
    tokenServer = await startTokenServer();
    tokenServer.setUser(USER, PASSWORD);
    tokenServer.grant(USER, "*", ["*"]);
    tokenRegistry = await startRegistry({ auth: { kind: "token", tokenServer } });
    await pushArtifact(
      { registryUrl: tokenRegistry.url, repository: "team/bearer", auth: { username: USER, password: PASSWORD } },
      "v1",
      dockerV01({ ggufs: [fakeGguf(40_000, 107)] }),
    );
  });

  afterAll(async () => {
    await tokenRegistry?.stop();
    await tokenServer?.stop();
  });

  test("traces show the bearer scheme and the token request, never the token or the password", async () => {
    const { home, cache } = await freshDirs();
    await mkdir(join(home, ".docker"), { recursive: true });
    const auth = Buffer.from(`${USER}:${PASSWORD}`).toString("base64");
    await writeFile(join(home, ".docker", "config.json"), JSON.stringify({ auths: { [tokenRegistry.host]: { auth } } }));
    const run = await runCli(["pull", "--verbose", `${tokenRegistry.host}/team/bearer:v1`], { env: cliEnv(home, cache) });
    expect(run.exitCode, describeRun(run)).toBe(0);
    expect(tokenServer.requests.length).toBeGreaterThan(0);
    const debug = lines(run.stderr).filter((l) => l.startsWith("debug: "));
    expect(debug.some((l) => /\/v2\/team\/bearer\/manifests\/v1 -> 200 \(auth: bearer/.test(l)), run.stderr).toBe(true);
    expect(debug.some((l) => l.includes(new URL(tokenServer.realm).host)), run.stderr).toBe(true);
    expect(run.stderr).not.toMatch(/eyJ[\w-]+\.eyJ/); // a JWT
    expect(run.stderr).not.toContain(PASSWORD);
    expect(run.stderr).not.toContain(auth);
  });
});

describe.skipIf(!hasScript())("terminal progress", () => {
  test("a pseudo-terminal gets docker-style progress lines redrawn in place", async () => {
    const size = 4 * MB;
    const gguf = fakeGguf(size, 105);
    const digest = digestOf(gguf);
    await pushArtifact(target("ai/tty"), "v1", dockerV01({ ggufs: [gguf] }));
    const proxy = await startFaultProxy(registry.url);
    try {
      const blobPath = `/v2/ai/tty/blobs/${digest}`;
      proxy.addFault({ kind: "stall", afterBytes: size / 2, ms: 300, match: (r) => r.path === blobPath });
      const { home, cache } = await freshDirs();
      const run = await runInPty([process.execPath, CLI_PATH, "pull", `${proxy.host}/ai/tty:v1`], {
        env: cliEnv(home, cache, { TERM: "xterm" }),
        timeoutMs: 20_000,
      });
      expect(run.exitCode, run.output).toBe(0);
      expect(run.output).toMatch(
        /[0-9a-f]{12}: Downloading \[[= >]+\] +\d+\.\d% \(\d+\.\d\d MB \/ \d+\.\d\d MB\) \d+\.\d\d MB\/s/,
      );
      expect(run.output).toContain(`${hexOf(digest).slice(0, 12)}: Downloading [`);
      expect(run.output).toMatch(/\x1b\[\d+A/); // cursor up over the block
      expect(run.output).toContain("\x1b[2K"); // erase line
      expect(run.output).toMatch(new RegExp(`${hexOf(digest).slice(0, 12)}: (\\x1b\\[\\d+m)?Download complete`));
      const path = lines(run.output).map((l) => l.trim()).filter(Boolean).at(-1)!;
      expect((await readFile(path)).equals(gguf)).toBe(true);
    } finally {
      await proxy.stop();
    }
  });

  test("with a partial download in the cache it says where it resumes", async () => {
    const size = 3 * MB;
    const gguf = fakeGguf(size, 106);
    const digest = digestOf(gguf);
    await pushArtifact(target("ai/tty-resume"), "v1", dockerV01({ ggufs: [gguf] }));
    const proxy = await startFaultProxy(registry.url);
    try {
      const { home, cache } = await freshDirs();
      await mkdir(blobsDir(cache), { recursive: true });
      const kept = 1_250_000;
      await writeFile(join(blobsDir(cache), `${hexOf(digest)}.tmp`), gguf.subarray(0, kept));
      await writeFile(join(blobsDir(cache), `${hexOf(digest)}.digest`), `${digest}\n`);
      const run = await runInPty([process.execPath, CLI_PATH, "pull", `${proxy.host}/ai/tty-resume:v1`], {
        env: cliEnv(home, cache, { TERM: "xterm" }),
        timeoutMs: 20_000,
      });
      expect(run.exitCode, run.output).toBe(0);
      expect(run.output).toContain(`${hexOf(digest).slice(0, 12)}: Resuming download from 1.25 MB`);
      const blobGets = proxy.requests.filter((r) => r.method === "GET" && r.path.endsWith(`/blobs/${digest}`));
      expect(blobGets.map((r) => r.range)).toEqual([`bytes=${kept}-${size - 1}`]);
      const path = lines(run.output).map((l) => l.trim()).filter(Boolean).at(-1)!;
      expect((await readFile(path)).equals(gguf)).toBe(true);
    } finally {
      await proxy.stop();
    }
  });
});

async function sizeOf(path: string): Promise<number> {
  return stat(path).then((s) => s.size, () => 0);
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, describe: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${describe()}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
