/**
 * One large blob over several connections, each fetching a range into its place in the partial file:
 * - The missing ranges are cut into parts (a connection's request); a few connections start, and more are added,
 *   doubling, while the blob's aggregate rate still grows with them (up to the pull's budget); when adding them
 *   gained nothing, the extra ones finish their part and stop, so a link one connection fills is not split for nothing.
 * - A connection out of parts takes the tail of the part with the most time left (split where both should finish
 *   together, by their rates); a slow part too small to split is raced on a fresh connection, and whichever copy
 *   arrives first wins. The last percent does not wait for one slow connection.
 * - A server or CDN that answers 200 to a Range request gets one stream from byte 0 (bytes already on disk are not
 *   written again); a 416 the same, without Range.
 * - Each part retries on its own with the shared policy (attempts without progress, backoff, Retry-After, stall
 *   timeouts), resuming where it stopped; a signed CDN URL that starts answering 401/403 is resolved again through
 *   the registry (source.ts).
 * - The digest is computed in order over the contiguous prefix on a worker thread while the rest arrives
 *   (hasher.ts); the caller gets the bytes received once size and digest matched.
 */
import { LlamaOciError, abortError } from "../../errors.js";
import { parseDigest } from "../name/index.js";
import { contentRangeStart } from "../remote/index.js";
import { isNoSpace, noSpaceError } from "../store/index.js";
import {
  backoffMs,
  delay,
  describeNetworkError,
  headerValue,
  isRetryableStatus,
  isTransientNetworkError,
  retryAfterMs,
  retryPolicy,
  type HttpHeaders,
  type HttpResponse,
  type RetryPolicy,
} from "../transport/index.js";
import type { ConnectionBudget } from "./budget.js";
import { PrefixHasher } from "./hasher.js";
import { openPartialFile, type PartialFile } from "./partial-file.js";
import { PROGRESS_INTERVAL_MS, type BlobRequest, type ParallelDownloadOptions } from "./request.js";
import { BlobSource } from "./source.js";

/** A part is written in batches of this many bytes (or after BATCH_DELAY_MS). */
const BATCH_BYTES = 1 << 20;
const BATCH_DELAY_MS = 10;
/** The largest part asked for in one request. */
const MAX_PART_BYTES = 64 << 20;
/** How often rates are measured and connections added. */
const TICK_MS = 50;
/** A part this many times slower than the median, for STRAGGLER_AFTER_MS, is asked again on another connection. */
const STRAGGLER_RATIO = 8;
const STRAGGLER_AFTER_MS = 1000;
const MAX_RESTARTS = 2;
/** How many completed parts' rates are remembered. */
const DONE_RATES = 8;
/** A part's rate is smoothed over about this long. */
const RATE_TAU_S = 0.5;
/** A part's rate is first measured this long after its first byte. */
const RATE_SETTLE_MS = 250;
/** The window over which the aggregate rate with a number of connections is measured. */
const RAMP_WINDOW_MS = 300;
/** After adding connections gained nothing, how long until it tries again (doubling each time). */
const RAMP_RETRY_MS = 4000;
/** No connections are added when the rest of the blob would arrive within this many seconds at the current rate. */
const RAMP_MIN_REST_S = 1;

interface Task {
  /** Next byte to receive. */
  pos: number;
  /** End (exclusive); moves down when another connection takes the tail. */
  end: number;
  /** The task racing this one for the same bytes, or the one this one races. */
  twin?: Task;
  cancelled: boolean;
  readonly abort: AbortController;
  readonly signal: AbortSignal;
  body?: HttpResponse["body"];
  received: number;
  /** Bytes/s, smoothed; undefined until its first byte. */
  rate?: number;
  firstByteAt?: number;
  /** When its current request was sent. */
  requestedAt?: number;
  /** Its connection is being dropped for being far slower than the others: ask again on another one. */
  restarting?: boolean;
  restarts: number;
  lastTickBytes: number;
  lastTickAt: number;
}

