// Large blobs over several connections, through the fault proxy in front of a real docker-registry (and, for signed
// URLs, a CDN behind the registry's redirect middleware), via the library pull() and the CLI: parts at their offsets,
// connections added while the rate grows on a shaped link, a throttled straggler connection, a server that ignores
// Range, signed URLs that expire, a corrupted part, resume from the per-part state after an abort and after SIGKILL,
// an old single-stream partial, and several files sharing the connection budget. What is checked: the file's bytes,
// what is left in the cache, and what crossed the wire (requests, their ranges and connections, bytes per path).
import { spawnSync } from "node:child_process";
import { closeSync, openSync, writeSync } from "node:fs";
import { mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { LlamaOciError, pull, type ProgressEvent, type PullOptions } from "../src/index.js";
import { dockerV01, fakeGguf } from "./helpers/artifacts.js";
import { startCdn, type Cdn } from "./helpers/cdn.js";
import { cliEnv, spawnCli, runCli } from "./helpers/cli.js";
import { startFaultProxy, type FaultProxy, type FaultRequestInfo, type ProxiedRequest } from "./helpers/fault-proxy.js";
import { digestOf, pushArtifact } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const MiB = 1024 * 1024;
const FAST_RETRY: PullOptions["retry"] = { baseDelayMs: 20, maxDelayMs: 100 };
/** Parts of 1 MiB: blobs from 4 MiB are split (the default, 16 MiB parts and 64 MiB blobs, is for real models). */
const SMALL_PARTS: PullOptions["parallelDownload"] = { minPartBytes: MiB };

let registry: RegistryHandle;
let proxy: FaultProxy;
let workDir: string;
let cacheCount = 0;

interface TestModel {
  repository: string;
  ggufs: Buffer[];
  digests: string[];
  reference: string;
  blobPaths: string[];
}

async function pushModel(repository: string, sizes: number[], seed: number, extra: { mmproj?: number } = {}): Promise<TestModel> {
  const ggufs = sizes.map((size, i) => fakeGguf(size, seed + i));
  const mmproj = extra.mmproj === undefined ? undefined : fakeGguf(extra.mmproj, seed + 100);
  await pushArtifact({ registryUrl: registry.url, repository }, "v1", dockerV01({ ggufs, mmproj }));
  const all = mmproj ? [...ggufs, mmproj] : ggufs;
  const digests = all.map((data) => digestOf(data));
  return {
    repository,
    ggufs: all,
    digests,
    reference: `${proxy.host}/${repository}:v1`,
    blobPaths: digests.map((digest) => `/v2/${repository}/blobs/${digest}`),
  };
}

const newCache = () => join(workDir, `cache-${++cacheCount}`);
const blobsDir = (cacheDir: string) => join(cacheDir, "oci", "blobs", "sha256");
const hexOf = (digest: string) => digest.slice(digest.indexOf(":") + 1);
const partialOf = (cacheDir: string, digest: string, suffix: ".tmp" | ".parts" | ".digest") => join(blobsDir(cacheDir), `${hexOf(digest)}${suffix}`);
const pathOf = (path: string) => new URL(path, "http://x").pathname;
const isBlob = (model: TestModel, index = 0) => (req: FaultRequestInfo) => req.method === "GET" && pathOf(req.path) === model.blobPaths[index];
const blobGets = (model: TestModel, index = 0, on: FaultProxy = proxy): ProxiedRequest[] =>
  on.requests.filter((r) => r.method === "GET" && pathOf(r.path) === model.blobPaths[index]);
const blobBytes = (model: TestModel, index = 0, on: FaultProxy = proxy) => on.bytesByPath.get(model.blobPaths[index]!) ?? 0;

/** The most requests in flight at once among these. */
function maxConcurrent(requests: ProxiedRequest[]): number {
  const edges = requests.flatMap((r) => [
    { at: r.at, delta: 1 },
    { at: r.endAt ?? Number.POSITIVE_INFINITY, delta: -1 },
  ]);
  edges.sort((a, b) => a.at - b.at || a.delta - b.delta);
  let now = 0;
  let most = 0;
  for (const edge of edges) most = Math.max(most, (now += edge.delta));
  return most;
}

function parseRange(range: string | undefined): { start: number; end: number } {
  const match = /^bytes=(\d+)-(\d+)$/.exec(range ?? "");
  if (!match) throw new Error(`expected a closed byte range, got ${JSON.stringify(range)}`);
  return { start: Number(match[1]), end: Number(match[2]) };
}

async function listOrEmpty(dir: string): Promise<string[]> {
  return readdir(dir, { recursive: true }).catch(() => []);
}

async function pullError(reference: string, options: PullOptions): Promise<LlamaOciError> {
  const outcome = await pull(reference, options).then(
    () => undefined,
    (error: unknown) => error,
  );
  if (!(outcome instanceof LlamaOciError)) throw new Error(`expected the pull to fail with a LlamaOciError, got ${String(outcome)}`);
  return outcome;
}

async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The ranges the state file says are on disk. */
async function recordedRanges(cacheDir: string, digest: string): Promise<[number, number][]> {
  const text = await readFile(partialOf(cacheDir, digest, ".parts"), "utf8").catch(() => "");
  try {
    return (JSON.parse(text) as { done: [number, number][] }).done;
  } catch {
    return [];
  }
}

async function recordedBytes(cacheDir: string, digest: string): Promise<number> {
  return (await recordedRanges(cacheDir, digest)).reduce((sum, [a, b]) => sum + b - a, 0);
}

beforeAll(async () => {
  registry = await startRegistry();
  proxy = await startFaultProxy(registry.url);
  workDir = await makeTempDir("llama-oci-parallel");
});

afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
  if (workDir) await removeDir(workDir);
});

