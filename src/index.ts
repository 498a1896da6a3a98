/** llama-oci: pull GGUF models from OCI registries and run them in-process with llama.cpp. */
export { pull, type PullOptions, type PullResult, type PulledFile } from "./oci/pull.js";
export { parseReference, formatReference, familiarReference, type Reference } from "./oci/name/index.js";
export { defaultCacheDir } from "./oci/store/index.js";
export {
  listModels,
  removeModels,
  pruneCache,
  tagModel,
  type CacheOptions,
  type ModelListing,
  type RemoveOptions,
  type RemoveOutcome,
  type PruneOptions,
  type PruneResult,
  type PrunedItem,
  type PrunedKind,
  type TagResult,
} from "./oci/cache/index.js";
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
export { saveModel, type SaveOptions, type SaveResult } from "./oci/layout/index.js";
export type { ModelDefaults } from "./oci/model/index.js";
export type { ExplicitCredentials } from "./oci/authn/index.js";
export type { RegistryAccessOptions } from "./oci/remote/index.js";
export type { ProgressEvent, ProgressListener, PushOutcome } from "./oci/progress.js";
export { createProgressRenderer, type RendererOptions } from "./cli/progress-renderer.js";
export type { ArtifactFormat, ModelFileKind } from "./oci/model/index.js";
export type { RetryPolicy } from "./oci/transport/index.js";
export { LlamaOciError, type ErrorCode } from "./errors.js";
export { llama, type FromDockerOptions } from "./llama/llama.js";
export { LlamaModel, type TokenizeOptions, type DetokenizeOptions, type CreateContextOptions, type RerankOptions, type RerankResult, type FormatChatOptions, type FormattedChat } from "./llama/model.js";
export { LlamaContext, type EmbedOptions, type BenchOptions } from "./llama/context.js";
export type { CompletionResult, CompletionStream, CompletionTimings, StopReason } from "./llama/completion.js";
export {
  ChatSession,
  type ChatMessage,
  type ChatSessionOptions,
  type ChatSendOptions,
  type ChatReply,
  type ChatStream,
  type ChatInput,
  type ChatDelta,
  type ChatTool,
  type ChatToolCall,
  type ChatToolCallDelta,
  type ChatToolChoice,
  type ChatTextPart,
  type ChatImagePart,
  type ChatAudioPart,
  type ChatMediaPart,
} from "./llama/chat.js";
export type { MediaPrompt, ModelProjector } from "./llama/media.js";
export type { ChatFormatOptions, ChatContent, ParsedChatMessage } from "./llama/chat-format.js";
export type {
  LoadModelOptions,
  ContextOptions,
  ModelOptions,
  SamplingOptions,
  GenerationOptions,
  FlashAttention,
  LogitBias,
} from "./llama/options.js";
export type { LlamaLogger, LlamaLogLevel } from "./llama/logger.js";
export {
  serve,
  createRequestHandler,
  type ServeOptions,
  type LlamaServer,
  type LlamaRequestHandler,
  type LoadedModel,
  type RequestHandler,
} from "./server/index.js";
export type { NativeSystemInfo as SystemInfo, NativeDevice as Device, NativeModelInfo as ModelInfo } from "./llama/native-types.js";
export const version = "0.1.0";