type RangeOutcome = { kind: "body"; response: HttpResponse; bodyStart: number } | { kind: "retry"; delayMs?: number; reason: string };

export async function fetchParallel(request: BlobRequest, budget: ConnectionBudget, options: Required<ParallelDownloadOptions>): Promise<number> {
  return new ParallelDownload(request, budget, options).run();
}

class ParallelDownload {
  private readonly policy: RetryPolicy;
  private readonly source: BlobSource;
  private readonly internal = new AbortController();
  /** The user's signal and the download's own (a failing part stops the others). */
  private readonly signal: AbortSignal;
  private readonly minStealBytes: number;
  private file!: PartialFile;
  private hasher?: PrefixHasher;
  private queue: [number, number][] = [];
  private readonly tasks = new Set<Task>();
  private lanes = 0;
  /** Connections wanted now. */
  private level: number;
  private failure?: { error: unknown };
  /** The server ignores Range: one stream from byte 0. */
  private single = false;
  /** After a 416: ask without Range. */
  private noRange = false;
  private received = 0;
  /** The rates of the last parts that completed. */
  private doneRates: number[] = [];
  private latencyMs = 50;
  private lastProgress = 0;
  private settle?: { resolve: () => void; reject: (error: unknown) => void };
  private ramp: {
    /** The current window may not open before this (the connections just added get their first bytes first). */
    openAt?: number;
    /** When the current window opened: the tick at which windowBytes was read. */
    windowAt?: number;
    windowBytes: number;
    /** The last doubling, to be judged by the window after it. */
    step?: { from: number; to: number; rate: number };
    /** Times it went back for want of a gain: each waits twice as long before it tries again. */
    backoffs: number;
    done: boolean;
  } = { windowBytes: 0, backoffs: 0, done: false };

  constructor(
    private readonly request: BlobRequest,
    private readonly budget: ConnectionBudget,
    private readonly options: Required<ParallelDownloadOptions>,
  ) {
    this.policy = retryPolicy(request.retry);
    this.source = new BlobSource(request);
    this.signal = request.signal ? AbortSignal.any([request.signal, this.internal.signal]) : this.internal.signal;
    this.minStealBytes = Math.max(256 << 10, Math.floor(options.minPartBytes / 8));
    this.level = Math.min(options.initialConnections, options.maxConnections);
  }

  async run(): Promise<number> {
    const { request } = this;
    const { digest, size, onProgress, logger } = request;
    this.file = await openPartialFile(request, () => this.written());
    const resumeFrom = this.file.done.total;
    onProgress?.({ type: "layer-start", digest, size, filename: request.filename, resumeFrom });
    if (resumeFrom > 0) logger.debug(`resuming ${digest}: ${resumeFrom} bytes in ${this.file.done.list().length} range(s) on disk`);
    const hasher = new PrefixHasher(this.file.path, parseDigest(digest).algorithm, size);
    this.hasher = hasher;
    try {
      hasher.advance(this.file.done.prefix());
      try {
        if (this.file.done.total < size) await this.transfer();
      } catch (error) {
        // The registry sent more than the manifest says: what it sent is not the blob.
        if (error instanceof LlamaOciError && error.code === "SIZE_MISMATCH") await this.file.close().then(() => request.store.blobs.discardPartial(digest));
        throw error;
      } finally {
        await this.file.close();
      }
      onProgress?.({ type: "verifying", digest, size });
      await this.verify(hasher);
    } finally {
      await hasher.close();
    }
    return this.received;
  }

  private async verify(hasher: PrefixHasher): Promise<void> {
    const { store, digest, size, filename } = this.request;
    if (this.file.done.total !== size) throw new LlamaOciError("SIZE_MISMATCH", `${filename}: received ${this.file.done.total} bytes, the manifest says ${size}`);
    const actual = await hasher.digest().catch((error: unknown) => {
      throw new LlamaOciError("CACHE", `cannot read back ${this.file.path} to verify it: ${(error as Error).message}`, {
        hint: "check the cache directory (--cache-dir / LLAMA_CACHE) and run the same pull again",
        cause: error,
      });
    });
    if (actual !== digest) {
      await store.blobs.discardPartial(digest);
      throw new LlamaOciError("DIGEST_MISMATCH", `${filename}: content digest ${actual} does not match ${digest}`, {
        hint: "the download was corrupted in transit or the registry is serving bad data; nothing was cached, try again",
      });
    }
  }

