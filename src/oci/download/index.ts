/**
 * download: one blob from a registry into the verified cache, resumable, over one connection or several (a pull's
 * connections shared by all its files through a ConnectionBudget).
 */
export { downloadBlob } from "./blob.js";
export { ConnectionBudget } from "./budget.js";
export { RangeSet } from "./ranges.js";
export { DEFAULT_PARALLEL, MAX_CONNECTIONS_LIMIT, parallelSettings, type BlobRequest, type BlobResult, type ParallelDownloadOptions } from "./request.js";
