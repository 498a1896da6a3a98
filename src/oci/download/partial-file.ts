/**
 * The partial of a blob downloaded over several connections: <hex>.tmp written at any offset, <hex>.parts recording
 * which ranges of it are on disk (store/partial-state.ts), <hex>.digest naming the digest it must reach. Writes are
 * synchronous positional writes on the receiving thread (see store/batch-writer.ts for why), each followed by one
 * in-place rewrite of the state, so a crash or SIGKILL loses at most the batches in flight. Bytes already on disk
 * are never written again (a raced range arrives twice): what the hasher read back is what gets committed. A
 * background fdatasync runs every SYNC_EVERY_BYTES, as for single streams.
 */
import { closeSync, fdatasync, openSync, writeSync, writevSync } from "node:fs";
import { readFile, stat, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import type { ByteRange } from "../store/index.js";
import { atomicWrite, fsyncDir, isNoSpace, noSpaceError, readPartialState, serializePartialState } from "../store/index.js";
import { RangeSet } from "./ranges.js";
import { SYNC_EVERY_BYTES, type BlobRequest } from "./request.js";

export class PartialFile {
  readonly done: RangeSet;
  private readonly fd: number;
  private readonly stateFd: number;
  private stateLength = 0;
  private unsynced = 0;
  private syncing?: Promise<void>;
  private syncError?: Error;
  private closed = false;

  constructor(
    readonly path: string,
    statePath: string,
    private readonly digest: string,
    private readonly size: number,
    done: readonly ByteRange[],
    private readonly onWritten: () => void,
  ) {
    this.done = new RangeSet(done);
    this.fd = openSync(path, "r+");
    try {
      this.stateFd = openSync(statePath, "r+");
    } catch (error) {
      closeSync(this.fd);
      throw error;
    }
    this.stateLength = serializePartialState({ digest, size, done }).length;
  }

  /**
   * Writes `total` bytes of `buffers` at `position`, except the parts already on disk, and records them; throws what
   * the file system threw (nothing is recorded then).
   */
  write(position: number, buffers: Buffer[], total: number): void {
    if (this.syncError) throw this.syncError;
    const gaps = this.done.missing(position, position + total);
    if (gaps.length === 1 && gaps[0]![0] === position && gaps[0]![1] === position + total) {
      writeAt(this.fd, buffers, total, position);
    } else {
      for (const [start, end] of gaps) writeAt(this.fd, slice(buffers, start - position, end - start), end - start, start);
    }
    this.done.add(position, position + total);
    this.saveState();
    this.unsynced += total;
    this.syncSoon();
    this.onWritten();
  }

  /** Waits for a background fdatasync in flight, then closes the file and its state. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.syncing;
    closeSync(this.fd);
    closeSync(this.stateFd);
  }

  private saveState(): void {
    const text = serializePartialState({ digest: this.digest, size: this.size, done: this.done.list() });
    // Padded to the length it had, so that one write at offset 0 replaces it whole (JSON allows trailing spaces).
    const data = Buffer.from(text.padEnd(this.stateLength, " "));
    this.stateLength = Math.max(this.stateLength, text.length);
    let written = 0;
    while (written < data.length) written += writeSync(this.stateFd, data, written, data.length - written, written);
  }

  private syncSoon(): void {
    if (this.unsynced < SYNC_EVERY_BYTES || this.syncing !== undefined) return;
    this.unsynced = 0;
    this.syncing = new Promise((resolve) => {
      fdatasync(this.fd, (error) => {
        this.syncing = undefined;
        if (error) this.syncError ??= error;
        resolve();
      });
    });
  }
}

/** Opens (or starts) the partial of a parallel download: what is already on disk, and the file to write the rest to. */
export async function openPartialFile(request: BlobRequest, onWritten: () => void): Promise<PartialFile> {
  const { store, digest, size } = request;
  const partial = store.blobs.partialPath(digest);
  const statePath = store.blobs.partialStatePath(digest);
  const recorded = (await readFile(store.blobs.partialDigestPath(digest), "utf8").catch(() => "")).trim();
  const existing = await stat(partial).catch(() => undefined);
  let done: ByteRange[] | undefined;
  if (recorded === digest && existing?.isFile() && existing.size <= size) {
    const hasState = await stat(statePath).then(() => true, () => false);
    // No state: a single-stream partial, whose bytes are the blob's prefix. A state that does not parse: nothing is
    // known about the file, so it is not resumed.
    const ranges = hasState ? await readPartialState(statePath, digest, size) : [[0, existing.size] as const];
    // What the state claims past the end of the file is not there (the file was cut short): keep what is.
    done = ranges?.flatMap(([start, end]) => (start < existing.size ? [[start, Math.min(end, existing.size)] as const] : []));
  }
  try {
    if (done === undefined) {
      await store.blobs.discardPartial(digest);
      await writeFile(store.blobs.partialDigestPath(digest), `${digest}\n`);
      await writeFile(partial, "");
      done = [];
    }
    // The state is in place (and durable) before any byte is written away from the prefix: a .tmp without one would
    // read as a single-stream prefix, holes and all.
    await atomicWrite(statePath, serializePartialState({ digest, size, done }));
    await fsyncDir(dirname(partial));
    return new PartialFile(partial, statePath, digest, size, done, onWritten);
  } catch (error) {
    if (!isNoSpace(error)) throw error;
    throw await noSpaceError(store.root, { needed: size, writing: request.filename, cause: error });
  }
}

function writeAt(fd: number, buffers: Buffer[], total: number, position: number): void {
  let done = writevSync(fd, buffers, position);
  while (done < total) {
    // A short write (rare on regular files): send the rest.
    const rest = slice(buffers, done, total - done);
    const written = writevSync(fd, rest, position + done);
    if (written <= 0) throw new Error(`short write (${done} of ${total} bytes)`);
    done += written;
  }
}

/** `length` bytes of the concatenation of `buffers`, from `offset`, as views. */
function slice(buffers: Buffer[], offset: number, length: number): Buffer[] {
  const out: Buffer[] = [];
  let skip = offset;
  let left = length;
  for (const buffer of buffers) {
    if (left <= 0) break;
    if (skip >= buffer.length) {
      skip -= buffer.length;
      continue;
    }
    const piece = buffer.subarray(skip, skip + left);
    out.push(piece);
    left -= piece.length;
    skip = 0;
  }
  return out;
}