  /** Runs connections until every byte is on disk, or the first failure (once every connection has stopped). */
  private async transfer(): Promise<void> {
    this.queue = this.plan();
    this.level = Math.min(this.level, Math.max(1, this.queue.length));
    await this.budget.acquire(this.request.signal);
    const finished = new Promise<void>((resolve, reject) => (this.settle = { resolve, reject }));
    const timer = setInterval(() => this.tick(), TICK_MS);
    try {
      this.startLane();
      this.fill();
      await finished;
    } finally {
      clearInterval(timer);
    }
  }

  /** The missing ranges, cut into parts of about minPartBytes, at most MAX_PART_BYTES, twice as many as connections. */
  private plan(): [number, number][] {
    const gaps = this.file.done.missing(0, this.request.size);
    const missing = gaps.reduce((sum, [a, b]) => sum + b - a, 0);
    const { minPartBytes, maxConnections } = this.options;
    const part = Math.min(MAX_PART_BYTES, Math.max(minPartBytes, Math.ceil(missing / (2 * maxConnections))));
    const parts: [number, number][] = [];
    for (const [start, end] of gaps) {
      const count = Math.max(1, Math.round((end - start) / part));
      for (let i = 0; i < count; i++) {
        parts.push([start + Math.floor(((end - start) * i) / count), start + Math.floor(((end - start) * (i + 1)) / count)]);
      }
    }
    return parts;
  }

  /** Starts connections up to the level wanted, while there is work for them and the pull has some free. */
  private fill(): void {
    while (!this.failure && !this.single && this.lanes < this.level && this.hasWork() && this.budget.tryAcquire()) this.startLane();
  }

  /** One connection (its budget slot already taken): parts one after the other until there is nothing left. */
  private startLane(): void {
    this.lanes++;
    const run = async () => {
      for (let task = this.nextTask(); task; task = this.nextTask()) {
        try {
          await this.fetchTask(task);
        } finally {
          this.tasks.delete(task);
          // What the connections did lately: a lone part left at the end is judged against them. A part done before
          // its rate was first measured (a fast link) counts with its average from its first byte.
          const rate = task.rate ?? averageRate(task);
          if (rate !== undefined && !task.cancelled) this.doneRates = [...this.doneRates.slice(-(DONE_RATES - 1)), rate];
        }
        // Its bytes are on disk: the copy racing it has nothing left to bring.
        if (task.pos >= task.end && task.twin) this.cancel(task.twin);
      }
    };
    void run().then(
      () => this.laneEnded(),
      (error: unknown) => {
        this.fail(error);
        this.laneEnded();
      },
    );
  }

  private laneEnded(): void {
    this.lanes--;
    this.budget.release();
    if (this.lanes > 0) return;
    if (this.failure) return this.settle?.reject(this.failure.error);
    if (this.file.done.total >= this.request.size) return this.settle?.resolve();
    // Bytes missing and no connection left (each stopped for want of work a moment ago): start one again.
    this.budget.acquire(this.signal).then(
      () => this.startLane(),
      (error: unknown) => this.settle?.reject(this.request.signal?.aborted ? abortError(this.request.signal) : error),
    );
  }

  private fail(error: unknown): void {
    if (this.failure) return;
    this.failure = { error };
    this.queue = [];
    for (const task of this.tasks) this.cancel(task);
    this.internal.abort();
  }

  private cancel(task: Task): void {
    task.cancelled = true;
    task.abort.abort();
    task.body?.destroy();
  }

  private hasWork(): boolean {
    return this.queue.some(([start, end]) => !this.file.done.covers(start, end)) || this.steal(true) !== undefined;
  }

