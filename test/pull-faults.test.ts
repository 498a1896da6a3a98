// Downloads through a fault proxy in front of a real docker-registry (anonymous), via the library pull(): cut
// connections, corrupted bytes, error statuses, stalls, aborts, resume rules, concurrent pulls and moved tags.
// What is checked is what a user would: the final file's bytes, the error code and message, what is left in the
// cache, and what crossed the wire (requests and Range headers seen and body bytes sent by the proxy).
import { mkdir, readFile, readdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { LlamaOciError, pull, type ProgressEvent, type PullOptions } from "../src/index.js";
import { dockerV01, fakeGguf } from "./helpers/artifacts.js";
import { startFaultProxy, type FaultProxy, type FaultRequestInfo, type ProxiedRequest } from "./helpers/fault-proxy.js";
import { digestOf, pushArtifact } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const SIZE = 4 * 1024 * 1024;
const FAST_RETRY: PullOptions["retry"] = { baseDelayMs: 20, maxDelayMs: 100 };
/**
 * When a connection breaks, bytes undici had received but not yet handed to the reader are dropped with the body
 * (its buffer holds up to 64 KiB); everything handed over must be on disk. So a resume may start a little before
 * the cut point, never after it.
 */
const CLIENT_BUFFER_SLACK = 256 * 1024;

let registry: RegistryHandle;
let proxy: FaultProxy;
let workDir: string;
let cacheCount = 0;

interface TestModel {
  repository: string;
  gguf: Buffer;
  /** Digest of the GGUF layer. */
  digest: string;
  /** Digest of the model manifest. */
  manifestDigest: string;
  /** Reference through the proxy. */
  reference: string;
  /** URL path of the GGUF blob. */
  blobPath: string;
}

async function pushModel(repository: string, seed: number, tag = "v1"): Promise<TestModel> {
  const gguf = fakeGguf(SIZE, seed);
  const pushed = await pushArtifact({ registryUrl: registry.url, repository }, tag, dockerV01({ ggufs: [gguf] }));
  const digest = digestOf(gguf);
  return {
    repository,
    gguf,
    digest,
    manifestDigest: pushed.digest,
    reference: `${proxy.host}/${repository}:${tag}`,
    blobPath: `/v2/${repository}/blobs/${digest}`,
  };
}

const newCache = () => join(workDir, `cache-${++cacheCount}`);
const blobsDir = (cacheDir: string) => join(cacheDir, "oci", "blobs", "sha256");
const hexOf = (digest: string) => digest.slice(digest.indexOf(":") + 1);
const partialPath = (cacheDir: string, digest: string) => join(blobsDir(cacheDir), `${hexOf(digest)}.tmp`);
const partialDigestPath = (cacheDir: string, digest: string) => join(blobsDir(cacheDir), `${hexOf(digest)}.digest`);

/** Matches GET requests for one blob (the GGUF layer), never the manifest or the config blob. */
const blobGet = (model: TestModel) => (req: FaultRequestInfo) =>
  req.method === "GET" && new URL(req.path, "http://x").pathname === model.blobPath;

const blobGets = (model: TestModel): ProxiedRequest[] =>
  proxy.requests.filter((r) => r.method === "GET" && new URL(r.path, "http://x").pathname === model.blobPath);

const blobBytesSent = (model: TestModel) => proxy.bytesByPath.get(model.blobPath) ?? 0;

async function listOrEmpty(dir: string): Promise<string[]> {
  return readdir(dir, { recursive: true }).catch(() => []);
}

async function fileSize(path: string): Promise<number | undefined> {
  return stat(path).then(
    (s) => s.size,
    () => undefined,
  );
}

async function pullError(reference: string, options: PullOptions): Promise<LlamaOciError> {
  const outcome = await pull(reference, options).then(
    () => undefined,
    (error: unknown) => error,
  );
  if (!(outcome instanceof LlamaOciError)) throw new Error(`expected the pull to fail with a LlamaOciError, got ${String(outcome)}`);
  return outcome;
}

async function waitFor(condition: () => Promise<boolean>, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * Starts a pull, holds the GGUF blob's connection still after `at` bytes, aborts once exactly those bytes are in
 * the partial file, and checks the pull rejected with ABORTED.
 */
async function abortMidBlob(model: TestModel, cacheDir: string, at: number): Promise<void> {
  proxy.addFault({ kind: "stall", afterBytes: at, ms: 3_000, match: blobGet(model) });
  const controller = new AbortController();
  const pending = pullError(model.reference, { cacheDir, signal: controller.signal, retry: FAST_RETRY });
  pending.catch(() => {}); // reported below, unless waiting fails first
  try {
    await waitFor(async () => (await fileSize(partialPath(cacheDir, model.digest))) === at, `${at} bytes in the partial`);
  } finally {
    controller.abort();
  }
  const error = await pending;
  expect(error.code).toBe("ABORTED");
  proxy.clearFaults();
}

function parseRange(range: string | undefined): { start: number; end: number } {
  const match = /^bytes=(\d+)-(\d+)$/.exec(range ?? "");
  if (!match) throw new Error(`expected a closed byte range, got ${JSON.stringify(range)}`);
  return { start: Number(match[1]), end: Number(match[2]) };
}

beforeAll(async () => {
  registry = await startRegistry();
  proxy = await startFaultProxy(registry.url);
  workDir = await makeTempDir("llama-oci-faults");
});

afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
  if (workDir) await removeDir(workDir);
});