beforeEach(() => {
  proxy.clearFaults();
  proxy.resetStats();
  proxy.setShape(undefined);
});

describe("parts", () => {
  test("a large blob is fetched as Range requests at once, written at their offsets, each byte sent once", async () => {
    const size = 24 * MiB + 12_345;
    const model = await pushModel("parallel/basic", [size], 1);
    const cacheDir = newCache();
    const result = await pull(model.reference, { cacheDir, parallelDownload: SMALL_PARTS });

    expect((await readFile(result.path)).equals(model.ggufs[0]!)).toBe(true);
    const gets = blobGets(model);
    expect(gets.length).toBeGreaterThanOrEqual(4);
    const ranges = gets.map((r) => parseRange(r.range)).sort((a, b) => a.start - b.start);
    expect(ranges[0]!.start).toBe(0);
    expect(Math.max(...ranges.map((r) => r.end))).toBe(size - 1);
    expect(maxConcurrent(gets)).toBeGreaterThanOrEqual(4);
    expect(new Set(gets.map((r) => r.connection)).size).toBeGreaterThanOrEqual(4);
    // Loopback: a split part may send a little past the point where another connection took over.
    expect(blobBytes(model)).toBeGreaterThanOrEqual(size);
    expect(blobBytes(model)).toBeLessThan(size * 1.25);
    expect(result.bytesTransferred).toBeGreaterThanOrEqual(size);
    const left = await listOrEmpty(blobsDir(cacheDir));
    expect(left.filter((name) => /\.(tmp|parts|digest|lock)$/.test(name)), left.join(", ")).toEqual([]);
  });

  test("blobs under four parts stay one request, as do all with maxConnections 1", async () => {
    const model = await pushModel("parallel/small", [3 * MiB], 2);
    await pull(model.reference, { cacheDir: newCache(), parallelDownload: SMALL_PARTS });
    expect(blobGets(model).map((r) => r.range)).toEqual([undefined]);

    const large = await pushModel("parallel/one", [12 * MiB], 3);
    proxy.resetStats();
    const result = await pull(large.reference, { cacheDir: newCache(), parallelDownload: { ...SMALL_PARTS, maxConnections: 1 } });
    expect((await readFile(result.path)).equals(large.ggufs[0]!)).toBe(true);
    expect(blobGets(large).map((r) => r.range)).toEqual([undefined]);
  });

  test("LLAMA_OCI_MAX_CONNECTIONS=1 keeps one stream per file; a bad value there or in parallelDownload is one line, nothing moves", async () => {
    const model = await pushModel("parallel/envlimit", [12 * MiB], 4);
    const result = await pull(model.reference, { cacheDir: newCache(), env: { ...process.env, LLAMA_OCI_MAX_CONNECTIONS: "1" }, parallelDownload: SMALL_PARTS });
    expect((await readFile(result.path)).equals(model.ggufs[0]!)).toBe(true);
    expect(blobGets(model).map((r) => r.range)).toEqual([undefined]);

    const home = await makeTempDir("llama-oci-parallel-env");
    for (const bad of ["0", "65", "4.5", "many"]) {
      proxy.resetStats();
      const run = await runCli(["pull", model.reference], { env: cliEnv(home, newCache(), { LLAMA_OCI_MAX_CONNECTIONS: bad }), timeoutMs: 30_000 });
      expect(run.exitCode, run.stderr).toBe(1);
      const lines = run.stderr.trim().split("\n");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toBe(
        `error: LLAMA_OCI_MAX_CONNECTIONS must be a whole number from 1 to 64, got "${bad}" (unset it for the default (16), or set 1 for one connection per file)`,
      );
      expect(blobGets(model)).toEqual([]);
    }
    await removeDir(home);

    for (const [name, value] of [
      ["maxConnections", 0],
      ["initialConnections", 1.5],
      ["minPartBytes", 1024],
    ] as const) {
      proxy.resetStats();
      const error = await pullError(model.reference, { cacheDir: newCache(), parallelDownload: { [name]: value } });
      expect(error.code).toBe("INVALID_ARGUMENT");
      expect(error.message).toMatch(new RegExp(`^parallelDownload\\.${name} must be a whole number from \\d+ to \\d+, got ${value}$`));
      expect(proxy.requests).toEqual([]);
    }
  });
});