  private nextTask(): Task | undefined {
    if (this.failure || this.single || this.file.done.total >= this.request.size) return undefined;
    // More connections than wanted (adding them gained nothing): this one stops.
    if (this.lanes > this.level) return undefined;
    while (this.queue.length > 0) {
      const [start, end] = this.queue.shift()!;
      const gaps = this.file.done.missing(start, end);
      if (gaps.length === 0) continue;
      this.queue.unshift(...gaps.slice(1));
      return this.newTask(gaps[0]![0], gaps[0]![1]);
    }
    return this.steal(false);
  }

  private newTask(pos: number, end: number): Task {
    const abort = new AbortController();
    const task: Task = {
      pos,
      end,
      cancelled: false,
      abort,
      signal: AbortSignal.any([this.signal, abort.signal]),
      received: 0,
      restarts: 0,
      lastTickBytes: 0,
      lastTickAt: performance.now(),
    };
    this.tasks.add(task);
    return task;
  }

  /** A median of the parts' rates, those running and the last ones done, or undefined before any was measured. */
  private typicalRate(): number | undefined {
    const rates = [...this.tasks].flatMap((t) => (t.rate !== undefined && t.rate > 0 ? [t.rate] : []));
    rates.push(...this.doneRates);
    rates.sort((a, b) => a - b);
    return rates.length > 0 ? rates[Math.floor(rates.length / 2)] : undefined;
  }

  /**
   * Work for an idle connection from the part with the most time left: its tail, split so that both should finish
   * together; or, when too small to split and much slower than the others, the same bytes raced. `dryRun` only
   * says whether there is such work.
   */
  private steal(dryRun: boolean): Task | undefined {
    if (this.single) return undefined;
    const typical = this.typicalRate();
    if (typical === undefined) return undefined;
    let victim: Task | undefined;
    let victimSeconds = 0;
    for (const task of this.tasks) {
      if (task.cancelled || task.twin) continue;
      const remaining = task.end - task.pos;
      if (remaining <= 0) continue;
      const rate = task.rate ?? typical;
      const seconds = rate > 0 ? remaining / rate : Number.POSITIVE_INFINITY;
      if (seconds > victimSeconds) {
        victim = task;
        victimSeconds = seconds;
      }
    }
    if (!victim) return undefined;
    // Not worth a new request when it ends about as soon as a new request would get its first byte.
    const requestSeconds = (2 * this.latencyMs + 50) / 1000;
    if (victimSeconds <= 2 * requestSeconds) return undefined;
    const remaining = victim.end - victim.pos;
    const victimRate = victim.rate ?? typical;
    if (remaining >= 2 * this.minStealBytes) {
      if (dryRun) return victim;
      const share = typical / (typical + victimRate);
      const cut = Math.min(remaining - this.minStealBytes, Math.max(this.minStealBytes, Math.round(remaining * share)));
      const start = victim.end - cut;
      const task = this.newTask(start, victim.end);
      victim.end = start;
      this.request.logger.debug(`${this.request.digest}: bytes ${start}-${task.end - 1} taken over from a part at ${Math.round(victimRate / 1e3)} kB/s`);
      return task;
    }
    if (victimRate * 4 > typical) return undefined;
    if (dryRun) return victim;
    const racer = this.newTask(victim.pos, victim.end);
    racer.twin = victim;
    victim.twin = racer;
    this.request.logger.debug(`${this.request.digest}: racing bytes ${victim.pos}-${victim.end - 1} of a part at ${Math.round(victimRate / 1e3)} kB/s`);
    return racer;
  }

