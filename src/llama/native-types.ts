/**
 * The contract between the native addon (native/*.cpp) and the TypeScript layer (src/llama/*.ts). The addon is thin
 * and follows llama.h: each object owns one llama.cpp handle, frees it in dispose() (idempotent), and every call
 * that can take more than a moment runs on a worker thread and returns a Promise. Failures reject with an Error
 * whose message is one clear line; native code never aborts the process on bad input.
 */

export type NativeLogLevel = "debug" | "info" | "warn" | "error";

export interface NativeDevice {
  name: string;
  description: string;
  type: "cpu" | "gpu" | "igpu" | "accel";
  memoryTotal: number;
  memoryFree: number;
}

export interface NativeSystemInfo {
  /** The backend this addon was built for: "cpu", "cuda", "vulkan" or "metal". */
  gpuBackend: string;
  /** ggml backends registered at run time, e.g. ["CPU"] or ["CUDA", "CPU"]. */
  backends: string[];
  devices: NativeDevice[];
  /** llama_print_system_info(): CPU features. */
  systemInfo: string;
  /** llama.cpp's build number and commit, e.g. "b1234 (abcdef0)", or its version when built from a release bundle without history, e.g. "0.4.0 (80fb11a)". */
  llamaCppVersion: string;
  /** The machine has a GPU device this build can offload to (RPC servers are not counted). */
  supportsGpuOffload: boolean;
  /** Built with llama.cpp's RPC backend (rpcServers). */
  supportsRpc: boolean;
  /** The RPC protocol version the client speaks (0.0 without RPC). */
  rpcProtocol: { major: number; minor: number };
  supportsMmap: boolean;
  maxDevices: number;
}

/** A cancellation flag shared with native code: set by abort(), read between tokens and by llama.cpp's abort callback. */
export interface NativeAbortFlag {
  abort(): void;
  readonly aborted: boolean;
}

export interface NativeModelOptions {
  /** Layers to offload to the GPU; -1 = all. */
  gpuLayers: number;
  useMmap: boolean;
  useMlock: boolean;
  vocabOnly: boolean;
  /** llama.cpp RPC servers ("host:port") to split the model over, checked reachable first. */
  rpcServers?: string[];
}

export interface NativeModelInfo {
  architecture: string;
  /** llama_model_desc, e.g. "llama 135M Q4_0". */
  description: string;
  parameters: number;
  sizeBytes: number;
  trainContextLength: number;
  embeddingLength: number;
  layerCount: number;
  headCount: number;
  headCountKv: number;
  vocabSize: number;
  /** The GGUF's own chat template (tokenizer.chat_template), if any. */
  chatTemplate: string | null;
  bosToken: number;
  eosToken: number;
  eotToken: number;
  hasEncoder: boolean;
  hasDecoder: boolean;
  isRecurrent: boolean;
  /** A diffusion model (Dream, LLaDA): its attention is not causal. */
  isDiffusion: boolean;
  /**
   * False when the model does not attend causally and so cannot generate text: the GGUF turns causal attention off
   * (`<arch>.attention.causal = false`, e.g. an embedding model) or it is a diffusion model.
   */
  causalAttention: boolean;
  /** The tokenizer llama.cpp uses: "spm", "bpe", "wpm", "ugm", "rwkv", "plamo2", or "none" for a model without one. */
  vocabType: "none" | "spm" | "bpe" | "wpm" | "ugm" | "rwkv" | "plamo2" | "unknown";
  /** The separator token (-1 when the vocabulary has none). */
  sepToken: number;
  /** Whether tokenizing with addSpecial adds BOS, EOS and SEP (the vocabulary's add_*_token). */
  addBosToken: boolean;
  addEosToken: boolean;
  addSepToken: boolean;
  /** A reranker's own input format (tokenizer.chat_template.rerank, with {query} and {document}), if any. */
  rerankTemplate: string | null;
  /** Outputs of the classifier head (rank pooling): a reranker's score is the first. */
  classifierOutputs: number;
}

export interface NativeContextOptions {
  contextSize: number;
  batchSize: number;
  ubatchSize: number;
  /** Threads for generation and for prompt processing; 0 = llama.cpp's default. */
  threads: number;
  threadsBatch: number;
  flashAttention: "auto" | "on" | "off";
  /**
   * Sequences (llama.cpp's n_seq_max, 1..256). Above 1 generate() runs on the context's batched decode loop: one
   * native thread, one llama_decode per step for every running request. Embedding contexts take 1. Default 1.
   */
  parallel?: number;
  /** With parallel > 1: one unified KV cache the sequences share (default true), or contextSize / parallel cells each. */
  kvUnified?: boolean;
  /** Context used for embeddings (pooled output). */
  embeddings: boolean;
  /** Pooling for embeddings: "unspecified" lets the model decide. */
  pooling: "unspecified" | "none" | "mean" | "cls" | "last" | "rank";
}

