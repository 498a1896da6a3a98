/**
 * One blob over one connection, as every blob below the parallel threshold is fetched: hashed while it streams to
 * disk (no second read), resumed from a <hex>.tmp prefix whose <hex>.digest names the same digest, retried with
 * backoff on dropped or stalled connections and 408/429/5xx, restarted on a 200 to a Range request, verified for size
 * and digest. The caller (blob.ts) holds the blob's lock and commits the partial.
 */
import { createHash, type Hash } from "node:crypto";
import { open, readFile, stat, truncate, writeFile } from "node:fs/promises";
import { finished } from "node:stream/promises";
import { LlamaOciError, abortError, isAbort } from "../../errors.js";
import { parseDigest } from "../name/index.js";
import { contentRangeStart, openBlob } from "../remote/index.js";
import { BatchWriter, hashFile, isNoSpace, noSpaceError } from "../store/index.js";
import {
  backoffMs,
  delay,
  describeNetworkError,
  headerValue,
  isRetryableStatus,
  isTransientNetworkError,
  retryAfterMs,
  retryPolicy,
  type HttpResponse,
  type RetryPolicy,
} from "../transport/index.js";
import { PROGRESS_INTERVAL_MS, SYNC_EVERY_BYTES, type BlobRequest } from "./request.js";

interface PartialState {
  hash: Hash;
  /** Bytes on disk and in the hash. */
  offset: number;
}

async function openPartial(request: BlobRequest): Promise<PartialState> {
  const { store, digest, size } = request;
  const partial = store.blobs.partialPath(digest);
  const recorded = (await readFile(store.blobs.partialDigestPath(digest), "utf8").catch(() => "")).trim();
  const existing = await stat(partial).catch(() => undefined);
  if (recorded === digest && existing?.isFile() && existing.size <= size) {
    return hashPrefix(partial, digest, existing.size);
  }
  await store.blobs.discardPartial(digest);
  try {
    await writeFile(store.blobs.partialDigestPath(digest), `${digest}\n`);
    await writeFile(partial, "");
  } catch (error) {
    if (!isNoSpace(error)) throw error;
    await store.blobs.discardPartial(digest);
    throw await noSpaceError(store.root, { needed: size, writing: request.filename, cause: error });
  }
  return { hash: newHash(digest), offset: 0 };
}

function newHash(digest: string): Hash {
  return createHash(parseDigest(digest).algorithm);
}

async function hashPrefix(path: string, digest: string, length: number): Promise<PartialState> {
  return { hash: await hashFile(path, parseDigest(digest).algorithm, { length }), offset: length };
}

/** Downloads the blob into its partial; returns the bytes received. */
export async function fetchSingleStream(request: BlobRequest): Promise<number> {
  const { store, digest, size, onProgress, signal, logger } = request;
  const policy = retryPolicy(request.retry);
  const partial = store.blobs.partialPath(digest);
  let state = await openPartial(request);
  onProgress?.({ type: "layer-start", digest, size, filename: request.filename, resumeFrom: state.offset });
  if (state.offset > 0) logger.debug(`resuming ${digest} from byte ${state.offset}`);

  let transferred = 0;
  let failures = 0;
  while (state.offset < size) {
    if (signal?.aborted) throw abortError(signal);
    const startOffset = state.offset;
    let retryDelay: number | undefined;
    let reason = "";
    try {
      const response = await openBlob(request.client, request.repository, digest, {
        headers: startOffset > 0 ? { range: `bytes=${startOffset}-${size - 1}` } : {},
        signal,
        bodyTimeoutMs: request.stallTimeoutMs ?? 30_000,
        headersTimeoutMs: request.stallTimeoutMs ?? 30_000,
        // This loop is the blob's retry: it resumes from the bytes on disk, whose hash it holds, with the same policy.
        retry: false,
      });
      const outcome = await classify(response, startOffset, request, policy);
      if (outcome.kind === "retry") {
        retryDelay = outcome.delayMs;
        reason = outcome.reason;
      } else {
        if (outcome.kind === "restart" && startOffset > 0) {
          logger.debug(`${digest}: server ignored the range (HTTP ${response.status}); restarting from 0`);
          await truncate(partial, 0);
          state = { hash: newHash(digest), offset: 0 };
        }
        if (outcome.kind === "discard") {
          await truncate(partial, 0);
          state = { hash: newHash(digest), offset: 0 };
          failures++;
          if (failures >= policy.attempts) throw new LlamaOciError("REGISTRY", `${request.client.registry} refused the range request for ${digest}`);
          continue;
        }
        transferred += await writeBody(response, partial, state, request);
      }
    } catch (error) {
      if (signal?.aborted || isAbort(error)) throw abortError(signal);
      if (error instanceof LlamaOciError && error.code !== "NETWORK") throw error;
      if (!isTransientNetworkError(error)) throw error;
      reason = describeNetworkError(error);
      // Bytes hashed but not yet on disk when the stream broke: trust only what reached the file.
      const onDisk = (await stat(partial)).size;
      if (onDisk !== state.offset) state = await hashPrefix(partial, digest, Math.min(onDisk, size));
    }
    if (state.offset >= size) break;
    if (state.offset > startOffset) failures = 0;
    failures++;
    if (failures >= policy.attempts) {
      throw new LlamaOciError("NETWORK", `download of ${request.filename} (${digest}) failed after ${failures} attempts: ${reason}`, {
        hint: "run the same pull again: it resumes from the bytes already downloaded",
      });
    }
    const wait = retryDelay ?? backoffMs(policy, failures);
    logger.debug(`retrying ${digest} in ${wait} ms (attempt ${failures + 1}/${policy.attempts}): ${reason}`);
    onProgress?.({ type: "layer-retry", digest, attempt: failures + 1, maxAttempts: policy.attempts, delayMs: wait, reason });
    await delay(wait, signal);
  }

  onProgress?.({ type: "verifying", digest, size });
  const actual = `${parseDigest(digest).algorithm}:${state.hash.digest("hex")}`;
  const written = (await stat(partial)).size;
  if (written !== size) {
    await store.blobs.discardPartial(digest);
    throw new LlamaOciError("SIZE_MISMATCH", `${request.filename}: received ${written} bytes, the manifest says ${size}`, {
      hint: "the registry served different content than its manifest describes; nothing was cached",
    });
  }
  if (actual !== digest) {
    await store.blobs.discardPartial(digest);
    throw new LlamaOciError("DIGEST_MISMATCH", `${request.filename}: content digest ${actual} does not match ${digest}`, {
      hint: "the download was corrupted in transit or the registry is serving bad data; nothing was cached, try again",
    });
  }
  return transferred;
}

