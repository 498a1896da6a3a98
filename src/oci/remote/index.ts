/**
 * remote: a registry's content over its API: the connection (credentials + transport), manifests, blobs with
 * redirects, uploads and mounts, registry mirrors, and GGUF headers read with Range requests.
 */
export * from "./connect.js";
export * from "./manifests.js";
export * from "./blobs.js";
export * from "./upload.js";
export * from "./mirrors.js";
export * from "./gguf-header.js";