beforeEach(() => {
  proxy.clearFaults();
  proxy.resetStats();
});

describe("dropped and damaged connections", () => {
  test("a connection cut mid-blob is resumed with a Range in the same pull; the blob crosses the wire about once", async () => {
    const model = await pushModel("faults/cut", 101);
    const cut = 1_500_000;
    proxy.addFault({ kind: "cut-after", bytes: cut, match: blobGet(model) });
    const cacheDir = newCache();
    const result = await pull(model.reference, { cacheDir, retry: FAST_RETRY });

    expect((await readFile(result.path)).equals(model.gguf)).toBe(true);
    expect(result.digest).toBe(model.manifestDigest);
    const gets = blobGets(model);
    expect(gets).toHaveLength(2);
    expect(gets[0]!.range).toBeUndefined();
    const { start, end } = parseRange(gets[1]!.range);
    expect(start).toBeGreaterThan(cut - CLIENT_BUFFER_SLACK); // what was received before the cut was kept
    expect(start).toBeLessThanOrEqual(cut);
    expect(end).toBe(SIZE - 1);
    expect(gets[1]!.status).toBe(206);
    expect(blobBytesSent(model)).toBe(cut + (SIZE - start));
    expect(blobBytesSent(model)).toBeLessThan(SIZE * 1.05);
    expect(await fileSize(partialPath(cacheDir, model.digest))).toBeUndefined();
    expect(await fileSize(partialDigestPath(cacheDir, model.digest))).toBeUndefined();
  });

  test("corrupted bytes fail with DIGEST_MISMATCH and leave nothing cached; a clean pull then works", async () => {
    const model = await pushModel("faults/corrupt", 102);
    proxy.addFault({ kind: "corrupt", offset: 2_000_000, match: blobGet(model) });
    const cacheDir = newCache();
    const error = await pullError(model.reference, { cacheDir, retry: FAST_RETRY });

    expect(error.code).toBe("DIGEST_MISMATCH");
    expect(error.message).toContain(model.digest);
    expect(error.message).toMatch(/model\.gguf.*does not match/);
    const hex = hexOf(model.digest);
    expect((await listOrEmpty(blobsDir(cacheDir))).filter((name) => name.startsWith(hex))).toEqual([]);
    expect(await listOrEmpty(join(cacheDir, "oci", "models"))).toEqual([]);
    expect(await listOrEmpty(join(cacheDir, "oci", "refs"))).toEqual([]);

    proxy.resetStats();
    const result = await pull(model.reference, { cacheDir, retry: FAST_RETRY });
    expect((await readFile(result.path)).equals(model.gguf)).toBe(true);
    expect(blobGets(model)[0]!.range).toBeUndefined(); // nothing of the bad download was reused
    expect(blobBytesSent(model)).toBe(SIZE);
  });
});