  /** One part, retried on its own: resumes where it stopped, gives up after policy.attempts in a row without progress. */
  private async fetchTask(task: Task): Promise<void> {
    const { request, policy } = this;
    let failures = 0;
    while (!this.stopped(task) && task.pos < task.end) {
      const from = task.pos;
      let wait: number | undefined;
      let reason = "";
      let ended = false;
      try {
        const outcome = await this.requestRange(task, failures);
        if (outcome.kind === "retry") {
          wait = outcome.delayMs;
          reason = outcome.reason;
        } else {
          await this.readBody(task, outcome.response, outcome.bodyStart);
          ended = true;
        }
        if (task.restarting) {
          task.restarting = false;
          task.rate = task.firstByteAt = undefined;
          continue;
        }
      } catch (error) {
        if (this.stopped(task)) return;
        if (request.signal?.aborted) throw abortError(request.signal);
        if (error instanceof LlamaOciError && error.code !== "NETWORK") throw error;
        if (!isTransientNetworkError(error)) throw error;
        reason = describeNetworkError(error);
      }
      if (this.stopped(task) || task.pos >= task.end) return;
      if (task.pos > from) {
        failures = 0;
        // The server sent a shorter range than asked for: ask for the rest at once.
        if (ended) continue;
      }
      failures++;
      if (failures >= policy.attempts) {
        throw new LlamaOciError("NETWORK", `download of ${request.filename} (${request.digest}) failed after ${failures} attempts: ${reason}`, {
          hint: "run the same pull again: it resumes from the bytes already downloaded",
        });
      }
      const delayMs = wait ?? backoffMs(policy, failures);
      request.logger.debug(`retrying bytes ${task.pos}-${task.end - 1} of ${request.digest} in ${delayMs} ms (attempt ${failures + 1}/${policy.attempts}): ${reason}`);
      request.onProgress?.({ type: "layer-retry", digest: request.digest, attempt: failures + 1, maxAttempts: policy.attempts, delayMs, reason });
      try {
        await delay(delayMs, task.signal);
      } catch (error) {
        if (this.stopped(task)) return;
        throw request.signal?.aborted ? abortError(request.signal) : error;
      }
    }
  }

  private stopped(task: Task): boolean {
    return task.cancelled || this.failure !== undefined;
  }

  private async requestRange(task: Task, failures: number): Promise<RangeOutcome> {
    const { request } = this;
    const { size, digest } = request;
    const from = task.pos;
    const headers: HttpHeaders = {};
    if (!this.noRange && (!this.single || from > 0)) headers.range = `bytes=${from}-${(this.single ? size : task.end) - 1}`;
    const started = performance.now();
    task.requestedAt = started;
    const { response, viaLocation } = await this.source.open(headers, task.signal);
    this.latencyMs = 0.7 * this.latencyMs + 0.3 * (performance.now() - started);
    const status = response.status;
    if (status === 206) {
      const start = contentRangeStart(headerValue(response.headers, "content-range"));
      if (start === from) return { kind: "body", response, bodyStart: from };
      response.body.destroy();
      return { kind: "retry", reason: `the server answered bytes from ${start ?? "?"} to a request from ${from}` };
    }
    if (status === 200) {
      if (headers.range !== undefined && !this.single) {
        request.logger.debug(`${digest}: the server ignored the range (HTTP 200); one stream from byte 0`);
        this.goSingle(task);
      }
      return { kind: "body", response, bodyStart: 0 };
    }
    if (status === 416) {
      // Not read: registry 2.8 sends a Content-Length longer than its 416 body.
      response.body.destroy();
      request.logger.debug(`${digest}: the server refused the range (HTTP 416); one stream from byte 0, without Range`);
      this.goSingle(task);
      this.noRange = true;
      return { kind: "retry", reason: "HTTP 416" };
    }
    if ((status === 401 || status === 403) && viaLocation !== undefined) {
      await response.body.dump().catch(() => {});
      this.source.expire(viaLocation);
      return {
        kind: "retry",
        delayMs: failures === 0 ? 0 : undefined,
        reason: `HTTP ${status} from ${new URL(viaLocation).host} (an expired URL?); asking ${request.client.registry} again`,
      };
    }
    if (isRetryableStatus(status)) {
      const after = retryAfterMs(response);
      if (after !== undefined && after > this.policy.maxRetryAfterMs) throw await request.client.error(response, `blob ${digest}`);
      await response.body.dump().catch(() => {});
      return { kind: "retry", delayMs: after, reason: `HTTP ${status}` };
    }
    throw await request.client.error(response, `blob ${digest}`);
  }