describe("shaped links", () => {
  test("connections are added while the rate grows: 2 MB/s per connection and 30 ms latency fill a 16 MB/s link", async () => {
    const size = 40 * MiB;
    const model = await pushModel("parallel/shaped", [size], 10);
    proxy.setShape({ perConnectionBytesPerSecond: 2_000_000, aggregateBytesPerSecond: 16_000_000, latencyMs: 30 });
    const started = Date.now();
    const result = await pull(model.reference, { cacheDir: newCache(), parallelDownload: { minPartBytes: MiB, initialConnections: 2, maxConnections: 12 } });
    const seconds = (Date.now() - started) / 1000;

    expect((await readFile(result.path)).equals(model.ggufs[0]!)).toBe(true);
    const gets = blobGets(model);
    // Started with 2, doubled while the aggregate rate grew: 2 -> 4 -> 8, then 8 -> (up to) 12 gained little.
    expect(maxConcurrent(gets)).toBeGreaterThanOrEqual(8);
    expect(maxConcurrent(gets)).toBeLessThanOrEqual(12);
    // 40 MiB at the 16 MB/s cap is 2.6 s; the ramp costs about a second.
    expect(seconds).toBeLessThan(5);
    expect(blobBytes(model)).toBeLessThan(size * 1.05);
  });

  test("a link the first connections fill is not split for nothing: those added stop after their part", async () => {
    const size = 24 * MiB;
    const model = await pushModel("parallel/capped", [size], 11);
    // The whole link is 8 MB/s and one connection can fill it.
    proxy.setShape({ aggregateBytesPerSecond: 8_000_000, latencyMs: 5 });
    const debug: { at: number; line: string }[] = [];
    const result = await pull(model.reference, {
      cacheDir: newCache(),
      parallelDownload: { minPartBytes: MiB, initialConnections: 2 },
      verbose: true,
      onDebug: (line) => debug.push({ at: Date.now(), line }),
    });

    expect((await readFile(result.path)).equals(model.ggufs[0]!)).toBe(true);
    const gets = blobGets(model);
    // It tried 4 (2 -> 4 gained nothing), then went back to 2 (and would try again only 4 s later, after the end).
    const back = debug.find((d) => /4 connections .* vs 2 .*; back to 2/.test(d.line));
    expect(back, debug.map((d) => d.line).join("\n")).toBeDefined();
    expect(maxConcurrent(gets)).toBeLessThanOrEqual(4);
    // From then on only 2 connections take new parts; the 2 added ones finish theirs and stop.
    const after = gets.filter((r) => r.at > back!.at);
    expect(after.length).toBeGreaterThan(4);
    expect(maxConcurrent(after)).toBeLessThanOrEqual(2);
    expect(debug.some((d) => /trying \d+/.test(d.line) && d.at > back!.at)).toBe(false);
  });

  test("after going back it tries again later: a link that then stops being filled by one connection gets more", async () => {
    const size = 40 * MiB;
    const model = await pushModel("parallel/reprobe", [size], 15);
    // First a link that one connection fills (8 MB/s in all): 2 -> 4 gains nothing, back to 2. Once it has said so,
    // the link changes to 2 MB/s per connection and nothing in all: the retry 4 s later must find the gain.
    proxy.setShape({ aggregateBytesPerSecond: 8_000_000, latencyMs: 5 });
    const debug: { at: number; line: string }[] = [];
    let back: number | undefined;
    const result = await pull(model.reference, {
      cacheDir: newCache(),
      parallelDownload: { minPartBytes: MiB, initialConnections: 2, maxConnections: 8 },
      verbose: true,
      onDebug: (line) => {
        debug.push({ at: Date.now(), line });
        if (back === undefined && /4 connections .* vs 2 .*; back to 2, again in 4 s/.test(line)) {
          back = Date.now();
          proxy.setShape({ perConnectionBytesPerSecond: 2_000_000, latencyMs: 5 });
        }
      },
    });

    expect((await readFile(result.path)).equals(model.ggufs[0]!)).toBe(true);
    const lines = debug.map((d) => d.line).join("\n");
    expect(back, lines).toBeDefined();
    const retried = debug.find((d) => d.at > back! && /over 2 connection\(s\); trying 4/.test(d.line));
    expect(retried, lines).toBeDefined();
    expect(retried!.at - back!).toBeGreaterThanOrEqual(3_900);
    const later = blobGets(model).filter((r) => r.at > retried!.at);
    expect(maxConcurrent(later)).toBeGreaterThanOrEqual(4);
  });

  test("one connection held to 50 kB/s does not hold up the end: its range is split and raced", async () => {
    const size = 32 * MiB;
    const model = await pushModel("parallel/straggler", [size], 12);
    const shape = { perConnectionBytesPerSecond: 2_000_000, aggregateBytesPerSecond: 16_000_000, latencyMs: 10 };
    const options: PullOptions = { parallelDownload: { minPartBytes: MiB, initialConnections: 8, maxConnections: 8 } };

    proxy.setShape(shape);
    let started = Date.now();
    await pull(model.reference, { cacheDir: newCache(), ...options });
    const plain = Date.now() - started;

    proxy.resetStats();
    proxy.setShape({ ...shape, straggler: { nth: 2, bytesPerSecond: 50_000, match: isBlob(model) } });
    started = Date.now();
    const result = await pull(model.reference, { cacheDir: newCache(), ...options });
    const withStraggler = Date.now() - started;

    expect((await readFile(result.path)).equals(model.ggufs[0]!)).toBe(true);
    // 32 MiB at 50 kB/s would be 11 minutes; its first part alone (1/8 of the blob) 84 s.
    expect(withStraggler).toBeLessThan(plain * 1.5 + 1_000);
    const gets = blobGets(model);
    expect(gets.length).toBeGreaterThan(8);
    expect(blobBytes(model)).toBeLessThan(size * 1.1);
  });
});

