/** What a blob download is asked to do, and the knobs shared by the single-stream and parallel paths. */
import { LlamaOciError } from "../../errors.js";
import type { Logger } from "../../log.js";
import type { ProgressListener } from "../progress.js";
import type { Store } from "../store/index.js";
import type { RegistryTransport, RetryPolicy } from "../transport/index.js";
import type { ConnectionBudget } from "./budget.js";

/**
 * How a large blob is split over several connections (PullOptions.parallelDownload). Blobs smaller than 4 × minPartBytes are
 * one request, as are all blobs with maxConnections 1.
 */
export interface ParallelDownloadOptions {
  /** Most connections at once for the whole pull, all its files together (default 16; 1: one stream per file). */
  maxConnections?: number;
  /** Connections a large blob starts with, before adding more while the aggregate rate still grows (default 4). */
  initialConnections?: number;
  /** The smallest range a connection is given at first (default 16 MiB); also sets which blobs are split. */
  minPartBytes?: number;
}

export const DEFAULT_PARALLEL: Required<ParallelDownloadOptions> = { maxConnections: 16, initialConnections: 4, minPartBytes: 16 << 20 };

/** The most connections one pull may be given (LLAMA_OCI_MAX_CONNECTIONS, parallelDownload.maxConnections). */
export const MAX_CONNECTIONS_LIMIT = 64;

/** The settings with their defaults; a value that is not a whole number in range is an INVALID_ARGUMENT error. */
export function parallelSettings(options: ParallelDownloadOptions | undefined): Required<ParallelDownloadOptions> {
  const merged = { ...DEFAULT_PARALLEL, ...options };
  const whole = (name: keyof ParallelDownloadOptions, min: number, max: number): number => {
    const value = merged[name];
    if (!Number.isSafeInteger(value) || value < min || value > max) {
      throw new LlamaOciError("INVALID_ARGUMENT", `parallelDownload.${name} must be a whole number from ${min} to ${max}, got ${String(value)}`);
    }
    return value;
  };
  return {
    maxConnections: whole("maxConnections", 1, MAX_CONNECTIONS_LIMIT),
    initialConnections: whole("initialConnections", 1, MAX_CONNECTIONS_LIMIT),
    minPartBytes: whole("minPartBytes", 64 << 10, Number.MAX_SAFE_INTEGER),
  };
}

export interface BlobRequest {
  client: RegistryTransport;
  store: Store;
  repository: string;
  digest: string;
  size: number;
  filename: string;
  logger: Logger;
  onProgress?: ProgressListener;
  signal?: AbortSignal;
  retry?: Partial<RetryPolicy>;
  /** No bytes for this long counts as a stalled connection. */
  stallTimeoutMs?: number;
  /** Splitting large blobs over several connections (see ParallelDownloadOptions). */
  parallel?: ParallelDownloadOptions;
  /** The pull's connections, shared by all its files; default: this blob's own, of parallel.maxConnections. */
  budget?: ConnectionBudget;
}

export interface BlobResult {
  fromCache: boolean;
  /** Blob bytes received over the network by this call. */
  bytesTransferred: number;
}

export const PROGRESS_INTERVAL_MS = 50;
/** A background fdatasync of the partial after each this many bytes written. */
export const SYNC_EVERY_BYTES = 32 << 20;
