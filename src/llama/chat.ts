/**
 * ChatSession: a conversation with a model. Each turn formats the whole history with the model's chat template
 * and generates on the session's context; since the formatted history of the previous turns is already in the KV
 * cache, only the new message is evaluated. On a parallel context (the default context of a model loaded with
 * parallel > 1) a turn goes to the sequence that holds the conversation so far, as long as no other request needed it.
 */
import { modelFingerprint, readChatFile, writeChatFile, type ChatFile } from "./chat-file.js";
import { chatWindow, CHAT_CACHE_REUSE } from "./chat-window.js";
import { createCompletionStream, type CompletionResult, type CompletionStream } from "./completion.js";
import type { LlamaContext } from "./context.js";
import type { ModelHandle } from "./model-handle.js";
import { LlamaOciError } from "../errors.js";
import { disposedError } from "./native-errors.js";
import { invalid, type ContextOptions, type GenerationOptions } from "./options.js";
import { TaskQueue } from "./queue.js";

export interface ChatMessage {
  /** "system", "user" or "assistant" (templates may know other roles, e.g. "tool"). */
  role: string;
  content: string;
}

export interface ChatSessionOptions extends ContextOptions {
  /** Put first in the conversation as a "system" message. */
  systemPrompt?: string;
  /** A Jinja chat template used instead of the GGUF's own. */
  chatTemplate?: string;
  /** Earlier turns to continue from (after the system prompt). */
  history?: ChatMessage[];
  /** Generate on this context instead of one the session creates (and disposes) itself. */
  context?: LlamaContext;
  /**
   * When the conversation outgrows the context: drop its oldest turns (keeping the system prompt) so that the
   * prompt leaves room for the answer, and shift the KV cache while answering, instead of refusing the message or
   * stopping with "contextFull" (default true; a turn's `contextShift` option overrides it).
   */
  contextShift?: boolean;
}

const CHAT_TOKENIZE = { addSpecial: true, parseSpecial: true } as const;

/** @internal How a model hands a chat a context it shares with others (a sequence of its parallel default context). */
export interface ChatSessionInternals {
  sharedContext?: () => Promise<LlamaContext>;
}

/** `Model` is the model the session talks to: LlamaModel for every session that model.createChat() returns. */
export class ChatSession<Model extends ModelHandle<LlamaContext> = ModelHandle<LlamaContext>> {
  readonly model: Model;
  #options: ChatSessionOptions;
  #history: ChatMessage[];
  #context: Promise<LlamaContext> | undefined;
  #ownsContext: boolean;
  #sharedContext: (() => Promise<LlamaContext>) | undefined;
  /** Stops this session's running turn on dispose() when the context is shared (an own context is disposed instead). */
  #stopping = new AbortController();
  #queue = new TaskQueue();
  #disposing: Promise<void> | undefined;
  /** Index in #history of the first message after the system prompt still in the model's context. */
  #windowStart = 0;
  /** What the last turn left in its sequence of the KV cache: its prompt and the generated tokens. */
  #lastTokens: Int32Array | undefined;

  /** @internal Use model.createChat(). */
  constructor(model: Model, options: ChatSessionOptions, internals: ChatSessionInternals = {}) {
    this.model = model;
    // The model's own system prompt (an artifact's) when the session is given none.
    this.#options = options.systemPrompt === undefined && model.systemPrompt !== undefined ? { ...options, systemPrompt: model.systemPrompt } : options;
    this.#history = initialHistory(this.#options);
    this.#sharedContext = options.context === undefined ? internals.sharedContext : undefined;
    this.#ownsContext = options.context === undefined && this.#sharedContext === undefined;
    if (options.context) this.#context = Promise.resolve(options.context);
  }

  /** The conversation so far, system prompt included (a copy). */
  get history(): ChatMessage[] {
    return this.#history.map((message) => ({ ...message }));
  }

  get disposed(): boolean {
    return this.#disposing !== undefined;
  }