export interface NativeSamplingOptions {
  /** 0 = greedy. */
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repeatPenalty: number;
  repeatLastN: number;
  frequencyPenalty: number;
  presencePenalty: number;
  seed: number;
  /** 1 = off. */
  typicalP?: number;
  /** 0 or less = off. */
  topNSigma?: number;
  /** 0 = off; a threshold above 0.5 is off too. */
  xtcProbability?: number;
  xtcThreshold?: number;
  /** 0 = off. */
  dryMultiplier?: number;
  dryBase?: number;
  dryAllowedLength?: number;
  /** -1 = the whole context, 0 = off. */
  dryPenaltyLastN?: number;
  drySequenceBreakers?: string[];
  /** 0 = off, 1 = Mirostat, 2 = Mirostat 2.0 (then only the logit bias and the temperature come before it). */
  mirostat?: number;
  mirostatTau?: number;
  mirostatEta?: number;
  /** [token, bias] pairs added to the logits first; -Infinity bans the token. */
  logitBias?: Array<[number, number]>;
  /** GBNF grammar text (already converted from a JSON schema where needed) and its root rule. */
  grammar: string | null;
  grammarRoot: string;
  /**
   * Constrain every candidate with the grammar before the samplers run, instead of checking only the sampled token
   * and constraining the whole vocabulary only when the grammar rejects it (common_sampler's lazy check, the
   * default). Slower; the same tokens when greedy. For tests and benchmarks.
   */
  grammarFirst?: boolean;
  /**
   * When a rejected choice makes the whole vocabulary constrained: check it through the model's token tree (a token
   * is rejected without a look when a token whose text begins it was), default true; false checks every token as
   * llama.cpp's grammar sampler does. The same tokens either way. For tests and benchmarks.
   */
  grammarTree?: boolean;
  /** A tool-call grammar that applies only once one of grammarTriggers appears in the output (llama.cpp's lazy grammar). */
  grammarLazy?: boolean;
  /** "word" (a word that is one token triggers on that token), "pattern" (a regex) or "patternFull" (anchored). */
  grammarTriggers?: { type: string; value: string }[];
  /** Text the template already wrote of the answer, fed to an eager grammar (and the thinking tracker) first. */
  grammarPrefill?: string;
  /** A lazy grammar neither applies nor sees tokens between these thinking tags. */
  thinkingStart?: string;
  thinkingEnd?: string[];
  /** Words that are single tokens and come out as text even when special (tool-call markers). */
  preservedTokens?: string[];
}

export interface NativeGenerateParams {
  /** The whole prompt as tokens; a prefix already in the KV cache is reused, not evaluated again. */
  tokens: Int32Array;
  /** A prompt with media from tokenizeMedia() (its tokens are then the prompt; `tokens` should be them too). */
  media?: NativeMediaPromptHandle;
  maxTokens: number;
  sampling: NativeSamplingOptions;
  /** Generation stops when the text ends with one of these; the stop string is not included in the output. */
  stop: string[];
  ignoreEos: boolean;
  /** When the context fills: discard half of the cached tokens after the first `keep` and go on (default false). */
  contextShift?: boolean;
  keep?: number;
  /** Minimum chunk of the cache that is shifted into place for the prompt after its common prefix; 0 = off. */
  cacheReuse?: number;
  abort: NativeAbortFlag;
  /** Called on the JS thread with text pieces, each a whole UTF-8 sequence (never a split character). */
  onText: (text: string) => void;
}

export type NativeStopReason = "eos" | "maxTokens" | "stop" | "abort" | "contextFull";

export interface NativeGenerateResult {
  text: string;
  /** Generated tokens (excluding a matched stop string's tokens is not attempted: these are the sampled tokens). */
  tokens: Int32Array;
  stopReason: NativeStopReason;
  promptTokens: number;
  /** Prompt tokens reused from the KV cache (not evaluated again). */
  cachedTokens: number;
  generatedTokens: number;
  promptMs: number;
  generateMs: number;
  /** Tokens context shifts dropped from the KV cache during this generation. */
  discardedTokens: number;
  /** How often the grammar rejected the sampled token, so that the whole vocabulary was constrained and sampled again. */
  grammarResamples: number;
}

/** One sequence's KV cache (llama_state_seq_get_data) and the tokens its cells hold. */
export interface NativeSequenceState {
  /** Empty when no sequence holds any of the tokens asked for. */
  state: Uint8Array;
  tokens: Int32Array;
}

export interface NativeBenchResult {
  /** Milliseconds to process nPrompt tokens in batches (0 when nPrompt is 0). */
  promptMs: number;
  /** Milliseconds to generate nGen tokens one at a time (0 when nGen is 0). */
  generateMs: number;
}