  /** One stream from byte 0 instead of parts: the other parts stop (what they wrote stays). */
  private goSingle(task: Task): void {
    this.single = true;
    this.queue = [];
    for (const other of this.tasks) if (other !== task) this.cancel(other);
    if (task.twin) task.twin = undefined;
    task.pos = this.file.done.prefix();
    task.end = this.request.size;
  }

  /**
   * Writes a response body at its offsets until the task's end (which may move down meanwhile); bytes before the
   * task's position (a 200 from byte 0) are skipped. Every byte received is on disk, or the file failed, when this
   * settles.
   */
  private readBody(task: Task, response: HttpResponse, bodyStart: number): Promise<void> {
    const { size } = this.request;
    const body = response.body;
    task.body = body;
    const batch = new Batch(this.file);
    const bodyEnd = bodyStart + (Number(headerValue(response.headers, "content-length")) || size);
    let at = bodyStart;
    let stopped = false;
    let tooLong = false;
    let writeError: { error: unknown } | undefined;
    return new Promise<void>((resolve, reject) => {
      const stop = () => {
        stopped = true;
        body.destroy();
      };
      let settled = false;
      const done = (error?: Error) => {
        if (settled) return;
        settled = true;
        try {
          batch.flush();
        } catch (flushError) {
          writeError ??= { error: flushError };
        }
        writeError ??= batch.failure;
        task.body = undefined;
        if (writeError) void this.writeFailure(writeError.error).then(reject);
        else if (tooLong) reject(this.tooLong());
        else if (error !== undefined && !stopped && !task.cancelled && !task.restarting) reject(error);
        else resolve();
      };
      batch.onError = stop;
      body.on("data", (chunk: Buffer) => {
        if (stopped) return;
        const chunkStart = at;
        at += chunk.length;
        this.received += chunk.length;
        task.received += chunk.length;
        task.firstByteAt ??= performance.now();
        if (at > size) {
          tooLong = true;
          return stop();
        }
        const from = Math.max(chunkStart, task.pos);
        const to = Math.min(at, task.end);
        if (to > from) {
          try {
            batch.push(from, from === chunkStart && to === at ? chunk : chunk.subarray(from - chunkStart, to - chunkStart));
          } catch (error) {
            writeError = { error };
            return stop();
          }
          task.pos = to;
        }
        // Done with this body: the rest of it is not wanted. Not when it ends here anyway, which keeps the
        // connection alive for the next part.
        if (task.cancelled || (task.pos >= task.end && at < bodyEnd)) stop();
      });
      body.once("end", () => done());
      body.once("error", (error: Error) => done(error));
      body.once("close", () => {
        // Destroyed without an error (by stop() or a cancel): 'end' never comes.
        if (!body.readableEnded) done();
      });
    }).finally(() => batch.dispose());
  }

  /** A disk failure, not a network one: retrying would not help. What was recorded stays for a later resume. */
  private async writeFailure(error: unknown): Promise<Error> {
    if (error instanceof LlamaOciError) return error;
    const { request } = this;
    const kept = this.file.done.total;
    if (isNoSpace(error)) return noSpaceError(request.store.root, { needed: request.size - kept, writing: request.filename, kept, cause: error });
    return new LlamaOciError("CACHE", `cannot write ${this.file.path}: ${(error as Error).message}`, {
      hint: "check free disk space and permissions of the cache directory (--cache-dir / LLAMA_CACHE)",
      cause: error,
    });
  }

  private tooLong(): Error {
    const { request } = this;
    return new LlamaOciError("SIZE_MISMATCH", `${request.filename}: the registry sent more than the ${request.size} bytes the manifest says`, {
      hint: "the registry served different content than its manifest describes; nothing was cached",
    });
  }

