/** llama-oci: pull GGUF models from OCI registries. */
export { pull, type PullOptions, type PullResult, type PulledFile } from "./oci/pull.js";
export { parseReference, formatReference, familiarReference, type Reference } from "./oci/reference.js";
export { defaultCacheDir } from "./oci/cache-dir.js";
export type { ExplicitCredentials } from "./oci/credentials.js";
export type { ProgressEvent, ProgressListener } from "./oci/progress.js";
export { createProgressRenderer, type RendererOptions } from "./oci/progress-renderer.js";
export type { ArtifactFormat, ModelFileKind } from "./oci/artifact.js";
export type { RetryPolicy } from "./oci/download.js";
export { LlamaOciError, type ErrorCode } from "./errors.js";
export const version = "0.1.0";