describe("stragglers", () => {
  test.each([
    ["after 100 kB", 100_000, 13],
    ["before its headers", 0, 14],
  ])("a part that stops sending %s (no error, no close) is split and raced long before the stall timeout", async (_, afterBytes, seed) => {
    const size = 16 * MiB;
    const model = await pushModel(`parallel/stalled-${afterBytes}`, [size], seed);
    const stalledFrom = 4 * MiB;
    // The part from 4 MiB sends afterBytes, then nothing for 40 s; the transport's stall timeout is 60 s. Only taking
    // its range over on other connections can finish the pull within the test's time.
    proxy.addFault({ kind: "stall", afterBytes, ms: 40_000, match: (r) => isBlob(model)(r) && String(r.headers.range).startsWith(`bytes=${stalledFrom}-`) });
    const debug: string[] = [];
    const started = Date.now();
    const result = await pull(model.reference, {
      cacheDir: newCache(),
      stallTimeoutMs: 60_000,
      parallelDownload: { minPartBytes: MiB, initialConnections: 4, maxConnections: 4 },
      verbose: true,
      onDebug: (line) => debug.push(line),
    });
    const elapsed = Date.now() - started;

    expect(proxy.pendingFaults).toHaveLength(0);
    expect((await readFile(result.path)).equals(model.ggufs[0]!)).toBe(true);
    expect(elapsed, debug.filter((l) => !l.includes("HTTP")).join("\n")).toBeLessThan(15_000);
    const gets = blobGets(model);
    const stalled = gets.find((r) => parseRange(r.range).start === stalledFrom)!;
    const stalledEnd = parseRange(stalled.range).end;
    // Its remaining bytes were asked for again, on other connections, from inside its range.
    const takeovers = gets.filter((r) => r !== stalled && parseRange(r.range).start > stalledFrom && parseRange(r.range).start <= stalledEnd);
    expect(takeovers.length).toBeGreaterThan(0);
    expect(takeovers.every((r) => r.connection !== stalled.connection)).toBe(true);
    // The stalled response was dropped once its bytes had arrived elsewhere, not left to the stall timeout.
    expect(stalled.endAt).toBeDefined();
    expect(stalled.endAt! - started).toBeLessThan(elapsed + 1_000);
    expect(debug.some((line) => /taken over|racing|asking again on another connection/.test(line)), debug.join("\n")).toBe(true);
  });
});