  /** After each batch on disk: the hasher's prefix, and progress at most every PROGRESS_INTERVAL_MS. */
  private written(): void {
    const { done } = this.file;
    const { digest, size, onProgress } = this.request;
    this.hasher?.advance(done.prefix());
    const now = Date.now();
    if (onProgress && (now - this.lastProgress >= PROGRESS_INTERVAL_MS || done.total === size)) {
      this.lastProgress = now;
      onProgress({ type: "layer-progress", digest, size, completed: done.total });
    }
  }

  /** Every TICK_MS: each part's rate, connections added while the aggregate rate grows, idle ones put back to work. */
  private tick(): void {
    if (this.failure) return;
    const now = performance.now();
    for (const task of this.tasks) {
      if (task.firstByteAt === undefined) {
        // No byte (not even the headers) for a good while since it asked: it counts as a part at 0 bytes/s, so that
        // idle connections split and race it as any slow part.
        if (task.requestedAt !== undefined && now - task.requestedAt >= STRAGGLER_AFTER_MS) {
          task.firstByteAt = task.requestedAt;
          task.rate = 0;
          task.lastTickBytes = task.received;
          task.lastTickAt = now;
        }
        continue;
      }
      if (task.rate === undefined) {
        // Measured from its first byte over at least RATE_SETTLE_MS, so that a burst at the start is not taken for
        // its pace; until then it counts as a typical part.
        const age = now - task.firstByteAt;
        if (age < RATE_SETTLE_MS) continue;
        task.rate = task.received / (age / 1000);
      } else {
        const seconds = (now - task.lastTickAt) / 1000;
        if (seconds <= 0) continue;
        // Smoothed over about RATE_TAU_S, however often the ticks come.
        const weight = 1 - Math.exp(-seconds / RATE_TAU_S);
        task.rate += weight * ((task.received - task.lastTickBytes) / seconds - task.rate);
      }
      task.lastTickBytes = task.received;
      task.lastTickAt = now;
    }
    this.dropStragglers(now);
    this.rampUp(now);
    this.fill();
  }

  /**
   * A part far slower than the others for a while (one bad connection) is asked for again on another connection,
   * from where it stopped, a couple of times at most; near the end, idle connections split and race it instead.
   */
  private dropStragglers(now: number): void {
    if (this.single) return;
    const typical = this.typicalRate();
    if (typical === undefined) return;
    for (const task of this.tasks) {
      if (task.twin || task.cancelled || task.restarting || task.rate === undefined || task.firstByteAt === undefined) continue;
      if (task.rate * STRAGGLER_RATIO >= typical || now - task.firstByteAt < STRAGGLER_AFTER_MS) continue;
      if (task.restarts >= MAX_RESTARTS || task.end - task.pos < this.minStealBytes || !task.body) continue;
      task.restarts++;
      task.restarting = true;
      this.request.logger.debug(
        `${this.request.digest}: bytes ${task.pos}-${task.end - 1} at ${Math.round(task.rate / 1e3)} kB/s, the others ${Math.round(typical / 1e3)} kB/s; asking again on another connection`,
      );
      task.body.destroy();
    }
  }