describe("error statuses", () => {
  test("503 twice then OK: retried with layer-retry progress events, and the pull succeeds", async () => {
    const model = await pushModel("faults/unavailable", 103);
    proxy.addFault({ kind: "status", status: 503, times: 2, match: blobGet(model) });
    const events: ProgressEvent[] = [];
    const result = await pull(model.reference, { cacheDir: newCache(), retry: FAST_RETRY, onProgress: (e) => events.push(e) });

    expect((await readFile(result.path)).equals(model.gguf)).toBe(true);
    expect(blobGets(model).map((r) => r.status)).toEqual([503, 503, 200]);
    const retries = events.filter((e) => e.type === "layer-retry" && e.digest === model.digest);
    expect(retries).toHaveLength(2);
    expect(retries.map((e) => e.type === "layer-retry" && e.attempt)).toEqual([2, 3]);
    for (const e of retries) expect(e.type === "layer-retry" && e.reason).toMatch(/503/);
  });

  test("429 with Retry-After: 1 waits about a second, then succeeds", async () => {
    const model = await pushModel("faults/slowdown", 104);
    proxy.addFault({ kind: "status", status: 429, retryAfter: "1", times: 1, match: blobGet(model) });
    const events: ProgressEvent[] = [];
    const result = await pull(model.reference, { cacheDir: newCache(), retry: FAST_RETRY, onProgress: (e) => events.push(e) });

    expect((await readFile(result.path)).equals(model.gguf)).toBe(true);
    const gets = blobGets(model);
    expect(gets.map((r) => r.status)).toEqual([429, 200]);
    const waited = gets[1]!.at - gets[0]!.at;
    expect(waited).toBeGreaterThanOrEqual(950);
    expect(waited).toBeLessThan(3_000);
    const retry = events.find((e) => e.type === "layer-retry");
    expect(retry?.type === "layer-retry" && retry.delayMs).toBe(1_000);
  });

  test("429 with Retry-After: 3600 fails fast with RATE_LIMITED instead of waiting", async () => {
    const model = await pushModel("faults/ratelimit", 105);
    proxy.addFault({ kind: "status", status: 429, retryAfter: "3600", times: 1, match: blobGet(model) });
    const started = Date.now();
    const error = await pullError(model.reference, { cacheDir: newCache(), retry: FAST_RETRY });

    expect(Date.now() - started).toBeLessThan(3_000);
    expect(error.code).toBe("RATE_LIMITED");
    expect(error.message).toMatch(/rate limit/);
    expect(error.message).toContain("3600");
    expect(error.hint).toMatch(/docker login|wait/);
    expect(blobGets(model)).toHaveLength(1);
  });

  test("500 beyond the retry budget fails clearly, keeps the partial, and the next pull resumes it", async () => {
    const model = await pushModel("faults/broken", 106);
    const cut = 1_200_000;
    const isBlob = blobGet(model);
    proxy.addFault({ kind: "cut-after", bytes: cut, match: isBlob });
    proxy.addFault({ kind: "status", status: 500, times: 20, match: (req) => isBlob(req) && req.headers.range !== undefined });
    const cacheDir = newCache();
    const error = await pullError(model.reference, { cacheDir, retry: { attempts: 3, baseDelayMs: 20, maxDelayMs: 100 } });

    expect(["NETWORK", "REGISTRY"]).toContain(error.code);
    expect(error.message).toMatch(/500/);
    expect(error.message).toContain(model.digest);
    expect(error.hint).toMatch(/resume/);
    const failed = blobGets(model).filter((r) => r.status === 500);
    expect(failed.length).toBeGreaterThanOrEqual(1);
    expect(failed.length).toBeLessThanOrEqual(3);
    const kept = (await fileSize(partialPath(cacheDir, model.digest))) ?? 0;
    expect(kept).toBeGreaterThan(cut - CLIENT_BUFFER_SLACK);
    expect(kept).toBeLessThanOrEqual(cut);
    expect((await readFile(partialDigestPath(cacheDir, model.digest), "utf8")).trim()).toBe(model.digest);
    expect(await fileSize(join(blobsDir(cacheDir), hexOf(model.digest)))).toBeUndefined();

    proxy.clearFaults();
    proxy.resetStats();
    const result = await pull(model.reference, { cacheDir, retry: FAST_RETRY });
    expect((await readFile(result.path)).equals(model.gguf)).toBe(true);
    expect(blobGets(model)[0]!.range).toBe(`bytes=${kept}-${SIZE - 1}`);
    expect(blobBytesSent(model)).toBe(SIZE - kept);
  });
});