describe("servers that do not split", () => {
  test("a server that ignores Range (200 to every range request) gets one stream with the same result", async () => {
    const size = 16 * MiB;
    const model = await pushModel("parallel/norange", [size], 20);
    proxy.addFault({ kind: "ignore-range", match: isBlob(model), times: Number.POSITIVE_INFINITY });
    const cacheDir = newCache();
    const result = await pull(model.reference, { cacheDir, retry: FAST_RETRY, parallelDownload: SMALL_PARTS });

    expect((await readFile(result.path)).equals(model.ggufs[0]!)).toBe(true);
    const gets = blobGets(model);
    // The first parts were asked for at once (4 connections); the first 200 became the one stream and the others
    // were dropped (the proxy records them as 502: the client went away). Nothing was asked for after that.
    expect(gets).toHaveLength(4);
    expect(gets.filter((r) => r.bytes === size)).toHaveLength(1);
    expect(blobBytes(model)).toBeGreaterThanOrEqual(size);
    expect(blobBytes(model)).toBeLessThan(size * 1.5);
    expect(result.bytesTransferred).toBeGreaterThanOrEqual(size);
  });

  test("one part answered at another offset is refused and asked again; the blob is right", async () => {
    const size = 12 * MiB;
    const model = await pushModel("parallel/shifted", [size], 21);
    proxy.addFault({ kind: "shift-range", by: 1_000, match: (r) => isBlob(model)(r) && r.headers.range !== "bytes=0-" && !String(r.headers.range).startsWith("bytes=0-") });
    const result = await pull(model.reference, { cacheDir: newCache(), retry: FAST_RETRY, parallelDownload: SMALL_PARTS });

    expect((await readFile(result.path)).equals(model.ggufs[0]!)).toBe(true);
    const shifted = blobGets(model).filter((r) => r.forwardedRange !== undefined);
    expect(shifted).toHaveLength(1);
    const again = blobGets(model).filter((r) => r.range === shifted[0]!.range);
    expect(again).toHaveLength(2);
  });
});

describe("integrity", () => {
  test("one corrupted byte in one part fails the pull with DIGEST_MISMATCH and nothing is cached", async () => {
    const size = 16 * MiB;
    const model = await pushModel("parallel/corrupt", [size], 30);
    // The part that starts at 8 MiB (of 16 parts of 1 MiB): its 1000th byte.
    proxy.addFault({ kind: "corrupt", offset: 1_000, match: (r) => isBlob(model)(r) && String(r.headers.range).startsWith(`bytes=${8 * MiB}-`) });
    const cacheDir = newCache();
    const error = await pullError(model.reference, { cacheDir, retry: FAST_RETRY, parallelDownload: SMALL_PARTS });

    expect(proxy.pendingFaults).toHaveLength(0);
    expect(error.code).toBe("DIGEST_MISMATCH");
    expect(error.message).toContain(model.digests[0]);
    const hex = hexOf(model.digests[0]!);
    expect((await listOrEmpty(blobsDir(cacheDir))).filter((name) => name.startsWith(hex))).toEqual([]);
    expect(await listOrEmpty(join(cacheDir, "oci", "models"))).toEqual([]);
    expect(await listOrEmpty(join(cacheDir, "oci", "refs"))).toEqual([]);
  });
});