/** Counters of a context's llama_decode calls for generation, and of its batched decode loop. */
export interface NativeContextStats {
  /** llama_decode calls made by generate() (prompt chunks and generated tokens). */
  decodeCalls: number;
  /** Tokens those calls decoded. */
  decodedTokens: number;
  /** The most sequences (requests) one llama_decode call carried: above 1 only on a parallel context. */
  maxSequencesPerDecode: number;
  /** Requests generating on the batched loop now (0 for a context with parallel 1). */
  activeSequences: number;
  /** Requests handed to the loop that wait for a free sequence. */
  pendingRequests: number;
}

export interface NativeContext {
  /**
   * With parallel > 1, concurrent calls run together on the context's decode loop (more than `parallel` wait in
   * call order for a free sequence), each on the idle sequence whose cache shares the longest prefix with its prompt.
   */
  generate(params: NativeGenerateParams): Promise<NativeGenerateResult>;
  /** Pooled (and, if normalize, L2-normalised) embedding of the tokens; needs a context created with embeddings. */
  embed(tokens: Int32Array, normalize: boolean, abort: NativeAbortFlag): Promise<Float32Array>;
  /** llama-bench's measurement: pp = nPrompt random tokens in batches, tg = nGen tokens one by one, KV cleared before each. */
  bench(nPrompt: number, nGen: number, abort: NativeAbortFlag): Promise<NativeBenchResult>;
  /**
   * The state of the sequence whose cache shares the longest prefix with `tokens` (sequence 0 with parallel 1): its
   * KV cells and the tokens they hold. Runs when no request is generating.
   */
  saveSequence(tokens: Int32Array): Promise<NativeSequenceState>;
  /**
   * Puts a saved state into a sequence (sequence 0 with parallel 1, which is cleared first; else an idle one) and
   * records its tokens, so a prompt that starts with them reuses it. Resolves with the number of tokens restored;
   * rejects with llama.cpp's reason when the state does not fit this context. Runs when no request is generating.
   */
  restoreSequence(state: Uint8Array, tokens: Int32Array): Promise<number>;
  /** Tokens currently held in the KV cache (sequence 0; with parallel > 1, all sequences together). */
  cachedTokenCount(): number;
  stats(): NativeContextStats;
  /** Sequences of the context (1 unless created with parallel). */
  readonly parallel: number;
  /** Forget the KV cache. */
  clear(): void;
  /**
   * How many requests are on their way to generate() (parallel > 1): an idle context that gets a request while
   * others are announced waits for them (at most 25 ms), so that they share its first decode.
   */
  expect(count: number): void;
  readonly contextSize: number;
  /** The cells one sequence can hold: contextSize, or its share with parallel > 1 and kvUnified false. */
  readonly sequenceSize: number;
  readonly batchSize: number;
  /** The micro-batch: the most tokens one embedding (or any non-causal pass) can take. */
  readonly ubatchSize: number;
  /**
   * False for models llama.cpp runs without a KV cache (BERT-like encoders, embedding and diffusion models): they
   * can embed but not generate.
   */
  readonly hasMemory: boolean;
  dispose(): void;
  readonly disposed: boolean;
}

export interface NativeChatMessage {
  role: string;
  content: string;
}

/** A conversation to format, as llama-server hands it to common_chat_templates_apply. */
export interface NativeChatRequest {
  /** OpenAI-format messages as JSON text (common_chat_msgs_parse_oaicompat). */
  messages: string;
  /** OpenAI-format tools as JSON text, or null. */
  tools?: string | null;
  toolChoice?: "auto" | "none" | "required";
  /** With toolChoice "required": the call must be to this tool (the grammar and parser know only it). */
  namedTool?: string | null;
  /** null: what the template supports. */
  parallelToolCalls?: boolean | null;
  addAssistantPrompt?: boolean;
  enableThinking?: boolean;
  /** Parse reasoning apart from the content (reasoning_format "deepseek"; false: "none"). */
  extractReasoning?: boolean;
  /** Extra template variables, a JSON object as text (chat_template_kwargs). */
  templateKwargs?: string | null;
  /** A JSON schema (as text) the answer must follow. */
  jsonSchema?: string | null;
  /** A Jinja template instead of the GGUF's own (cached by source), and the name errors give it. */
  template?: string | null;
  templateName?: string | null;
}

/** An answer parsed with the template's parser. */
export interface NativeChatParsed {
  content: string;
  reasoning: string;
  toolCalls: { name: string; arguments: string; id: string }[];
}

