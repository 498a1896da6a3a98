/**
 * The connections of one pull, shared by all the files it downloads at once (shards, projector): every file holds at
 * least one while it downloads, and a large blob adds more only while some are free. A file waiting for its first
 * connection goes before any blob asking for another.
 */
import { abortError } from "../../errors.js";

export class ConnectionBudget {
  private used = 0;
  private readonly waiters: { resolve: () => void }[] = [];

  constructor(readonly limit: number) {}

  /** Connections free now. */
  get available(): number {
    return Math.max(0, this.limit - this.used);
  }

  /** One connection, waiting until one is free (an abort ends the wait). */
  acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(abortError(signal));
    if (this.used < this.limit && this.waiters.length === 0) {
      this.used++;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
      };
      const onAbort = () => {
        const index = this.waiters.indexOf(waiter);
        if (index >= 0) this.waiters.splice(index, 1);
        reject(abortError(signal));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** One more connection if one is free now and nobody is waiting for a first one. */
  tryAcquire(): boolean {
    if (this.used >= this.limit || this.waiters.length > 0) return false;
    this.used++;
    return true;
  }

  release(): void {
    const next = this.waiters.shift();
    // Handed straight to a waiter: the count stays.
    if (next) next.resolve();
    else this.used = Math.max(0, this.used - 1);
  }
}