describe("stalls and aborts", () => {
  test("a stalled connection is given up after stallTimeoutMs and resumed with a Range", async () => {
    const model = await pushModel("faults/stall", 107);
    const stallAt = 1_000_000;
    proxy.addFault({ kind: "stall", afterBytes: stallAt, ms: 4_000, match: blobGet(model) });
    const started = Date.now();
    const result = await pull(model.reference, { cacheDir: newCache(), retry: FAST_RETRY, stallTimeoutMs: 300 });

    expect(Date.now() - started).toBeLessThan(3_000); // did not sit out the 4 s stall
    expect((await readFile(result.path)).equals(model.gguf)).toBe(true);
    const gets = blobGets(model);
    expect(gets).toHaveLength(2);
    expect(gets[1]!.range).toBe(`bytes=${stallAt}-${SIZE - 1}`);
    expect(gets[1]!.status).toBe(206);
  });

  test("an aborted pull rejects with ABORTED, keeps .tmp and .digest, and the next pull resumes from there", async () => {
    const model = await pushModel("faults/abort", 108);
    const at = 1_500_000;
    const cacheDir = newCache();
    await abortMidBlob(model, cacheDir, at);

    expect(await fileSize(partialPath(cacheDir, model.digest))).toBe(at);
    expect((await readFile(partialDigestPath(cacheDir, model.digest), "utf8")).trim()).toBe(model.digest);
    expect(await listOrEmpty(join(cacheDir, "oci", "models"))).toEqual([]);

    proxy.resetStats();
    const events: ProgressEvent[] = [];
    const result = await pull(model.reference, { cacheDir, retry: FAST_RETRY, onProgress: (e) => events.push(e) });
    expect((await readFile(result.path)).equals(model.gguf)).toBe(true);
    const gets = blobGets(model);
    expect(gets[0]!.range).toBe(`bytes=${at}-${SIZE - 1}`);
    expect(blobBytesSent(model)).toBe(SIZE - at);
    const start = events.find((e) => e.type === "layer-start" && e.digest === model.digest);
    expect(start?.type === "layer-start" && start.resumeFrom).toBe(at);
    expect(result.bytesTransferred).toBeGreaterThanOrEqual(SIZE - at);
    expect(result.bytesTransferred).toBeLessThan(SIZE - at + 10_000); // at most the small config blob on top
    expect(await fileSize(partialPath(cacheDir, model.digest))).toBeUndefined();
  });
});