/** common_chat_params of a request, and the parser of its answer. */
export interface NativeChatFormat {
  prompt: string;
  /** common_chat_format_name, e.g. "peg-native". */
  format: string;
  /** The tool-call (or response-format) grammar, "" when there is none. */
  grammar: string;
  grammarLazy: boolean;
  grammarTriggers: { type: "token" | "word" | "pattern" | "patternFull"; value: string }[];
  preservedTokens: string[];
  additionalStops: string[];
  /** What the template writes to open the assistant's answer (the parser reads it before the output). */
  generationPrompt: string;
  supportsThinking: boolean;
  thinkingStartTag: string;
  thinkingEndTags: string[];
  parallelToolCalls: boolean;
  parseToolCalls: boolean;
  /**
   * With a required (or named) call: the word that opens a call ("<tool_call>\n", "[TOOL_CALLS]"), written at the
   * end of the prompt so that the grammar holds from the first token (it is part of generationPrompt); "" if none.
   */
  forcedToolCallOpener: string;
  /** The name the template went by ("the GGUF's chat template (tokenizer.chat_template)", ...). */
  templateName: string;
  /** The model has no template and none was given: llama.cpp's ChatML stands in. */
  usesDefaultTemplate: boolean;
  /** What llama.cpp detected the template can do: supports_tools, supports_tool_calls, supports_parallel_tool_calls, ... */
  caps: Record<string, boolean>;
  /** Parses output text (without the generation prompt); partial: it may go on. Throws when a complete text does not follow the format. */
  parse(text: string, partial: boolean): NativeChatParsed;
}

export interface NativeModel {
  info(): NativeModelInfo;
  /** Every GGUF metadata key/value as strings (llama_model_meta_*). */
  metadata(): Record<string, string>;
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Promise<Int32Array>;
  detokenize(tokens: Int32Array, removeSpecial: boolean, unparseSpecial: boolean): Promise<string>;
  /**
   * Formats a conversation with the model's chat template through llama.cpp's common chat layer (Jinja); `template`
   * overrides the model's own (a built-in name such as "llama3" selects llama.cpp's built-in format).
   */
  applyChatTemplate(messages: NativeChatMessage[], addAssistantPrompt: boolean, template: string | null, templateName?: string | null): string;
  /**
   * Formats a conversation with tools as llama.cpp's chat layer does (common_chat_templates_apply): the prompt, the
   * tool-call grammar and its triggers, and the answer's parser. Throws naming the template (and the line) when it
   * cannot be parsed or rendered, raise_exception included.
   */
  formatChat(request: NativeChatRequest): NativeChatFormat;
  /** Converts a JSON schema (as JSON text) to a GBNF grammar with llama.cpp's converter. */
  jsonSchemaToGrammar(schemaJson: string): string;
  createContext(options: NativeContextOptions): Promise<NativeContext>;
  dispose(): void;
  readonly disposed: boolean;
}

export interface NativeBinding {
  systemInfo(): NativeSystemInfo;
  /** Routes llama.cpp's log to a JS function (null = silent); messages below minLevel are dropped in native code. */
  setLogger(callback: ((level: NativeLogLevel, text: string) => void) | null, minLevel: NativeLogLevel): void;
  createAbortFlag(): NativeAbortFlag;
  /**
   * The process is exiting (the main thread's process "exit" event): every native worker stops at its next check,
   * and this waits (a few seconds at most) until none is inside llama.cpp any more, so that exit() never destroys
   * llama.cpp's static state under a running llama_decode. Native work started afterwards stops at once.
   */
  prepareForExit(): void;
  /** Loads on a worker thread; onProgress(fraction 0..1) on the JS thread; abort stops the load (rejects). */
  loadModel(path: string, options: NativeModelOptions, onProgress: ((fraction: number) => void) | null, abort: NativeAbortFlag): Promise<NativeModel>;
  /** Loads a multimodal projector (mmproj GGUF) for `model` through libmtmd, on a worker thread (vision.cpp). */
  loadProjector(model: NativeModel, path: string, options: { threads: number; useGpu: boolean }): Promise<NativeProjectorHandle>;
  disposeProjector(projector: NativeProjectorHandle): void;
  projectorInfo(projector: NativeProjectorHandle): { vision: boolean; audio: boolean; path: string };
  /**
   * mtmd_tokenize of a prompt whose media markers stand for `media` (file bytes of images and audio, each of the
   * kind its part said), on a worker thread.
   */
  tokenizeMedia(projector: NativeProjectorHandle, text: string, media: { kind: "image" | "audio"; data: Uint8Array }[], addSpecial: boolean, parseSpecial: boolean): Promise<{ tokens: Int32Array; media: NativeMediaPromptHandle }>;
  /** libmtmd's default media marker, "<__media__>". */
  mediaMarker(): string;
}

/** A projector loaded by loadProjector() (an opaque native value). */
export interface NativeProjectorHandle {
  readonly __brand: "NativeProjector";
}

/** A prompt tokenized with its media by tokenizeMedia() (an opaque native value). */
export interface NativeMediaPromptHandle {
  readonly __brand: "NativeMediaPrompt";
}