describe("signed CDN URLs", () => {
  let cdnRoot: string;
  let cdn: Cdn;
  let cdnProxy: FaultProxy;
  let cdnRegistry: RegistryHandle;
  let registryProxy: FaultProxy;

  beforeAll(async () => {
    cdnRoot = await makeTempDir("llama-oci-parallel-cdn");
    cdn = await startCdn(cdnRoot);
    // The CDN answers 403 once a URL's `expires` has passed; the proxy in front of the registry signs its redirects.
    cdnProxy = await startFaultProxy(cdn.url, { expiringUrls: true });
    cdnRegistry = await startRegistry({ rootDir: cdnRoot, redirectTo: cdnProxy.url });
    registryProxy = await startFaultProxy(cdnRegistry.url, { signRedirects: { ttlMs: 700 } });
  });

  afterAll(async () => {
    await registryProxy?.stop();
    await cdnRegistry?.stop();
    await cdnProxy?.stop();
    await cdn?.stop();
  });

  test("a URL that expires mid-download is resolved again through the registry; each part goes on where it stopped", async () => {
    const size = 16 * MiB;
    const gguf = fakeGguf(size, 40);
    const digest = digestOf(gguf);
    await pushArtifact({ registryUrl: cdnRegistry.url, repository: "parallel/cdn" }, "v1", dockerV01({ ggufs: [gguf] }));
    const blobPath = `/v2/parallel/cdn/blobs/${digest}`;
    // 4 connections of 2 MB/s: about 2 s, so URLs handed out at the start expire while parts are still to come.
    cdnProxy.setShape({ perConnectionBytesPerSecond: 2_000_000, latencyMs: 5 });
    const events: ProgressEvent[] = [];
    const result = await pull(`${registryProxy.host}/parallel/cdn:v1`, {
      cacheDir: newCache(),
      retry: FAST_RETRY,
      parallelDownload: { minPartBytes: MiB, initialConnections: 4, maxConnections: 4 },
      onProgress: (e) => events.push(e),
    });

    expect((await readFile(result.path)).equals(gguf)).toBe(true);
    expect(cdnProxy.expiredRequests).toBeGreaterThan(0);
    const registryGets = registryProxy.requests.filter((r) => r.method === "GET" && pathOf(r.path) === blobPath);
    const cdnGets = cdnProxy.requests.filter((r) => r.method === "GET" && r.status !== 403);
    // The registry was asked again after an expiry, not for every part: the other parts went straight to the CDN.
    expect(registryGets.length).toBeGreaterThan(1);
    expect(registryGets.length).toBeLessThan(cdnGets.length);
    // Parts went on from where they stopped: the blob crossed the CDN about once.
    const cdnBytes = [...cdnProxy.bytesByPath.values()].reduce((sum, n) => sum + n, 0);
    expect(cdnBytes).toBeGreaterThanOrEqual(size);
    expect(cdnBytes).toBeLessThan(size + 64 * 1024);
    // Authorization never reached the CDN.
    expect(cdn.requests.some((r) => r.headers.authorization !== undefined)).toBe(false);
    expect(events.filter((e) => e.type === "layer-retry" && /403/.test(e.reason)).length).toBeGreaterThan(0);
  });
});

