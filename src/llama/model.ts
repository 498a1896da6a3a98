/**
 * LlamaModel: a loaded GGUF model. Completions, streams and chats run on contexts the model creates on demand (a
 * default one for complete()/generate(), one per chat, one for embeddings); dispose() frees them all. A model loaded
 * with `parallel: N` gives its default context N sequences: concurrent completions are batched on it, and chats take
 * a sequence of it instead of a context of their own.
 */
import { stat } from "node:fs/promises";
import { basename } from "node:path";
import { LlamaOciError } from "../errors.js";
import type { PullResult } from "../oci/pull.js";
import { getBinding } from "./binding.js";
import { checkRpcEndpoints, probeRpcServers } from "./rpc.js";
import { embeddingProblem, generationProblem } from "./capabilities.js";
import { normalizeToolChoice, normalizeTools, templateError, toNativeJson, toOpenAiMessages, type ChatFormatOptions, type ChatMessage } from "./chat-format.js";
import { ChatSession, type ChatSessionOptions } from "./chat.js";
import { createCompletionStream, type CompletionResult, type CompletionStream } from "./completion.js";
import { LlamaContext, type EmbedOptions } from "./context.js";
import type { ModelHandle } from "./model-handle.js";
import { mediaError, mediaInput, mediaLabels, mediaOf, ModelProjector, noProjectorError, type MediaPrompt } from "./media.js";
import { disposedError, nativeError } from "./native-errors.js";
import type { NativeChatFormat, NativeContext, NativeContextOptions, NativeModel, NativeModelInfo } from "./native-types.js";
import { preflightModel } from "./preflight.js";
import {
  invalid,
  resolveContextOptions,
  toNativeContextOptions,
  toNativeModelOptions,
  type ContextOptions,
  type GenerationOptions,
  type ModelOptions,
} from "./options.js";

export interface TokenizeOptions {
  /** Add the model's special tokens (BOS) as a prompt would have them (default true). */
  addSpecial?: boolean;
  /** Turn special-token text such as "<|im_start|>" into those tokens (default false). */
  parseSpecial?: boolean;
}

export interface DetokenizeOptions {
  /** Drop BOS/EOS from the text (default false). */
  removeSpecial?: boolean;
  /** Write special tokens as their text (default false). */
  unparseSpecial?: boolean;
}

export interface RerankOptions {
  /** Only the best topN documents (default all). */
  topN?: number;
  /** Aborting rejects with code ABORTED. */
  signal?: AbortSignal;
}

export interface RerankResult {
  /** The document's index in the list given to rerank(). */
  index: number;
  document: string;
  /** The reranker's relevance score (its classifier's first output, not normalised): higher is more relevant. */
  score: number;
  /** Tokens the query and document took together. */
  tokens: number;
}

/** llama.cpp's LLAMA_POOLING_TYPE_RANK, as GGUFs store <arch>.pooling_type. */
const RANK_POOLING = 4;

export interface FormatChatOptions extends ChatFormatOptions {
  /** End with the opening of the assistant's answer (default true). */
  addAssistantPrompt?: boolean;
  /** A Jinja template (or a built-in name such as "chatml") instead of the model's own. */
  template?: string;
  /** What errors call `template` (default "the chat template given"). */
  templateName?: string;
  /** A JSON schema the answer must follow (the template's grammar then covers it, reasoning included). */
  jsonSchema?: object;
}

/** A conversation formatted for the model: the prompt, its tool-call grammar and the parser of the answer. */
export type FormattedChat = NativeChatFormat;

export interface CreateContextOptions extends ContextOptions {
  /** A context for embed() (pooled output) instead of generation. */
  embeddings?: boolean;
}

/** Frees the native model (and contexts it still owns) of a model that was garbage-collected without dispose(). */
const registry = new FinalizationRegistry<{ native: NativeModel; contexts: Set<NativeContext> }>(({ native, contexts }) => {
  for (const context of contexts) context.dispose();
  contexts.clear();
  native.dispose();
});

