/**
 * store: the cache on disk: its layout, content-addressed blobs, manifests, model records and folders, refs,
 * cross-process locks, batched, atomic and durable (fsynced) writes, file hashing, importing local files as blobs,
 * checking free disk space, and the per-part state of partial downloads written over several connections.
 */
export * from "./store.js";
export * from "./layout.js";
export * from "./blobs.js";
export * from "./manifests.js";
export * from "./models.js";
export * from "./refs.js";
export * from "./lock.js";
export * from "./atomic-write.js";
export * from "./batch-writer.js";
export * from "./hashing.js";
export * from "./cache-dir.js";
export * from "./blob-import.js";
export * from "./durable.js";
export * from "./free-space.js";
export * from "./partial-state.js";