describe("resume", () => {
  test("an aborted parallel pull keeps .tmp, .parts and .digest; the next pull fetches only the missing ranges", async () => {
    const size = 16 * MiB;
    const model = await pushModel("parallel/abort", [size], 50);
    const digest = model.digests[0]!;
    const cacheDir = newCache();
    proxy.setShape({ perConnectionBytesPerSecond: 2_000_000 });
    const controller = new AbortController();
    const pending = pullError(model.reference, { cacheDir, signal: controller.signal, parallelDownload: SMALL_PARTS });
    await waitFor(async () => (await recordedBytes(cacheDir, digest)) >= 6 * MiB, "6 MiB on disk");
    controller.abort();
    expect((await pending).code).toBe("ABORTED");

    const recorded = await recordedBytes(cacheDir, digest);
    expect(recorded).toBeGreaterThanOrEqual(6 * MiB);
    expect(recorded).toBeLessThan(size);
    expect((await readFile(partialOf(cacheDir, digest, ".digest"), "utf8")).trim()).toBe(digest);
    const state = JSON.parse(await readFile(partialOf(cacheDir, digest, ".parts"), "utf8")) as { done: [number, number][]; size: number };
    expect(state.size).toBe(size);
    // Several parts in flight: more than one range on disk, with holes between them.
    expect(state.done.length).toBeGreaterThan(1);

    proxy.resetStats();
    proxy.setShape(undefined);
    const events: ProgressEvent[] = [];
    const result = await pull(model.reference, { cacheDir, parallelDownload: SMALL_PARTS, onProgress: (e) => events.push(e) });
    expect((await readFile(result.path)).equals(model.ggufs[0]!)).toBe(true);
    // Only the holes were asked for, and nothing that was on disk crossed the wire again.
    for (const get of blobGets(model)) {
      const { start, end } = parseRange(get.range);
      expect(state.done.some(([a, b]) => start >= a && start < b), `${String(get.range)} starts inside a done range`).toBe(false);
      expect(end).toBeLessThan(size);
    }
    expect(blobBytes(model)).toBeGreaterThanOrEqual(size - recorded);
    expect(blobBytes(model)).toBeLessThan(size - recorded + 4 * MiB);
    const start = events.find((e) => e.type === "layer-start" && e.digest === digest);
    expect(start?.type === "layer-start" && start.resumeFrom).toBe(recorded);
    const left = await listOrEmpty(blobsDir(cacheDir));
    expect(left.filter((name) => /\.(tmp|parts|digest|lock)$/.test(name)), left.join(", ")).toEqual([]);
  });

  test("an old single-stream partial (no .parts) is resumed from its prefix", async () => {
    const size = 12 * MiB;
    const model = await pushModel("parallel/oldpartial", [size], 51);
    const digest = model.digests[0]!;
    const cacheDir = newCache();
    const kept = 5 * MiB + 777;
    await mkdir(blobsDir(cacheDir), { recursive: true });
    await writeFile(partialOf(cacheDir, digest, ".tmp"), model.ggufs[0]!.subarray(0, kept));
    await writeFile(partialOf(cacheDir, digest, ".digest"), `${digest}\n`);

    const result = await pull(model.reference, { cacheDir, parallelDownload: SMALL_PARTS });
    expect((await readFile(result.path)).equals(model.ggufs[0]!)).toBe(true);
    const starts = blobGets(model).map((r) => parseRange(r.range).start);
    expect(Math.min(...starts)).toBe(kept);
    expect(blobBytes(model)).toBeGreaterThanOrEqual(size - kept);
    expect(blobBytes(model)).toBeLessThan(size - kept + 2 * MiB);
  });

  test("a .parts file that does not parse is not trusted: the download starts over", async () => {
    const size = 8 * MiB;
    const model = await pushModel("parallel/badstate", [size], 52);
    const digest = model.digests[0]!;
    const cacheDir = newCache();
    await mkdir(blobsDir(cacheDir), { recursive: true });
    await writeFile(partialOf(cacheDir, digest, ".tmp"), fakeGguf(size, 999));
    await writeFile(partialOf(cacheDir, digest, ".digest"), `${digest}\n`);
    await writeFile(partialOf(cacheDir, digest, ".parts"), '{"version":1,"digest":"sha256:');

    const result = await pull(model.reference, { cacheDir, parallelDownload: SMALL_PARTS });
    expect((await readFile(result.path)).equals(model.ggufs[0]!)).toBe(true);
    expect(blobBytes(model)).toBeGreaterThanOrEqual(size);
  });
});

describe("a disk that fills up", () => {
  test("fails with NO_SPACE keeping every recorded range; the next pull fetches only the rest", async (context) => {
    const mountPoint = join(workDir, `tmpfs-${++cacheCount}`);
    await mkdir(mountPoint);
    const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", mountPoint], { encoding: "utf8" });
    if (mounted.error || mounted.status !== 0) context.skip(`cannot mount a tmpfs (needs root): ${(mounted.error?.message ?? mounted.stderr).trim()}`);
    try {
      const size = 6 * MiB;
      const model = await pushModel("parallel/full", [size], 80);
      const digest = model.digests[0]!;
      const cacheDir = mountPoint;
      proxy.setShape({ perConnectionBytesPerSecond: 1_000_000 });
      const pending = pullError(model.reference, { cacheDir, retry: FAST_RETRY, parallelDownload: SMALL_PARTS });
      await waitFor(async () => (await recordedBytes(cacheDir, digest)) >= 2 * MiB, "2 MiB on disk");
      const filler = join(mountPoint, "filler");
      const fd = openSync(filler, "w");
      try {
        for (const chunk = Buffer.alloc(64 * 1024, 0x55); ; ) writeSync(fd, chunk);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ENOSPC") throw error;
      } finally {
        closeSync(fd);
      }
      const error = await pending;
      expect(error.code).toBe("NO_SPACE");
      expect(error.message).toMatch(/writing model\.gguf/);
      expect(error.hint).toMatch(/resumes from/);

      // What the state says is on disk is the blob's bytes; nothing was committed.
      const held = await recordedRanges(cacheDir, digest);
      expect(held.length).toBeGreaterThan(0);
      const partial = await readFile(partialOf(cacheDir, digest, ".tmp"));
      for (const [a, b] of held) expect(partial.subarray(a, b).equals(model.ggufs[0]!.subarray(a, b)), `bytes ${a}-${b}`).toBe(true);
      expect(await listOrEmpty(join(cacheDir, "oci", "models"))).toEqual([]);

      await rm(filler);
      proxy.resetStats();
      proxy.setShape(undefined);
      const result = await pull(model.reference, { cacheDir, parallelDownload: SMALL_PARTS });
      expect((await readFile(result.path)).equals(model.ggufs[0]!)).toBe(true);
      const onDisk = held.reduce((sum, [a, b]) => sum + b - a, 0);
      expect(blobBytes(model)).toBeGreaterThanOrEqual(size - onDisk);
      expect(blobBytes(model)).toBeLessThan(size - onDisk + 2 * MiB);
    } finally {
      spawnSync("umount", ["-l", mountPoint]);
    }
  });
});