  /** Messages at the start of the history (after the system prompt) dropped from the model's context to make room. */
  get droppedMessages(): number {
    const system = this.#history[0]?.role === "system" ? 1 : 0;
    return Math.max(0, this.#windowStart - system);
  }

  /** Sends a user message and returns the assistant's answer (streamed through onTextChunk when given). */
  async send(message: string, options: GenerationOptions = {}): Promise<string> {
    return (await this.sendWithMeta(message, options)).text;
  }

  /**
   * Like send(), with stop reason and timings. An aborted answer resolves with what was generated so far, and
   * that partial answer stays in the history.
   */
  sendWithMeta(message: string, options: GenerationOptions = {}): Promise<CompletionResult> {
    this.#assertUsable();
    if (typeof message !== "string") throw invalid("a chat message must be a string");
    // Turns are serialised here, not only on the context, because each turn reads the history the last one wrote.
    return this.#queue.run(async () => {
      this.#assertUsable();
      const context = await this.#getContext();
      const messages = [...this.#history, { role: "user", content: message }];
      const contextShift = options.contextShift ?? this.#options.contextShift ?? true;
      const maxTokens = options.maxTokens ?? this.model.generationDefaults.maxTokens;
      const format = async (list: ChatMessage[], addAssistantPrompt: boolean) => {
        const text = this.model.applyChatTemplate(list, { addAssistantPrompt, template: this.#options.chatTemplate });
        return dropDoubleBos(await this.model.tokenize(text, CHAT_TOKENIZE), this.model.info.bosToken);
      };
      const window = await chatWindow(messages, this.#windowStart, { format, contextSize: context.contextSize, contextShift, maxTokens });
      const signal = this.#sharedContext ? anySignal(options.signal, this.#stopping.signal) : options.signal;
      const shift = contextShift ? { cacheReuse: CHAT_CACHE_REUSE, keepTokens: window.keep } : {};
      const result = await context.completeWithMeta(window.tokens, { ...shift, ...options, contextShift, signal });
      this.#history = [...messages, { role: "assistant", content: result.text }];
      this.#windowStart = window.start;
      this.#lastTokens = concatTokens(window.tokens, result.tokens);
      return result;
    });
  }

  /** Streams the answer: `for await (const piece of chat.stream("Hi"))`; `.result` has the meta. */
  stream(message: string, options: GenerationOptions = {}): CompletionStream {
    this.#assertUsable();
    return createCompletionStream((onTextChunk, signal) => this.sendWithMeta(message, { ...options, onTextChunk, signal }), options);
  }

  /** Forgets the conversation (keeping the system prompt, or `history` when given). */
  async reset(history?: ChatMessage[]): Promise<void> {
    this.#assertUsable();
    await this.#queue.run(() => {
      this.#history = initialHistory({ ...this.#options, history });
      this.#windowStart = 0;
      this.#lastTokens = undefined;
    });
  }

  /**
   * Saves the conversation to `path` (written to a temporary file, then renamed): its history and settings, and
   * its sequence of the KV cache with the tokens it holds, so that llama.restoreChat() continues it without
   * evaluating the conversation again. Waits for a running turn to end. The file is tied to this model file.
   */
  async save(path: string): Promise<void> {
    this.#assertUsable();
    if (typeof path !== "string" || path === "") throw invalid("save() needs the path of the file to write");
    await this.#queue.run(async () => {
      this.#assertUsable();
      const context = this.#lastTokens ? await this.#getContext() : undefined;
      const snapshot = context && this.#lastTokens ? await context.saveSequence(this.#lastTokens) : undefined;
      const model = this.model;
      const fingerprint = await modelFingerprint(model.path, model.metadata, model.info.description, model.pull?.digest);
      const { systemPrompt, chatTemplate, contextShift } = this.#options;
      await writeChatFile(
        path,
        {
          savedAt: new Date().toISOString(),
          model: fingerprint,
          history: this.history,
          windowStart: this.#windowStart,
          ...(systemPrompt === undefined ? {} : { systemPrompt }),
          ...(chatTemplate === undefined ? {} : { chatTemplate }),
          ...(contextShift === undefined ? {} : { contextShift }),
          contextSize: context?.contextSize ?? 0,
        },
        snapshot?.tokens ?? new Int32Array(0),
        snapshot?.state ?? new Uint8Array(0),
      );
    });
  }

  /** @internal llama.restoreChat(): puts a saved file's conversation and KV state into this new session. */
  async restoreFrom(file: ChatFile): Promise<void> {
    this.#assertUsable();
    await this.#queue.run(async () => {
      this.#history = file.header.history.map(({ role, content }) => ({ role, content }));
      this.#windowStart = Math.min(file.header.windowStart, this.#history.length);
      if (file.tokens.length === 0) return;
      const context = await this.#getContext();
      await context.restoreSequence(file.state, file.tokens);
      this.#lastTokens = file.tokens;
    });
  }

  /**
   * Frees the session's own context (a context passed in options is left alone). On a model's shared parallel
   * context, stops the session's running turn (it resolves with stopReason "abort"). Idempotent.
   */
  dispose(): Promise<void> {
    this.#disposing ??= (async () => {
      if (this.#sharedContext) this.#stopping.abort(new Error("the chat session was disposed"));
      const context = this.#context;
      if (this.#ownsContext && context) {
        const resolved = await context.catch(() => undefined);
        await resolved?.dispose();
      }
      await this.#queue.idle();
    })();
    return this.#disposing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  #assertUsable(): void {
    if (this.#disposing) throw disposedError("chat session");
    if (this.model.disposed) throw disposedError("model");
  }

  #getContext(): Promise<LlamaContext> {
    if (!this.#context && this.#sharedContext) {
      // The model's shared context: not ours to dispose, and created again by the model if its creation failed.
      return this.#sharedContext();
    }
    if (!this.#context) {
      const { systemPrompt, chatTemplate, history, context, ...contextOptions } = this.#options;
      // One conversation needs one sequence, whatever the model's default `parallel`.
      const promise = this.model.createContext({ ...contextOptions, parallel: contextOptions.parallel ?? 1 });
      promise.catch(() => {
        if (this.#context === promise) this.#context = undefined;
      });
      this.#context = promise;
    }
    return this.#context;
  }
}

