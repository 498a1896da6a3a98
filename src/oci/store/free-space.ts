/**
 * Disk space: the bytes a pull still has to write into the cache, the free space of the cache's file system, and the
 * one-line error (code NO_SPACE) when one does not fit the other, before a download starts or when the disk fills
 * up during one.
 */
import { readFile, stat, statfs } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { LlamaOciError } from "../../errors.js";
import { readPartialState } from "./partial-state.js";
import type { Store } from "./store.js";

/** Whether an error is the file system saying it is full (or the user's quota is). */
export function isNoSpace(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === "ENOSPC" || code === "EDQUOT";
}

export interface FreeSpace {
  /** Bytes an unprivileged process may still write (statfs bavail × bsize). */
  free: number;
  /** The file system's block size: files take whole blocks. */
  blockSize: number;
}

/** Free space of the file system holding `path` (or its nearest existing ancestor, for a cache not yet created). */
export async function freeSpace(path: string): Promise<FreeSpace> {
  let at = resolve(path);
  for (;;) {
    try {
      const info = await statfs(at);
      return { free: info.bavail * info.bsize, blockSize: info.bsize };
    } catch (error) {
      const parent = dirname(at);
      if ((error as NodeJS.ErrnoException).code !== "ENOENT" || parent === at) throw error;
      at = parent;
    }
  }
}

export interface NoSpaceDetails {
  /** Bytes still needed, when known. */
  needed?: number;
  /** Free bytes, when already measured. */
  free?: number;
  /** What was being written: "model.gguf (sha256:…)", a path. */
  writing?: string;
  /** Bytes of a partial download kept for a later resume. */
  kept?: number;
  cause?: unknown;
}

/**
 * `not enough free space in <dir>: 12.6 MB needed, 3.2 MB free` (with what was being written, when known), code
 * NO_SPACE; the hint says what to do.
 */
export async function noSpaceError(dir: string, details: NoSpaceDetails = {}): Promise<LlamaOciError> {
  const free = details.free ?? (await freeSpace(dir).then((space) => space.free, () => undefined));
  const parts = [
    details.needed !== undefined ? `${formatBytes(details.needed)} needed` : undefined,
    free !== undefined ? `${formatBytes(free)} free` : undefined,
  ].filter((part) => part !== undefined);
  const writing = details.writing !== undefined ? ` writing ${details.writing}` : "";
  const message = `not enough free space in ${dir}${writing}${parts.length > 0 ? `: ${parts.join(", ")}` : ""}`;
  const hint =
    details.kept !== undefined
      ? `free some space, e.g. with llama-oci prune, and run the same pull again: it resumes from the ${formatBytes(details.kept)} already downloaded`
      : "free some space, e.g. with llama-oci prune, or use another cache directory (--cache-dir / LLAMA_CACHE)";
  return new LlamaOciError("NO_SPACE", message, { hint, cause: details.cause });
}

export interface BlobNeed {
  digest: string;
  size: number;
}

/**
 * Bytes still to be written for these blobs: the declared size of each one not in the cache, less what its partial
 * download already holds (a partial that would be resumed: its .digest names the same digest), rounded up to whole
 * blocks. Each digest counts once.
 */
export async function missingBytes(store: Store, files: readonly BlobNeed[], blockSize = 1): Promise<number> {
  const seen = new Set<string>();
  let total = 0;
  for (const file of files) {
    if (seen.has(file.digest)) continue;
    seen.add(file.digest);
    if (await store.blobs.has(file.digest, file.size)) continue;
    const remaining = file.size - (await partialBytes(store, file));
    total += Math.ceil(remaining / blockSize) * blockSize;
  }
  return total;
}

/**
 * Throws NO_SPACE when the blobs of `files` that are not yet in the cache (less the bytes already in their partial
 * downloads) do not fit in the free space of the cache's file system. Call it once the manifest is known and before
 * any blob is downloaded.
 */
export async function assertFreeSpace(store: Store, files: readonly BlobNeed[]): Promise<void> {
  const space = await freeSpace(store.root);
  const needed = await missingBytes(store, files, space.blockSize);
  if (needed > space.free) throw await noSpaceError(store.root, { needed, free: space.free });
}

async function partialBytes(store: Store, file: BlobNeed): Promise<number> {
  const recorded = (await readFile(store.blobs.partialDigestPath(file.digest), "utf8").catch(() => "")).trim();
  if (recorded !== file.digest) return 0;
  const info = await stat(store.blobs.partialPath(file.digest)).catch(() => undefined);
  if (!info?.isFile() || info.size > file.size) return 0;
  // Written over several connections: the file is sparse, and only its done ranges are held (none if not valid).
  const statePath = store.blobs.partialStatePath(file.digest);
  const hasState = await stat(statePath).then(() => true, () => false);
  if (!hasState) return info.size;
  const done = await readPartialState(statePath, file.digest, file.size);
  return (done ?? []).reduce((sum, [start, end]) => sum + Math.min(end, info.size) - Math.min(start, info.size), 0);
}

/** Decimal units as `docker images` and `llama-oci ls` print them: "999 B", "12.6 MB", "1.23 GB". */
export function formatBytes(bytes: number): string {
  const units = ["B", "kB", "MB", "GB", "TB", "PB"];
  let value = bytes;
  let unit = 0;
  while (unit < units.length - 1 && Number(value.toPrecision(3)) >= 1000) {
    value /= 1000;
    unit++;
  }
  return `${unit === 0 ? Math.round(value) : Number(value.toPrecision(3))} ${units[unit] ?? ""}`;
}