  /**
   * Doubles the connections while the aggregate rate grows with them: each window of RAMP_WINDOW_MS (after the added
   * ones had time for a first byte) is compared with the one before. Added connections that gained nearly nothing
   * stop after their part; a gain well short of proportional keeps them but adds no more for now. Either way it tries
   * again after RAMP_RETRY_MS, twice as long each time (one window can be misled by a straggler or a busy CPU). Not
   * worth it when the rest would arrive within about a second anyway.
   */
  private rampUp(now: number): void {
    const ramp = this.ramp;
    if (ramp.done || this.single) return;
    // Connections above the level (after going back) finish their parts first: the window is for the level's.
    if (ramp.windowAt === undefined || (ramp.openAt !== undefined && now < ramp.openAt) || this.lanes > this.level) {
      // The first window opens with the first byte; a later one once the connections just added had time for theirs.
      // Either way it opens at a tick, with the bytes received by then: time and bytes are counted from the same moment.
      if (this.received === 0) return;
      ramp.windowAt = now;
      ramp.windowBytes = this.received;
      return;
    }
    if (now - ramp.windowAt < RAMP_WINDOW_MS) return;
    const rate = (this.received - ramp.windowBytes) / ((now - ramp.windowAt) / 1000);
    const { logger, digest, size } = this.request;
    const step = ramp.step;
    ramp.step = undefined;
    if (step) {
      const gain = rate / step.rate;
      const proportional = (step.to - step.from) / step.from;
      if (gain < 1 + 0.15 * proportional) {
        // Nothing gained: back to as many as before (the extra ones stop after their part). One window can be
        // misled (a straggler dropped in it, a busy CPU): try again later, waiting twice as long each time.
        const retryMs = RAMP_RETRY_MS * 2 ** ramp.backoffs++;
        logger.debug(`${digest}: ${step.to} connections ${mbps(rate)} vs ${step.from} ${mbps(step.rate)}; back to ${step.from}, again in ${retryMs / 1000} s`);
        this.level = step.from;
        ramp.openAt = now + retryMs;
        ramp.windowAt = now;
        ramp.windowBytes = this.received;
        return;
      }
      if (gain < 1 + 0.5 * proportional) {
        // Some gain, well short of proportional: keep them, and see later whether more would still help.
        const retryMs = RAMP_RETRY_MS * 2 ** ramp.backoffs++;
        logger.debug(`${digest}: ${step.to} connections ${mbps(rate)} vs ${step.from} ${mbps(step.rate)}; staying at ${step.to}, more in ${retryMs / 1000} s`);
        ramp.openAt = now + retryMs;
        ramp.windowAt = now;
        ramp.windowBytes = this.received;
        return;
      }
    }
    const remaining = size - this.file.done.total;
    if (this.lanes >= this.options.maxConnections || remaining < rate * RAMP_MIN_REST_S) {
      ramp.done = true;
      return;
    }
    const before = this.lanes;
    this.level = Math.min(this.options.maxConnections, Math.max(1, before) * 2);
    this.fill();
    if (this.lanes > before) {
      logger.debug(`${digest}: ${mbps(rate)} over ${before} connection(s); trying ${this.lanes}`);
      ramp.step = { from: before, to: this.lanes, rate };
      // The next window opens once the new connections had time for their first bytes.
      ramp.openAt = now + Math.max(100, 3 * this.latencyMs);
    } else {
      // None free in the pull's budget, or no work to give them: try again next window.
      this.level = Math.max(before, 1);
      ramp.openAt = undefined;
    }
    ramp.windowAt = now;
    ramp.windowBytes = this.received;
  }
}

/** A part's bytes per second from its first byte until now, or undefined before its first byte. */
function averageRate(task: Task): number | undefined {
  if (task.firstByteAt === undefined || task.received === 0) return undefined;
  return task.received / (Math.max(1, performance.now() - task.firstByteAt) / 1000);
}

function mbps(rate: number): string {
  return `${(rate / 1e6).toFixed(1)} MB/s`;
}

/** A part's bytes queued for one positional write (BATCH_BYTES, or BATCH_DELAY_MS after the first byte). */
class Batch {
  onError?: () => void;
  failure?: { error: unknown };
  private start = 0;
  private chunks: Buffer[] = [];
  private bytes = 0;
  private timer?: NodeJS.Timeout;

  constructor(private readonly file: PartialFile) {}

  push(position: number, chunk: Buffer): void {
    if (this.bytes > 0 && position !== this.start + this.bytes) this.flush();
    if (this.bytes === 0) this.start = position;
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    if (this.bytes >= BATCH_BYTES) this.flush();
    else
      this.timer ??= setTimeout(() => {
        try {
          this.flush();
        } catch (error) {
          this.failure ??= { error };
          this.onError?.();
        }
      }, BATCH_DELAY_MS);
  }

  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.bytes === 0 || this.failure) return;
    const { start, chunks, bytes } = this;
    this.chunks = [];
    this.bytes = 0;
    this.file.write(start, chunks, bytes);
  }

  dispose(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
