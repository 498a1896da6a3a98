/**
 * A first-in first-out async mutex: tasks run one at a time in the order they were queued. A task whose signal
 * aborts while it waits leaves the queue at once (rejecting with ABORTED) and never runs; once a task has started,
 * the task alone decides what an abort means.
 */
import { abortError } from "../errors.js";

export class TaskQueue {
  #tail: Promise<void> = Promise.resolve();
  #pending = 0;

  /** Tasks queued or running. */
  get size(): number {
    return this.#pending;
  }

  run<T>(task: () => T | Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) return Promise.reject(abortError(signal));
    this.#pending++;
    const previous = this.#tail;
    let release!: () => void;
    this.#tail = new Promise<void>((resolve) => (release = resolve));

    let state: "waiting" | "started" | "skipped" = "waiting";
    let onAbort: (() => void) | undefined;
    const turn = previous.then(async () => {
      try {
        if (state === "skipped") throw abortError(signal);
        state = "started";
        return await task();
      } finally {
        if (onAbort) signal?.removeEventListener("abort", onAbort);
        this.#pending--;
        release();
      }
    });
    if (!signal) return turn;

    return new Promise<T>((resolve, reject) => {
      onAbort = () => {
        if (state !== "waiting") return;
        state = "skipped";
        reject(abortError(signal));
      };
      signal.addEventListener("abort", onAbort, { once: true });
      turn.then(resolve, reject);
    });
  }

  /** Resolves when every task queued so far has finished. */
  idle(): Promise<void> {
    return this.#tail;
  }
}
