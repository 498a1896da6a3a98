/**
 * A first-in first-out async semaphore: up to `concurrency` tasks run at once (one, by default: a mutex), in the
 * order they were queued; an exclusive task waits for every task before it and runs alone. A task whose signal
 * aborts while it waits leaves the queue at once (rejecting with ABORTED) and never runs; once a task has started,
 * the task alone decides what an abort means.
 */
import { abortError } from "../errors.js";

interface Waiter {
  weight: number;
  start(): void;
}

export interface QueueRunOptions {
  /** Run alone: wait until every task queued before has finished, and hold back every task queued after. */
  exclusive?: boolean;
}

export class TaskQueue {
  readonly concurrency: number;
  #active = 0;
  #running = 0;
  #waiting: Waiter[] = [];
  #settled = new Set<Promise<unknown>>();

  constructor(concurrency = 1) {
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency must be an integer >= 1 (got ${concurrency})`);
    this.concurrency = concurrency;
  }

  /** Tasks queued or running. */
  get size(): number {
    return this.#running + this.#waiting.length;
  }

  /** Places taken by running tasks (an exclusive task takes all of them). */
  get active(): number {
    return this.#active;
  }

  /** Tasks waiting for their turn. */
  get waiting(): number {
    return this.#waiting.length;
  }

  run<T>(task: () => T | Promise<T>, signal?: AbortSignal, options: QueueRunOptions = {}): Promise<T> {
    if (signal?.aborted) return Promise.reject(abortError(signal));
    const weight = options.exclusive ? this.concurrency : 1;
    const promise = new Promise<T>((resolve, reject) => {
      let onAbort: (() => void) | undefined;
      const waiter: Waiter = {
        weight,
        start: () => {
          if (onAbort) signal?.removeEventListener("abort", onAbort);
          this.#active += weight;
          this.#running++;
          // Like an awaited turn of a promise chain: the task starts on a later microtask, never synchronously.
          void Promise.resolve()
            .then(task)
            .then(resolve, reject)
            .finally(() => {
              this.#active -= weight;
              this.#running--;
              this.#pump();
            });
        },
      };
      if (signal) {
        onAbort = () => {
          const index = this.#waiting.indexOf(waiter);
          if (index < 0) return;
          this.#waiting.splice(index, 1);
          reject(abortError(signal));
          this.#pump();
        };
        signal.addEventListener("abort", onAbort, { once: true });
      }
      this.#waiting.push(waiter);
      this.#pump();
    });
    this.#track(promise);
    return promise;
  }

  /** Resolves when every task queued so far has finished (or left the queue). */
  async idle(): Promise<void> {
    await Promise.allSettled([...this.#settled]);
  }

  #pump(): void {
    while (this.#waiting.length > 0 && this.#active + this.#waiting[0]!.weight <= this.concurrency) {
      this.#waiting.shift()!.start();
    }
  }

  #track(promise: Promise<unknown>): void {
    this.#settled.add(promise);
    const forget = () => void this.#settled.delete(promise);
    promise.then(forget, forget);
  }
}