type Outcome =
  | { kind: "write" }
  | { kind: "restart" }
  | { kind: "discard" }
  | { kind: "retry"; delayMs?: number; reason: string };

async function classify(response: HttpResponse, offset: number, request: BlobRequest, policy: RetryPolicy): Promise<Outcome> {
  const status = response.status;
  if (status === 206) {
    const start = contentRangeStart(headerValue(response.headers, "content-range"));
    if (start === offset) return { kind: "write" };
    response.body.destroy();
    return { kind: "discard" };
  }
  if (status === 200) return { kind: "restart" };
  if (status === 416) {
    response.body.destroy();
    return { kind: "discard" };
  }
  if (isRetryableStatus(status)) {
    const after = retryAfterMs(response);
    if (after !== undefined && after > policy.maxRetryAfterMs) throw await request.client.error(response, `blob ${request.digest}`);
    await response.body.dump().catch(() => {});
    return { kind: "retry", delayMs: after, reason: `HTTP ${status}` };
  }
  throw await request.client.error(response, `blob ${request.digest}`);
}

async function writeBody(response: HttpResponse, partial: string, state: PartialState, request: BlobRequest): Promise<number> {
  const { size, digest, onProgress } = request;
  const body = response.body;
  const start = state.offset;
  let received = 0;
  let lastEmit = 0;
  let tooLong = false;
  let bodyError: unknown;
  // Each chunk is hashed as it arrives and appended in ~1 MiB batches (see BatchWriter); state.offset counts the
  // bytes on disk. Before this returns or throws, every byte the body handed over is on disk, so the caller can
  // measure the partial, and a SIGKILL loses at most one batch.
  const file = await open(partial, "a");
  const writer = new BatchWriter(file.fd, {
    onWritten: (written) => {
      state.offset = start + written;
      const now = Date.now();
      if (onProgress && (now - lastEmit >= PROGRESS_INTERVAL_MS || state.offset === size)) {
        lastEmit = now;
        onProgress({ type: "layer-progress", digest, size, completed: state.offset });
      }
    },
    onError: () => body.destroy(),
    // The blob is fsynced before it is committed; writing it back as it arrives leaves that fsync little to wait for.
    syncEveryBytes: SYNC_EVERY_BYTES,
  });
  try {
    const ended = finished(body);
    body.on("data", (chunk: Buffer) => {
      if (start + received + chunk.length > size) {
        tooLong = true;
        body.destroy();
        return;
      }
      received += chunk.length;
      state.hash.update(chunk);
      writer.push(chunk);
    });
    await ended;
  } catch (error) {
    bodyError = error;
  } finally {
    writer.flush();
    await writer.settle();
    await file.close();
  }
  if (writer.failed) {
    const error = writer.error;
    // A disk failure, not a network one: retrying the download would not help (and the hash is already ahead).
    // The file keeps only the batches that were written whole (state.offset): a short write's tail is cut off, so
    // that a later pull resumes from a prefix it re-hashes, whatever the failed write left behind.
    await truncate(partial, state.offset).catch(() => {});
    if (isNoSpace(error)) {
      throw await noSpaceError(request.store.root, { needed: size - state.offset, writing: request.filename, kept: state.offset, cause: error });
    }
    throw new LlamaOciError("CACHE", `cannot write ${partial}: ${(error as Error).message}`, {
      hint: "check free disk space and permissions of the cache directory (--cache-dir / LLAMA_CACHE)",
      cause: error,
    });
  }
  if (tooLong) {
    await request.store.blobs.discardPartial(digest);
    throw new LlamaOciError("SIZE_MISMATCH", `${request.filename}: the registry sent more than the ${size} bytes the manifest says`, {
      hint: "the registry served different content than its manifest describes; nothing was cached",
    });
  }
  if (bodyError !== undefined) throw bodyError as Error;
  return received;
}
