/**
 * The per-part state of a partial download written at several offsets at once (blobs/<alg>/<hex>.parts, beside the
 * <hex>.tmp it describes and the <hex>.digest it must reach): which byte ranges of the .tmp hold the blob's bytes.
 * One line of JSON, `{"version":1,"digest":"sha256:…","size":N,"done":[[start,end],…]}` with half-open, sorted,
 * disjoint ranges, rewritten in place after every batch that reaches the file (so a crash loses at most the batches
 * in flight) and padded with spaces to the length it had, so that a rewrite is one write at offset 0. A .tmp without
 * a .parts file is a single-stream partial: its first `size` bytes are the blob's prefix.
 */
import { readFile } from "node:fs/promises";

export const PARTIAL_STATE_VERSION = 1;

/** Half-open byte ranges [start, end). */
export type ByteRange = readonly [number, number];

export interface PartialState {
  digest: string;
  size: number;
  done: readonly ByteRange[];
}

export function serializePartialState(state: PartialState): string {
  return JSON.stringify({ version: PARTIAL_STATE_VERSION, digest: state.digest, size: state.size, done: state.done });
}

/**
 * The done ranges of a state file's text, when it describes this digest and size and is well formed (sorted, disjoint,
 * non-empty ranges inside the blob); undefined otherwise, and the partial is then not to be trusted.
 */
export function parsePartialState(text: string, digest: string, size: number): ByteRange[] | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null) return undefined;
  const { version, digest: recorded, size: recordedSize, done } = value as Record<string, unknown>;
  if (version !== PARTIAL_STATE_VERSION || recorded !== digest || recordedSize !== size || !Array.isArray(done)) return undefined;
  const ranges: ByteRange[] = [];
  let last = 0;
  for (const range of done as unknown[]) {
    if (!Array.isArray(range) || range.length !== 2) return undefined;
    const [start, end] = range as unknown[];
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end)) return undefined;
    const [a, b] = [start as number, end as number];
    if (a < last || b <= a || b > size) return undefined;
    ranges.push([a, b]);
    last = b;
  }
  return ranges;
}

/** The state file at `path` for this digest and size: its done ranges, or undefined when absent or not valid. */
export async function readPartialState(path: string, digest: string, size: number): Promise<ByteRange[] | undefined> {
  const text = await readFile(path, "utf8").catch(() => undefined);
  return text === undefined ? undefined : parsePartialState(text, digest, size);
}