describe("several files", () => {
  test("shards and projector share the connection budget; progress stays one line per layer", async () => {
    const model = await pushModel("parallel/shards", [12 * MiB, 12 * MiB, 12 * MiB], 60, { mmproj: 8 * MiB });
    const events: ProgressEvent[] = [];
    const result = await pull(model.reference, {
      cacheDir: newCache(),
      parallelDownload: { minPartBytes: MiB, maxConnections: 6 },
      onProgress: (e) => events.push(e),
    });

    for (const [i, file] of result.files.filter((f) => f.kind === "gguf" || f.kind === "mmproj").entries()) {
      expect((await readFile(file.path)).equals(model.ggufs[i]!), file.path).toBe(true);
    }
    const all = model.blobPaths.flatMap((_, i) => blobGets(model, i));
    expect(maxConcurrent(all)).toBeLessThanOrEqual(6);
    expect(maxConcurrent(all)).toBeGreaterThanOrEqual(4);
    for (const digest of model.digests) {
      expect(events.filter((e) => e.type === "layer-start" && e.digest === digest)).toHaveLength(1);
      expect(events.filter((e) => e.type === "layer-done" && e.digest === digest)).toHaveLength(1);
      const completed = events.flatMap((e) => (e.type === "layer-progress" && e.digest === digest ? [e.completed] : []));
      expect(completed.length).toBeGreaterThan(0);
      expect([...completed].sort((a, b) => a - b)).toEqual(completed);
    }
  });
});

describe("SIGKILL mid-download", () => {
  test("a parallel pull killed at 40% resumes: the second moves at most the missing bytes plus 1 MiB per connection", async () => {
    // 72 MiB: above the default threshold (4 parts of 16 MiB), so the CLI splits it with its default settings.
    const size = 72 * MiB;
    const model = await pushModel("parallel/killed", [size], 70);
    const digest = model.digests[0]!;
    const home = await makeTempDir("llama-oci-parallel-home");
    const cacheDir = newCache();
    const env = cliEnv(home, cacheDir);
    proxy.setShape({ perConnectionBytesPerSecond: 3_000_000, latencyMs: 10 });
    const first = spawnCli(["pull", "-q", model.reference], { env, timeoutMs: 60_000 });
    await waitFor(() => blobBytes(model) >= 0.4 * size, "40% sent", 40_000);
    first.child.kill("SIGKILL");
    expect((await first.result).signal).toBe("SIGKILL");
    const sentBefore = blobBytes(model);
    expect(maxConcurrent(blobGets(model))).toBeGreaterThanOrEqual(4);
    // What the partial holds: the state file's ranges. Bytes the proxy had sent that were still in the sockets'
    // buffers (or in a batch not yet written) when the process died are missing too.
    const held = await recordedRanges(cacheDir, digest);
    const onDisk = held.reduce((sum, [a, b]) => sum + b - a, 0);
    expect(onDisk).toBeGreaterThan(0.3 * size);
    expect(onDisk).toBeLessThanOrEqual(sentBefore);

    proxy.resetStats();
    proxy.setShape(undefined);
    const second = await runCli(["pull", model.reference], { env, timeoutMs: 60_000 });
    expect(second.exitCode, second.stderr).toBe(0);
    expect((await readFile(second.stdout.trim().split("\n").at(-1)!)).equals(model.ggufs[0]!)).toBe(true);
    const moved = blobBytes(model);
    const connections = new Set(blobGets(model).map((r) => r.connection)).size;
    expect(moved).toBeGreaterThanOrEqual(size - onDisk);
    expect(moved, `${moved} moved for ${size - onDisk} missing over ${connections} connections`).toBeLessThanOrEqual(size - onDisk + connections * MiB);
    // Only the missing ranges were asked for: no request starts inside what the partial held.
    for (const get of blobGets(model)) {
      const { start } = parseRange(get.range);
      expect(held.some(([a, b]) => start >= a && start < b), `${String(get.range)} starts inside a held range`).toBe(false);
    }
    await removeDir(home);
  });
});
