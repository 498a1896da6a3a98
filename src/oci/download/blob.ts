/**
 * downloadBlob(): one blob into the store. A blob is downloaded by one process at a time (a lock per blob); others
 * wait and then find it in the cache. Small blobs are one stream (single.ts), large ones several connections
 * (parallel.ts); either way the partial is verified for size and digest before it is renamed into place.
 */
import { stat } from "node:fs/promises";
import { isNoSpace, noSpaceError } from "../store/index.js";
import { ConnectionBudget } from "./budget.js";
import { fetchParallel } from "./parallel.js";
import { parallelSettings, type BlobRequest, type BlobResult, type ParallelDownloadOptions } from "./request.js";
import { fetchSingleStream } from "./single.js";

export async function downloadBlob(request: BlobRequest): Promise<BlobResult> {
  const { store, digest, size, onProgress } = request;
  if (await store.blobs.has(digest, size)) {
    await tidyLeftovers(request);
    onProgress?.({ type: "layer-done", digest, size, fromCache: true });
    return { fromCache: true, bytesTransferred: 0 };
  }
  // Another process downloading the blob holds its lock: say so, and wait (an abort ends the wait at once).
  const lock = await store.lockBlob(digest, {
    signal: request.signal,
    onWait: () => {
      request.logger.debug(`waiting for another download of ${digest}`);
      onProgress?.({ type: "layer-waiting", digest, size, filename: request.filename });
    },
  });
  try {
    if (await store.blobs.has(digest, size)) {
      onProgress?.({ type: "layer-done", digest, size, fromCache: true });
      return { fromCache: true, bytesTransferred: 0 };
    }
    const settings = parallelSettings(request.parallel);
    const budget = request.budget ?? new ConnectionBudget(settings.maxConnections);
    let bytesTransferred: number;
    if (await splitsOver(request, settings)) {
      bytesTransferred = await fetchParallel(request, budget, settings);
    } else {
      await budget.acquire(request.signal);
      try {
        bytesTransferred = await fetchSingleStream(request);
      } finally {
        budget.release();
      }
    }
    await store.blobs.commit(digest).catch(async (error: unknown) => {
      if (!isNoSpace(error)) throw error;
      throw await noSpaceError(store.root, { writing: request.filename, kept: size, cause: error });
    });
    onProgress?.({ type: "layer-done", digest, size, fromCache: false });
    return { fromCache: false, bytesTransferred };
  } finally {
    await lock.release();
  }
}

/**
 * A blob in the cache with a dead writer's files still beside it (killed between renaming the partial into place and
 * removing its .digest and lock): those files go, under the blob's lock. A live holder of the lock is left alone.
 */
async function tidyLeftovers(request: BlobRequest): Promise<void> {
  const { store, digest } = request;
  if (!(await store.blobs.hasLeftovers(digest))) return;
  await store.underBlobLock(digest, () => {
    request.logger.debug(`removing what an interrupted download left beside ${digest}`);
    return store.blobs.discardPartial(digest);
  });
}

/**
 * Whether the blob goes over several connections: at least 4 minimum parts, or a partial written that way before
 * (whatever the settings now, only the parallel path reads its state).
 */
async function splitsOver(request: BlobRequest, settings: Required<ParallelDownloadOptions>): Promise<boolean> {
  const hasState = await stat(request.store.blobs.partialStatePath(request.digest)).then(() => true, () => false);
  return hasState || (settings.maxConnections > 1 && request.size >= 4 * settings.minPartBytes);
}
