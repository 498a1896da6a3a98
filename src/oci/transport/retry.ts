/**
 * The one retry policy: which failures are worth another attempt (408, 429, 5xx, dropped or stalled connections),
 * how long to wait (exponential backoff with jitter, or the server's Retry-After), and when to give up.
 */
import { abortError, isAbort, LlamaOciError } from "../../errors.js";
import { delay } from "../../util/delay.js";
import { isTransientNetworkError } from "./network-errors.js";

export { delay } from "../../util/delay.js";

export interface RetryPolicy {
  /** Attempts in a row without progress before giving up. */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** A Retry-After longer than this fails fast instead of waiting. */
  maxRetryAfterMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseDelayMs: 1000, maxDelayMs: 30_000, maxRetryAfterMs: 60_000 };

export function retryPolicy(overrides: Partial<RetryPolicy> | undefined): RetryPolicy {
  return { ...DEFAULT_RETRY, ...overrides };
}

/** The wait before attempt `failures + 1`: base * 2^(failures-1), capped, with ±20% jitter. */
export function backoffMs(policy: RetryPolicy, failures: number): number {
  const backoff = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, failures - 1));
  return Math.round(backoff * (0.8 + Math.random() * 0.4));
}

/** Statuses a registry or CDN answers for a passing problem. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/** Whether an error from a registry request is worth another attempt. */
export function isRetryableError(error: unknown): boolean {
  if (isAbort(error)) return false;
  if (error instanceof LlamaOciError) {
    return error.code === "NETWORK" || error.code === "RATE_LIMITED" || (error.status !== undefined && isRetryableStatus(error.status));
  }
  return isTransientNetworkError(error);
}

export interface RetryEvent {
  /** The attempt about to be made, from 2. */
  attempt: number;
  maxAttempts: number;
  delayMs: number;
  reason: string;
}

export interface WithRetriesOptions {
  policy: RetryPolicy;
  signal?: AbortSignal;
  /** Default isRetryableError. */
  isRetryable?: (error: unknown) => boolean;
  onRetry?: (event: RetryEvent) => void;
}

/** Runs `task` again after a retryable failure, waiting backoffMs between attempts, up to policy.attempts in all. */
export async function withRetries<T>(task: () => Promise<T>, options: WithRetriesOptions): Promise<T> {
  const { policy, signal } = options;
  const retryable = options.isRetryable ?? isRetryableError;
  for (let attempt = 1; ; attempt++) {
    try {
      return await task();
    } catch (error) {
      if (signal?.aborted) throw abortError(signal);
      if (attempt >= policy.attempts || !retryable(error)) throw error;
      const delayMs = backoffMs(policy, attempt);
      const reason = error instanceof Error ? error.message : String(error);
      options.onRetry?.({ attempt: attempt + 1, maxAttempts: policy.attempts, delayMs, reason });
      await delay(delayMs, signal);
    }
  }
}