describe("resume rules", () => {
  /** A partial of `length` bytes that are NOT the blob's prefix, so resuming from it must give a wrong digest. */
  async function plantPartial(cacheDir: string, model: TestModel, length: number, recordedDigest: string, content?: Buffer) {
    await mkdir(blobsDir(cacheDir), { recursive: true });
    await writeFile(partialPath(cacheDir, model.digest), content ?? fakeGguf(length, 9_999));
    await writeFile(partialDigestPath(cacheDir, model.digest), `${recordedDigest}\n`);
  }

  test("a partial whose .digest names another digest is not resumed", async () => {
    const model = await pushModel("resume/otherdigest", 201);
    const cacheDir = newCache();
    await plantPartial(cacheDir, model, 1_000_000, digestOf(Buffer.from("some other blob")));
    const result = await pull(model.reference, { cacheDir, retry: FAST_RETRY });

    expect((await readFile(result.path)).equals(model.gguf)).toBe(true);
    const gets = blobGets(model);
    expect(gets).toHaveLength(1);
    expect(gets[0]!.range).toBeUndefined();
    expect(blobBytesSent(model)).toBe(SIZE);
  });

  test("a server that answers 200 to a Range request makes the download restart from byte 0", async () => {
    const model = await pushModel("resume/ignored", 202);
    const cacheDir = newCache();
    const planted = 1_000_000;
    await plantPartial(cacheDir, model, planted, model.digest);
    proxy.addFault({ kind: "ignore-range", match: blobGet(model) });
    const result = await pull(model.reference, { cacheDir, retry: FAST_RETRY });

    expect((await readFile(result.path)).equals(model.gguf)).toBe(true);
    const gets = blobGets(model);
    expect(gets[0]!.range).toBe(`bytes=${planted}-${SIZE - 1}`);
    expect(gets[0]!.forwardedRange).toBe("");
    expect(gets[0]!.status).toBe(200);
    expect(gets).toHaveLength(1); // the full 200 body was used, not thrown away
    expect(blobBytesSent(model)).toBe(SIZE);
  });

  test("a 206 whose Content-Range starts at another offset is rejected", async () => {
    const model = await pushModel("resume/shifted", 203);
    const cacheDir = newCache();
    const planted = 1_000_000;
    // The real prefix: only appending the shifted body could make the result wrong.
    await plantPartial(cacheDir, model, planted, model.digest, model.gguf.subarray(0, planted));
    proxy.addFault({ kind: "shift-range", by: 1_000, match: blobGet(model) });
    const result = await pull(model.reference, { cacheDir, retry: FAST_RETRY });

    expect((await readFile(result.path)).equals(model.gguf)).toBe(true);
    const gets = blobGets(model);
    expect(gets[0]!.range).toBe(`bytes=${planted}-${SIZE - 1}`);
    expect(gets[0]!.forwardedRange).toBe(`bytes=${planted + 1_000}-${SIZE - 1}`);
    expect(gets[0]!.status).toBe(206);
    expect(gets.length).toBeGreaterThanOrEqual(2);
  });

  test("a 416 is not read and the partial is discarded", async () => {
    const model = await pushModel("resume/unsatisfiable", 204);
    const cacheDir = newCache();
    const planted = 1_000_000;
    await plantPartial(cacheDir, model, planted, model.digest);
    // Registry 2.8.2 answers 416 with a Content-Length longer than its body: reading it would fail the socket.
    proxy.addFault({ kind: "shift-range", by: SIZE, match: blobGet(model) });
    const result = await pull(model.reference, { cacheDir, retry: FAST_RETRY });

    expect((await readFile(result.path)).equals(model.gguf)).toBe(true);
    const gets = blobGets(model);
    expect(gets.map((r) => r.status)).toEqual([416, 200]);
    expect(gets[0]!.range).toBe(`bytes=${planted}-${SIZE - 1}`);
    expect(gets[1]!.range).toBeUndefined();
    // The proxy relays the registry's short 416 text; everything else is the one full download.
    expect(blobBytesSent(model)).toBeGreaterThanOrEqual(SIZE);
    expect(blobBytesSent(model)).toBeLessThan(SIZE + 1_024);
  });
});

describe("concurrency and moved tags", () => {
  test("4 concurrent pulls of one reference into one cache all succeed and the blob is sent about once", async () => {
    const model = await pushModel("faults/concurrent", 301);
    // Hold the first download open a while so the others have to wait for it rather than find a finished blob.
    proxy.addFault({ kind: "stall", afterBytes: 1_000_000, ms: 300, match: blobGet(model) });
    const cacheDir = newCache();
    const results = await Promise.all([1, 2, 3, 4].map(() => pull(model.reference, { cacheDir, retry: FAST_RETRY })));

    expect(new Set(results.map((r) => r.path)).size).toBe(1);
    expect(new Set(results.map((r) => r.digest))).toEqual(new Set([model.manifestDigest]));
    expect((await readFile(results[0]!.path)).equals(model.gguf)).toBe(true);
    expect(blobBytesSent(model)).toBeLessThan(SIZE * 1.5);
    expect(results.filter((r) => r.bytesTransferred >= SIZE)).toHaveLength(1);
    const hex = hexOf(model.digest);
    expect((await listOrEmpty(blobsDir(cacheDir))).filter((name) => name.startsWith(hex))).toEqual([hex]);
  });

  test("after a tag moves, a partial of the old blob is not resumed: the new blob is downloaded from byte 0", async () => {
    const old = await pushModel("faults/moved", 401);
    const cacheDir = newCache();
    await abortMidBlob(old, cacheDir, 1_500_000);
    const moved = await pushModel("faults/moved", 402); // same tag, same size, different bytes

    proxy.resetStats();
    const result = await pull(moved.reference, { cacheDir, retry: FAST_RETRY });
    expect(result.digest).toBe(moved.manifestDigest);
    expect(result.digest).not.toBe(old.manifestDigest);
    expect((await readFile(result.path)).equals(moved.gguf)).toBe(true);
    expect(blobGets(old)).toEqual([]);
    const gets = blobGets(moved);
    expect(gets).toHaveLength(1);
    expect(gets[0]!.range).toBeUndefined();
    expect(blobBytesSent(moved)).toBe(SIZE);
  });
});
