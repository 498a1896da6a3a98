/**
 * Appends chunks to a file in batches of about a megabyte, with synchronous writes on the thread that received and
 * hashed them. Network reads arrive in 64 KiB pieces: one write each would cost a syscall per piece. Synchronous,
 * because those bytes are still in this core's cache; a threadpool write copies them into the page cache from
 * another core, which on a 2-core VM measured 5-10 times slower and was most of a download's CPU time. A 1 MiB
 * write holds the event loop for less time than hashing the same megabyte does.
 * A batch goes out when it is full, or at the latest `maxDelayMs` after its first byte arrived, so that a slow or
 * stalled connection still gets its bytes onto disk promptly.
 * With `syncEveryBytes`, an fdatasync runs on the threadpool each time that many more bytes were written: the data
 * then goes to the disk while the download goes on, instead of all at once in the fsync before the blob is renamed
 * into place (which for a large blob meant waiting, after the last byte, for the whole file to be written back).
 */
import { fdatasync, writevSync } from "node:fs";

export interface BatchWriterOptions {
  /** Write once this many bytes are queued. */
  batchBytes?: number;
  /** Write at the latest this long after the oldest queued byte arrived. */
  maxDelayMs?: number;
  /** Called after each write with the total bytes on disk. */
  onWritten?: (written: number) => void;
  /** Called once when a write fails; later chunks are dropped. */
  onError?: (error: unknown) => void;
  /** Start a background fdatasync each time this many more bytes are on disk (default: never). */
  syncEveryBytes?: number;
}

export class BatchWriter {
  /** Bytes on disk. */
  written = 0;
  private readonly batchBytes: number;
  private readonly maxDelayMs: number;
  private queue: Buffer[] = [];
  private queued = 0;
  private timer?: NodeJS.Timeout;
  private failure?: { error: unknown };
  private syncing?: Promise<void>;
  private unsynced = 0;

  constructor(
    private readonly fd: number,
    private readonly options: BatchWriterOptions = {},
  ) {
    this.batchBytes = options.batchBytes ?? 1 << 20;
    this.maxDelayMs = options.maxDelayMs ?? 10;
  }

  /** Bytes accepted but not yet on disk. */
  get pending(): number {
    return this.queued;
  }

  /** The error of the write that failed, if one did. */
  get error(): unknown {
    return this.failure?.error;
  }

  get failed(): boolean {
    return this.failure !== undefined;
  }

  /** Queues a chunk; the caller must not change it afterwards. */
  push(chunk: Buffer): void {
    if (this.failure || chunk.length === 0) return;
    this.queue.push(chunk);
    this.queued += chunk.length;
    if (this.queued >= this.batchBytes) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.maxDelayMs);
  }

  /** Writes everything queued now; returns whether all bytes pushed so far are on disk. */
  flush(): boolean {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.failure) return false;
    if (this.queued === 0) return true;
    const batch = this.queue;
    const total = this.queued;
    this.queue = [];
    this.queued = 0;
    try {
      writeAll(this.fd, batch, total);
    } catch (error) {
      this.failure = { error };
      this.options.onError?.(error);
      return false;
    }
    this.written += total;
    this.unsynced += total;
    this.options.onWritten?.(this.written);
    this.syncSoon();
    return true;
  }

  /** Waits for a background fdatasync in flight; call it before closing the file. */
  async settle(): Promise<void> {
    await this.syncing;
  }

  private syncSoon(): void {
    const every = this.options.syncEveryBytes;
    if (every === undefined || this.unsynced < every || this.syncing !== undefined) return;
    this.unsynced = 0;
    this.syncing = new Promise((resolve) => {
      fdatasync(this.fd, (error) => {
        this.syncing = undefined;
        if (error && !this.failure) {
          this.failure = { error };
          this.options.onError?.(error);
        }
        resolve();
      });
    });
  }
}

function writeAll(fd: number, buffers: Buffer[], total: number): void {
  let done = writevSync(fd, buffers);
  while (done < total) {
    // A short write (rare on regular files): send the rest.
    let skip = done;
    const rest: Buffer[] = [];
    for (const buffer of buffers) {
      if (skip >= buffer.length) {
        skip -= buffer.length;
        continue;
      }
      rest.push(skip > 0 ? buffer.subarray(skip) : buffer);
      skip = 0;
    }
    const written = writevSync(fd, rest);
    if (written <= 0) throw new Error(`short write (${done} of ${total} bytes)`);
    done += written;
  }
}