function concatTokens(a: Int32Array, b: Int32Array): Int32Array {
  const out = new Int32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** @internal llama.restoreChat(): reads the file and checks that it belongs to `model`. */
export async function readChatFileFor(model: ModelHandle, path: string): Promise<ChatFile> {
  const file = await readChatFile(path);
  const own = await modelFingerprint(model.path, model.metadata, model.info.description);
  const saved = file.header.model;
  if (saved.fingerprint !== own.fingerprint) {
    throw new LlamaOciError("CHAT_FILE", `${path} was saved with another model (${saved.description}, ${saved.sizeBytes} bytes), not ${own.description} (${model.path}, ${own.sizeBytes} bytes)`, {
      hint: "restore it with the model it was saved with",
    });
  }
  return file;
}

function anySignal(signal: AbortSignal | undefined, other: AbortSignal): AbortSignal {
  return signal ? AbortSignal.any([signal, other]) : other;
}

function initialHistory(options: Pick<ChatSessionOptions, "systemPrompt" | "history">): ChatMessage[] {
  const history: ChatMessage[] = [];
  if (options.systemPrompt !== undefined) history.push({ role: "system", content: options.systemPrompt });
  for (const message of options.history ?? []) {
    if (typeof message?.role !== "string" || typeof message.content !== "string") {
      throw invalid("chat history entries must be { role: string, content: string }");
    }
    history.push({ role: message.role, content: message.content });
  }
  return history;
}

/** Templates that write the BOS token themselves would get a second one from tokenization's addSpecial. */
function dropDoubleBos(tokens: Int32Array, bos: number): Int32Array {
  return tokens.length >= 2 && bos >= 0 && tokens[0] === bos && tokens[1] === bos ? tokens.subarray(1) : tokens;
}