export class LlamaModel implements ModelHandle<LlamaContext<LlamaModel>> {
  /** The GGUF file that was loaded. */
  readonly path: string;
  readonly info: NativeModelInfo;
  /** Defaults for contexts this model creates (createContext() options override them). */
  readonly contextOptions: Readonly<Required<ContextOptions>>;
  /** The pull that produced the file, when the model came from llama.fromDocker(). */
  pull?: PullResult;
  /**
   * Generation options every complete(), generate() and chat turn starts from; what a call passes wins. Set by
   * llama.fromDocker() from the artifact's own settings (Ollama's params layer); empty otherwise.
   */
  generationDefaults: Readonly<GenerationOptions> = {};
  /** The system prompt chats start with when given none; fromDocker() sets it from the artifact (Ollama's system layer). */
  systemPrompt?: string;
  /**
   * The chat template chats and applyChatTemplate() use instead of the GGUF's own: fromDocker() sets it from the
   * artifact's chat-template layer, which wins over the template embedded in the GGUF.
   */
  chatTemplate?: string;
  /** What errors call chatTemplate, e.g. "the artifact's chat template (/path/template.jinja)". */
  chatTemplateName?: string;
  /** The multimodal projector loaded with the model (the projector option, or the artifact's mmproj layer). */
  projector?: ModelProjector;
  /** Where warnings go (a model without any chat template); default process.emitWarning. */
  onWarning: (message: string) => void = (message) => process.emitWarning(message, { code: "LLAMA_OCI_CHAT_TEMPLATE" });
  #warnedNoTemplate = false;
  #native: NativeModel;
  #nativeContexts = new Set<NativeContext>();
  #contexts = new Set<WeakRef<LlamaContext<LlamaModel>>>();
  #defaultContext: Promise<LlamaContext<LlamaModel>> | undefined;
  #embeddingContext: Promise<LlamaContext<LlamaModel>> | undefined;
  #metadata: Record<string, string> | undefined;
  #disposing: Promise<void> | undefined;
  /** Native calls on the model itself (tokenize, context creation) that dispose() must wait for. */
  #inflight = new Set<Promise<unknown>>();

