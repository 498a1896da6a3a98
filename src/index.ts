/** llama-oci: pull GGUF models from OCI registries and run them in-process with llama.cpp. */
export { pull, type PullOptions, type PullResult, type PulledFile } from "./oci/pull.js";
export { parseReference, formatReference, familiarReference, type Reference } from "./oci/reference.js";
export { defaultCacheDir } from "./oci/cache-dir.js";
export { listModels, type CacheOptions, type ModelListing } from "./oci/catalog.js";
export { removeModels, type RemoveOptions, type RemoveOutcome } from "./oci/cache-remove.js";
export { pruneCache, type PruneOptions, type PruneResult, type PrunedItem, type PrunedKind } from "./oci/cache-prune.js";
export { tagModel, type TagResult } from "./oci/cache-tag.js";
export {
  inspectModel,
  type InspectOptions,
  type InspectResult,
  type InspectLayer,
  type InspectConfig,
  type ConfigSummary,
} from "./oci/inspect.js";
export type { GgufFacts, GgufJsonValue } from "./gguf/facts.js";
export {
  packageModel,
  type PackageOptions,
  type PackageResult,
  type PackageFormat,
  type PackagedFile,
} from "./oci/package.js";
export { pushModel, type PushOptions, type PushResult, type PushedBlob } from "./oci/push.js";
export type { ExplicitCredentials } from "./oci/credentials.js";
export type { RegistryAccessOptions } from "./oci/connect.js";
export type { ProgressEvent, ProgressListener, PushOutcome } from "./oci/progress.js";
export { createProgressRenderer, type RendererOptions } from "./oci/progress-renderer.js";
export type { ArtifactFormat, ModelFileKind } from "./oci/artifact.js";
export type { RetryPolicy } from "./oci/download.js";
export { LlamaOciError, type ErrorCode } from "./errors.js";
export { llama, type FromDockerOptions } from "./llama/llama.js";
export { LlamaModel, type TokenizeOptions, type DetokenizeOptions, type CreateContextOptions } from "./llama/model.js";
export {
  LlamaContext,
  type CompletionResult,
  type CompletionStream,
  type CompletionTimings,
  type StopReason,
  type EmbedOptions,
  type BenchOptions,
} from "./llama/context.js";
export { ChatSession, type ChatMessage, type ChatSessionOptions } from "./llama/chat.js";
export type {
  LoadModelOptions,
  ContextOptions,
  ModelOptions,
  SamplingOptions,
  GenerationOptions,
  FlashAttention,
} from "./llama/options.js";
export type { LlamaLogger, LlamaLogLevel } from "./llama/logger.js";
export type { NativeSystemInfo as SystemInfo, NativeDevice as Device, NativeModelInfo as ModelInfo } from "./llama/native-types.js";
export const version = "0.1.0";
