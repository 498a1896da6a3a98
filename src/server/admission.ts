/**
 * Admission control for one model's sequences: at most `slots` requests run at once, at most `maxQueue` more wait
 * (first in, first out), and a request beyond that is refused at once. A waiting request whose signal aborts (its
 * client went away) leaves the queue without ever running.
 */
import { abortError } from "../errors.js";

/** A request refused because every sequence is busy and the queue is full; the server answers 503. */
export class QueueFullError extends Error {
  override name = "QueueFullError";
  constructor(
    readonly running: number,
    readonly queued: number,
  ) {
    super(`the server is busy: ${running} sequence${running === 1 ? "" : "s"} running and ${queued} request${queued === 1 ? "" : "s"} queued`);
  }
}

interface Waiter {
  grant: () => void;
  cancel: (error: Error) => void;
}

export class Admission {
  readonly slots: number;
  readonly maxQueue: number;
  #running = 0;
  #queue: Waiter[] = [];

  constructor(slots: number, maxQueue: number) {
    this.slots = slots;
    this.maxQueue = maxQueue;
  }

  /** Requests holding a slot. */
  get running(): number {
    return this.#running;
  }

  /** Requests waiting for a slot. */
  get queued(): number {
    return this.#queue.length;
  }

  /**
   * Waits for a slot and resolves with the function that gives it back (call it exactly once). Throws
   * QueueFullError synchronously when the request can neither run nor wait; `onAdmitted` is called synchronously
   * when it can (running or queued).
   */
  acquire(signal?: AbortSignal, onAdmitted?: () => void): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(abortError(signal));
    if (this.#running < this.slots) {
      this.#running++;
      onAdmitted?.();
      return Promise.resolve(this.#releaser());
    }
    if (this.#queue.length >= this.maxQueue) throw new QueueFullError(this.#running, this.#queue.length);
    onAdmitted?.();
    return new Promise<() => void>((resolve, reject) => {
      const onAbort = () => {
        const index = this.#queue.indexOf(waiter);
        if (index !== -1) this.#queue.splice(index, 1);
        reject(abortError(signal));
      };
      const waiter: Waiter = {
        grant: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve(this.#releaser());
        },
        cancel: (error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#queue.push(waiter);
    });
  }

  /** Rejects every waiting request with `error` (the model is being unloaded). */
  cancelWaiting(error: Error): void {
    for (const waiter of this.#queue.splice(0)) waiter.cancel(error);
  }

  #releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#queue.shift();
      // The slot passes straight to the next waiter, so a request arriving now cannot jump the queue.
      if (next) next.grant();
      else this.#running--;
    };
  }
}