  /** @internal Use llama.loadModel() or llama.fromDocker(). */
  constructor(path: string, native: NativeModel, contextOptions: Required<ContextOptions>) {
    this.path = path;
    this.#native = native;
    this.info = native.info();
    this.contextOptions = Object.freeze({ ...contextOptions });
    registry.register(this, { native, contexts: this.#nativeContexts }, this);
  }

  /** Every GGUF metadata key and value, as text. */
  get metadata(): Record<string, string> {
    if (!this.#metadata) {
      if (this.disposed) throw disposedError("model");
      this.#metadata = this.#native.metadata();
    }
    return this.#metadata;
  }

  get disposed(): boolean {
    return this.#disposing !== undefined;
  }

  /**
   * A new context (KV cache) of this model; the model's contextOptions fill in what `options` leaves out (`parallel`
   * included, except for embedding contexts, which have one sequence).
   */
  async createContext(options: CreateContextOptions = {}): Promise<LlamaContext<LlamaModel>> {
    this.#assertUsable();
    const { embeddings = false, ...rest } = options;
    if (embeddings && rest.parallel !== undefined && rest.parallel !== 1) {
      throw invalid("parallel sequences are for generation: an embedding context has parallel 1");
    }
    const merged = { ...this.contextOptions, ...definedOnly(rest) };
    const resolved = resolveContextOptions(embeddings ? { ...merged, parallel: 1 } : merged, this.info.trainContextLength);
    const nativeOptions = toNativeContextOptions(resolved, { embeddings, pooling: embeddings ? this.#embeddingPooling() : undefined });
    let native: NativeContext;
    try {
      native = await this.#track(this.#native.createContext(nativeOptions));
    } catch (error) {
      // The addon's own message already says "cannot create a context of N tokens: <reason>" when it can.
      const said = error instanceof Error && error.message.startsWith("cannot create a context");
      throw nativeError(error, "INFERENCE", said ? undefined : `could not create a context of ${resolved.contextSize} tokens`);
    }
    if (this.disposed) {
      native.dispose();
      throw disposedError("model");
    }
    const context = new LlamaContext(this, native, resolved, embeddings, this.#nativeContexts);
    for (const ref of this.#contexts) if (ref.deref()?.disposed !== false) this.#contexts.delete(ref);
    this.#contexts.add(new WeakRef(context));
    return context;
  }

  /**
   * The model's default context, which complete(), generate() and completeWithMeta() use (and, on a model loaded
   * with parallel > 1, chats): created with the model's contextOptions on first use. Its `parallel`,
   * `busySequences` and `queuedRequests` tell how loaded the model is. Disposing it is the model's business.
   */
  defaultContext(): Promise<LlamaContext<LlamaModel>> {
    this.#assertUsable();
    return this.#getDefaultContext();
  }

  /** Completes `prompt` on the model's default context; see GenerationOptions for sampling and abort. */
  async complete(prompt: string, options: GenerationOptions = {}): Promise<string> {
    return (await this.completeWithMeta(prompt, options)).text;
  }

  async completeWithMeta(prompt: string, options: GenerationOptions = {}): Promise<CompletionResult> {
    this.#assertUsable();
    this.#assertCanGenerate();
    return (await this.#getDefaultContext()).completeWithMeta(prompt, options);
  }

  /** Streams a completion: `for await (const piece of model.generate(prompt))`; `.result` has the meta. */
  generate(prompt: string, options: GenerationOptions = {}): CompletionStream {
    this.#assertUsable();
    this.#assertCanGenerate();
    return createCompletionStream(
      async (onTextChunk, signal) => (await this.#getDefaultContext()).completeWithMeta(prompt, { ...options, onTextChunk, signal }),
      options,
    );
  }

  /**
   * A multi-turn chat formatted with the model's chat template, on a context of its own unless one is given. On a
   * model loaded with parallel > 1, a chat without context options of its own generates on a sequence of the model's
   * default context instead (batched with the other chats and completions).
   */
  createChat(options: ChatSessionOptions = {}): ChatSession<LlamaModel> {
    this.#assertUsable();
    this.#assertCanGenerate();
    if (options.context === undefined && this.contextOptions.parallel > 1 && !hasContextOptions(options)) {
      return new ChatSession(this, options, { sharedContext: () => this.#getDefaultContext() });
    }
    return new ChatSession(this, options);
  }

  /** Pooled embedding of `text` (L2-normalised unless normalize is false), on a separate embeddings context. */
  async embed(text: string, options: EmbedOptions = {}): Promise<Float32Array> {
    this.#assertUsable();
    return (await this.#getEmbeddingContext()).embed(text, options);
  }

  #getEmbeddingContext(): Promise<LlamaContext<LlamaModel>> {
    this.#embeddingContext ??= this.#createDefault(() => {
      const size = this.contextOptions.contextSize;
      return this.createContext({ embeddings: true, batchSize: size, ubatchSize: size, parallel: 1 });
    }, "embeddings");
    return this.#embeddingContext;
  }

  /**
   * Scores how relevant each document is to `query` with a reranker (a GGUF with rank pooling and a classifier
   * head, such as bge-reranker), as llama-server's /rerank does: the model's rerank template when it has one, else
   * `[BOS] query [EOS] [SEP] document [EOS]` (each special token where the vocabulary adds it). Returns the
   * documents best first (the classifier's raw score: a logit, not normalised), `topN` of them if given.
   */
  async rerank(query: string, documents: readonly string[], options: RerankOptions = {}): Promise<RerankResult[]> {
    this.#assertUsable();
    if (typeof query !== "string") throw invalid("rerank() takes the query as a string");
    const given: unknown = documents;
    if (!Array.isArray(given) || given.some((d) => typeof d !== "string")) throw invalid("rerank() takes the documents as an array of strings");
    if (options.topN !== undefined && (!Number.isInteger(options.topN) || options.topN < 0)) throw invalid(`topN must be an integer >= 0 (got ${String(options.topN)})`);
    const problem = this.rerankProblem();
    if (problem !== undefined) throw invalid(`this model cannot rerank: ${problem}`);
    const context = await this.#getEmbeddingContext();
    const results: RerankResult[] = [];
    for (let index = 0; index < documents.length; index++) {
      const document = documents[index]!;
      const tokens = await this.rerankPrompt(query, document);
      const limit = Math.min(context.contextSize, context.batchSize, context.ubatchSize);
      if (tokens.length > limit) {
        throw invalid(`the query and document ${index} are ${tokens.length} tokens but the reranker takes at most ${limit} at once`, "use a larger contextSize, or shorter documents");
      }
      const scores = await context.embed(tokens, { normalize: false, signal: options.signal });
      results.push({ index, document, score: scores[0] ?? Number.NaN, tokens: tokens.length });
    }
    results.sort((a, b) => b.score - a.score || a.index - b.index);
    return options.topN === undefined ? results : results.slice(0, options.topN);
  }

  /** Why rerank() would be refused (the GGUF does not pool by rank), or undefined when the model is a reranker. */
  rerankProblem(): string | undefined {
    const pooling = this.metadata[`${this.info.architecture}.pooling_type`];
    if (pooling !== String(RANK_POOLING)) {
      return `it is not a reranker (its GGUF's ${this.info.architecture}.pooling_type is ${pooling ?? "not set"}, not ${RANK_POOLING} = rank)`;
    }
    return embeddingProblem(this.info);
  }

  /** The tokens rerank() scores for one query and document (llama-server's format_prompt_rerank). */
  async rerankPrompt(query: string, document: string): Promise<Int32Array> {
    const info = this.info;
    if (info.rerankTemplate !== null) {
      const text = info.rerankTemplate.replaceAll("{query}", query).replaceAll("{document}", document);
      return this.tokenize(text, { addSpecial: false, parseSpecial: true });
    }
    const plain = { addSpecial: false, parseSpecial: false };
    const [q, d] = await Promise.all([this.tokenize(query, plain), this.tokenize(document, plain)]);
    // A vocabulary without EOS ends each part with its SEP instead.
    const eos = info.eosToken >= 0 ? info.eosToken : info.sepToken;
    const tokens: number[] = [];
    if (info.addBosToken && info.bosToken >= 0) tokens.push(info.bosToken);
    tokens.push(...q);
    if (info.addEosToken && eos >= 0) tokens.push(eos);
    if (info.addSepToken && info.sepToken >= 0) tokens.push(info.sepToken);
    tokens.push(...d);
    if (info.addEosToken && eos >= 0) tokens.push(eos);
    return Int32Array.from(tokens);
  }

  async tokenize(text: string, options: TokenizeOptions = {}): Promise<Int32Array> {
    this.#assertUsable();
    if (typeof text !== "string") throw invalid("tokenize() takes a string");
    try {
      return await this.#track(this.#native.tokenize(text, options.addSpecial ?? true, options.parseSpecial ?? false));
    } catch (error) {
      throw nativeError(error, "INFERENCE", "tokenization failed");
    }
  }

  /**
   * Tokenizes a formatted chat (formatChat().prompt) together with the media (images, audio) of `messages`, whose
   * media markers it holds, through the projector; context.completeWithMeta() generates from the result.
   */
  async tokenizeWithMedia(prompt: string, messages: readonly ChatMessage[]): Promise<MediaPrompt> {
    this.#assertUsable();
    const refused = mediaError(this.projector, basename(this.path), messages);
    if (refused) throw refused;
    if (this.projector === undefined) throw noProjectorError(basename(this.path));
    const parts = mediaOf(messages);
    const labels = mediaLabels(parts);
    const media = await Promise.all(parts.map((part, i) => mediaInput(part, labels[i]!)));
    return this.#track(this.projector.tokenize(prompt, media, { addSpecial: true, parseSpecial: true }));
  }

  async detokenize(tokens: Int32Array | readonly number[], options: DetokenizeOptions = {}): Promise<string> {
    this.#assertUsable();
    const array = tokens instanceof Int32Array ? tokens : Int32Array.from(tokens);
    try {
      return await this.#track(this.#native.detokenize(array, options.removeSpecial ?? false, options.unparseSpecial ?? false));
    } catch (error) {
      throw nativeError(error, "INFERENCE", "detokenization failed");
    }
  }

  /**
   * Formats a conversation with the chat template (`template`, else the artifact's, else the GGUF's) through
   * llama.cpp's chat layer; with addAssistantPrompt (default true) the text ends where the assistant's answer
   * begins. Messages may hold text parts, tool calls and tool results; `tools` are described as the template does.
   * A built-in name as `template` ("llama3", "chatml", ...) selects one of llama.cpp's built-in formats.
   */
  applyChatTemplate(messages: readonly ChatMessage[], options: FormatChatOptions = {}): string {
    return this.formatChat(messages, options).prompt;
  }

  /**
   * What llama.cpp's chat layer makes of a conversation (common_chat_templates_apply, as llama-server calls it):
   * the prompt, the grammar that constrains a tool call (lazy: from a trigger on), the stop words and the parser of
   * the answer (`parse(text, partial)` gives `{ content, reasoning, toolCalls }`). A template that cannot be parsed
   * or rendered (raise_exception included) is an INVALID_ARGUMENT error naming the template and the line.
   */
  formatChat(messages: readonly ChatMessage[], options: FormatChatOptions = {}): FormattedChat {
    this.#assertUsable();
    const refused = mediaError(this.projector, basename(this.path), messages);
    if (refused) throw refused;
    const tools = normalizeTools(options.tools);
    const choice = normalizeToolChoice(options.toolChoice, tools);
    const { template, templateName } = this.#templateFor(options);
    let format: NativeChatFormat;
    try {
      format = this.#native.formatChat({
        messages: toNativeJson(toOpenAiMessages(messages)),
        tools: tools.length > 0 ? toNativeJson(tools.map((tool) => ({ type: "function", function: { parameters: { type: "object", properties: {} }, ...tool } }))) : null,
        toolChoice: choice.choice,
        namedTool: choice.named ?? null,
        parallelToolCalls: options.parallelToolCalls ?? null,
        addAssistantPrompt: options.addAssistantPrompt ?? true,
        enableThinking: options.thinking ?? true,
        extractReasoning: true,
        templateKwargs: options.templateVariables === undefined ? null : toNativeJson(options.templateVariables),
        jsonSchema: options.jsonSchema === undefined ? null : toNativeJson(options.jsonSchema),
        template,
        templateName,
      });
    } catch (error) {
      throw templateError(error);
    }
    if (format.usesDefaultTemplate && !this.#warnedNoTemplate) {
      this.#warnedNoTemplate = true;
      this.onWarning(`${basename(this.path)} has no chat template: chats use llama.cpp's default (ChatML), which may not be the format the model was trained on; give one with the chatTemplate option`);
    }
    if (tools.length > 0 && choice.choice !== "none" && !format.caps.supports_tools && !format.caps.supports_tool_calls) {
      throw invalid(`${format.templateName} does not support tools (it neither describes them nor renders tool calls)`, "give a chat template that does, with the chatTemplate option");
    }
    if (choice.choice === "required" && format.grammar === "") {
      throw invalid(`${format.templateName} gives no grammar for tool calls, so a call cannot be required (tool choice "required" or a named tool)`);
    }
    return format;
  }

  /** @internal The template text a chat is formatted with (undefined: llama.cpp's default), e.g. to choose tool-call ids. */
  chatTemplateSource(override?: string): string | undefined {
    return override ?? this.chatTemplate ?? this.info.chatTemplate ?? undefined;
  }

  #templateFor(options: FormatChatOptions): { template: string | null; templateName: string } {
    if (options.template !== undefined) return { template: options.template, templateName: options.templateName ?? "the chat template given" };
    if (this.chatTemplate !== undefined) return { template: this.chatTemplate, templateName: this.chatTemplateName ?? "the model's chat template" };
    return { template: null, templateName: `the chat template of ${basename(this.path)} (tokenizer.chat_template)` };
  }

  /** A GBNF grammar that accepts JSON matching `schema` (llama.cpp's converter). */
  jsonSchemaToGrammar(schema: object): string {
    this.#assertUsable();
    try {
      return this.#native.jsonSchemaToGrammar(JSON.stringify(schema));
    } catch (error) {
      throw invalid(`unsupported JSON schema: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  /** @internal The grammar a request asks for, from `grammar` or `jsonSchema`. */
  grammarFor(options: Pick<GenerationOptions, "grammar" | "jsonSchema">): string | null {
    if (options.grammar !== undefined && options.jsonSchema !== undefined) throw invalid("give grammar or jsonSchema, not both");
    if (options.jsonSchema !== undefined) return this.jsonSchemaToGrammar(options.jsonSchema);
    if (options.grammar !== undefined && typeof options.grammar !== "string") throw invalid("grammar must be a GBNF string");
    return options.grammar ?? null;
  }

  /**
   * Frees the model and every context it created. Running requests stop (resolving with stopReason "abort"),
   * queued ones reject with code DISPOSED. Idempotent; every call resolves once everything is freed.
   */
  dispose(): Promise<void> {
    this.#disposing ??= (async () => {
      const contexts = [...this.#contexts].map((ref) => ref.deref()).filter((c): c is LlamaContext<LlamaModel> => c !== undefined);
      await Promise.all(contexts.map((context) => context.dispose()));
      await Promise.allSettled([this.#defaultContext, this.#embeddingContext, ...this.#inflight]);
      registry.unregister(this);
      for (const native of this.#nativeContexts) native.dispose();
      this.#nativeContexts.clear();
      this.projector?.dispose();
      this.#native.dispose();
    })();
    return this.#disposing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  #assertUsable(): void {
    if (this.#disposing) throw disposedError("model");
  }

  /** Refuses generation on a model that cannot generate (an embedding model, say) before any context exists. */
  #assertCanGenerate(): void {
    const problem = generationProblem(this.info);
    if (problem !== undefined) throw invalid(`this model cannot generate text: ${problem}`);
  }

  #track<T>(promise: Promise<T>): Promise<T> {
    this.#inflight.add(promise);
    const forget = () => void this.#inflight.delete(promise);
    promise.then(forget, forget);
    return promise;
  }

  #getDefaultContext(): Promise<LlamaContext<LlamaModel>> {
    this.#defaultContext ??= this.#createDefault(() => this.createContext(), "default");
    return this.#defaultContext;
  }

  /** A lazily created shared context; a failed creation is forgotten so the next call tries again. */
  #createDefault(
    create: () => Promise<LlamaContext<LlamaModel>>,
    which: "default" | "embeddings",
  ): Promise<LlamaContext<LlamaModel>> {
    const promise = create();
    promise.catch(() => {
      if (which === "default" && this.#defaultContext === promise) this.#defaultContext = undefined;
      if (which === "embeddings" && this.#embeddingContext === promise) this.#embeddingContext = undefined;
    });
    return promise;
  }

  /** The GGUF's pooling if it names one, else mean pooling (llama.cpp would give per-token vectors). */
  #embeddingPooling(): NativeContextOptions["pooling"] {
    const key = `${this.info.architecture}.pooling_type`;
    return this.metadata[key] !== undefined ? "unspecified" : "mean";
  }
}

const CONTEXT_OPTION_KEYS = ["contextSize", "batchSize", "ubatchSize", "threads", "threadsBatch", "flashAttention", "parallel", "kvUnified"] as const;

/** Whether chat options ask for a context of their own making (any context option given). */
function hasContextOptions(options: ChatSessionOptions): boolean {
  return CONTEXT_OPTION_KEYS.some((key) => options[key] !== undefined);
}

function definedOnly<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as Partial<T>;
}

/** Opens a local GGUF file. Missing files fail before the addon is involved; load errors carry code MODEL_LOAD. */
export async function loadModel(path: string, options: ModelOptions = {}): Promise<LlamaModel> {
  if (typeof path !== "string" || path === "") throw invalid("loadModel() needs the path of a GGUF file");
  const { signal } = options;
  if (signal?.aborted) throw new LlamaOciError("ABORTED", "the model load was aborted", { cause: signal.reason });
  const info = await stat(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") throw new LlamaOciError("NOT_FOUND", `model file not found: ${path}`);
    throw new LlamaOciError("MODEL_LOAD", `cannot read model file ${path}: ${error.message}`, { cause: error });
  });
  if (!info.isFile()) throw invalid(`${path} is not a file`);
  // What would make llama.cpp abort the process (a GGML_ASSERT) is refused here, from the file's header.
  await preflightModel(path, { useMmap: options.useMmap ?? true });
  if (signal?.aborted) throw new LlamaOciError("ABORTED", "the model load was aborted", { cause: signal.reason });

  const binding = getBinding();
  const system = binding.systemInfo();
  const rpcServers = checkRpcEndpoints(options.rpcServers);
  if (rpcServers.length > 0) {
    if (!system.supportsRpc) throw invalid("rpcServers: this build of the addon has no RPC backend", "rebuild it with LLAMA_OCI_RPC=ON (the default)");
    // llama.cpp's RPC client aborts the process on a server it cannot reach: each one is checked first.
    await probeRpcServers(rpcServers, system.rpcProtocol);
  }
  const nativeOptions = toNativeModelOptions({ ...options, rpcServers }, system.supportsGpuOffload || rpcServers.length > 0);
  const flag = binding.createAbortFlag();
  const onAbort = () => flag.abort();
  signal?.addEventListener("abort", onAbort, { once: true });
  const onProgress = options.onLoadProgress;
  let native: NativeModel;
  try {
    native = await binding.loadModel(path, nativeOptions, onProgress ? (fraction) => safeProgress(onProgress, fraction) : null, flag);
  } catch (error) {
    if (signal?.aborted) throw new LlamaOciError("ABORTED", "the model load was aborted", { cause: signal.reason });
    // The addon's message names the file too ("cannot load <path>: ..."): say it once.
    const message = error instanceof Error ? error.message : String(error);
    const own = `cannot load ${path}: `;
    const reason = message.startsWith(own) ? message.slice(own.length) : message;
    throw new LlamaOciError("MODEL_LOAD", `cannot load model ${path}: ${reason}`, { cause: error });
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
  try {
    const contextOptions = resolveContextOptions(options, native.info().trainContextLength);
    const model = new LlamaModel(path, native, contextOptions);
    if (options.projector !== undefined) {
      model.projector = await ModelProjector.load(native, options.projector, { threads: options.threads, useGpu: nativeOptions.gpuLayers !== 0 });
    }
    return model;
  } catch (error) {
    native.dispose();
    throw error;
  }
}

function safeProgress(listener: (fraction: number) => void, fraction: number): void {
  try {
    listener(fraction);
  } catch {
    // a failing progress listener must not break the load running in native code
  }
}
