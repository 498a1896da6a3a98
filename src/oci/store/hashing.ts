/**
 * Hashing files: the one helper that reads a file (or its first bytes) through a hash, 1 MiB at a time, used to
 * resume a partial download, re-verify a cached blob and import a local file.
 */
import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { pipeline } from "node:stream/promises";
import { parseDigest, type DigestAlgorithm } from "../name/index.js";

export interface HashFileOptions {
  /** Hash only the first `length` bytes (default: the whole file). */
  length?: number;
  /** Continue this hash instead of a new one. */
  hash?: Hash;
  signal?: AbortSignal;
}

/** The file's bytes fed through a hash (not yet finished, so the caller may continue it). */
export async function hashFile(path: string, algorithm: DigestAlgorithm, options: HashFileOptions = {}): Promise<Hash> {
  const hash = options.hash ?? createHash(algorithm);
  if (options.length === 0) return hash;
  const range = options.length === undefined ? {} : { start: 0, end: options.length - 1 };
  await pipeline(
    createReadStream(path, { ...range, highWaterMark: 1 << 20 }),
    async (source: AsyncIterable<Buffer>) => {
      for await (const chunk of source) hash.update(chunk);
    },
    { signal: options.signal },
  );
  return hash;
}

/** "<algorithm>:<hex>" of a whole file, with the algorithm of `like` (a digest it should match). */
export async function digestFile(path: string, like: string, signal?: AbortSignal): Promise<string> {
  const { algorithm } = parseDigest(like);
  return `${algorithm}:${(await hashFile(path, algorithm, { signal })).digest("hex")}`;
}
