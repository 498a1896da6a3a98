/**
 * Puts local files and in-memory documents into the store's blobs/ as content-addressed blobs: a file is copied to
 * a temporary name in blobs/ while it is hashed (one read), or hard-linked there and then hashed, and renamed to
 * blobs/sha256/<hex> once its digest is known. A blob already present is kept and the copy dropped.
 */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { link, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { abortError, isAbort, LlamaOciError } from "../../errors.js";
import { sha256Digest } from "../name/index.js";
import { atomicWrite } from "./atomic-write.js";
import { fsyncDir, fsyncFile, mkdirDurable } from "./durable.js";
import { isNoSpace, noSpaceError } from "./free-space.js";
import { hashFile } from "./hashing.js";
import type { Store } from "./store.js";

export interface ImportedBlob {
  digest: string;
  size: number;
}

export interface ImportOptions {
  /** Hard-link the file into the store instead of copying it (falls back to a copy across file systems). */
  hardLink?: boolean;
  signal?: AbortSignal;
}

export async function importFileBlob(store: Store, path: string, options: ImportOptions = {}): Promise<ImportedBlob> {
  const info = await stat(path).catch((error: unknown) => {
    throw new LlamaOciError("INVALID_ARGUMENT", `cannot read ${path}: ${(error as Error).message}`, { cause: error });
  });
  if (!info.isFile()) throw new LlamaOciError("INVALID_ARGUMENT", `${path} is not a regular file`);

  const dir = store.layout.blobsDir("sha256");
  await mkdirDurable(dir);
  const temp = join(dir, `import-${process.pid}-${randomBytes(6).toString("hex")}.tmp`);
  try {
    const linked = options.hardLink === true && (await link(path, temp).then(() => true, () => false));
    const hex = linked ? (await hashFile(temp, "sha256", { signal: options.signal })).digest("hex") : await copyHashing(path, temp, options.signal);
    const digest = `sha256:${hex}`;
    const size = (await stat(temp)).size;
    if (size !== info.size) {
      throw new LlamaOciError("INVALID_ARGUMENT", `${path} changed while it was being added to the cache`, {
        hint: "run the command again once nothing writes to the file",
      });
    }
    await commit(store, temp, digest, size, options.signal);
    return { digest, size };
  } catch (error) {
    if (error instanceof LlamaOciError) throw error;
    if (isAbort(error)) throw abortError(options.signal);
    if (isNoSpace(error)) throw await noSpaceError(store.root, { needed: info.size, writing: path, cause: error });
    throw new LlamaOciError("CACHE", `cannot add ${path} to the cache (${store.root}): ${(error as Error).message}`, {
      hint: "check free disk space and permissions of the cache directory (--cache-dir / LLAMA_CACHE)",
      cause: error,
    });
  } finally {
    await rm(temp, { force: true });
  }
}

/** Stores a small document (a config blob) under its digest. */
export async function importBufferBlob(store: Store, data: Buffer): Promise<ImportedBlob> {
  const digest = sha256Digest(data);
  if (!(await store.blobs.has(digest, data.length))) await atomicWrite(store.blobs.path(digest), data);
  return { digest, size: data.length };
}

async function commit(store: Store, temp: string, digest: string, size: number, signal?: AbortSignal): Promise<void> {
  const lock = await store.lockBlob(digest, { signal });
  try {
    if (await store.blobs.has(digest, size)) return;
    const target = store.blobs.path(digest);
    await mkdirDurable(dirname(target));
    // Durable before it is named: a power cut must not leave a right-sized blob whose bytes never reached the disk.
    await fsyncFile(temp);
    await rename(temp, target);
    await fsyncDir(dirname(target));
  } finally {
    await lock.release();
  }
}

async function copyHashing(source: string, target: string, signal?: AbortSignal): Promise<string> {
  const hash = createHash("sha256");
  const hashing = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      callback(null, chunk);
    },
  });
  await pipeline(createReadStream(source, { highWaterMark: 1 << 20 }), hashing, createWriteStream(target, { flags: "wx" }), { signal });
  return hash.digest("hex");
}
