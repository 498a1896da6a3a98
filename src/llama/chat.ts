/**
 * ChatSession: a conversation with a model. Each turn formats the whole history with the model's chat template
 * through llama.cpp's chat layer (tools included) and generates on the session's context; since the formatted
 * history of the previous turns is already in the KV cache, only the new messages are evaluated. The answer is
 * parsed with the template's own parser into content, reasoning and tool calls, streamed as deltas. On a parallel
 * context (the default context of a model loaded with parallel > 1) a turn goes to the sequence that holds the
 * conversation so far, as long as no other request needed it.
 */
import {
  ChatOutputParser,
  chatGrammarOf,
  toolCallIdMaker,
  type ChatDelta,
  type ChatFormatOptions,
  type ChatMessage,
  type ChatTextPart,
  type ChatToolCall,
} from "./chat-format.js";
import { modelFingerprint, readChatFile, writeChatFile, type ChatFile } from "./chat-file.js";
import { chatWindow, CHAT_CACHE_REUSE } from "./chat-window.js";
import { createPieceStream, type CompletionResult, type PieceStream } from "./completion.js";
import type { LlamaContext } from "./context.js";
import { checkMediaPart, isMediaPart, mediaOf, type MediaPrompt } from "./media.js";
import type { ModelHandle } from "./model-handle.js";
import { LlamaOciError } from "../errors.js";
import { disposedError } from "./native-errors.js";
import type { NativeChatFormat } from "./native-types.js";
import { invalid, type ContextOptions, type GenerationOptions } from "./options.js";
import { TaskQueue } from "./queue.js";

export type { ChatAudioPart, ChatImagePart, ChatMediaPart } from "./media.js";
export type { ChatDelta, ChatMessage, ChatTextPart, ChatTool, ChatToolCall, ChatToolCallDelta, ChatToolChoice } from "./chat-format.js";

export interface ChatSessionOptions extends ContextOptions, ChatFormatOptions {
  /** Put first in the conversation as a "system" message. */
  systemPrompt?: string;
  /** A Jinja chat template used instead of the model's own (the artifact's, else the GGUF's). */
  chatTemplate?: string;
  /** Earlier turns to continue from (after the system prompt), tool calls and tool results included. */
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

/** One turn's options: generation options, and tools, tool choice and thinking (which override the session's). */
export interface ChatSendOptions extends GenerationOptions, ChatFormatOptions {
  /** Each change of the answer: content, reasoning and tool-call pieces. onTextChunk gets the content pieces. */
  onDelta?: (delta: ChatDelta) => void;
}

/** The assistant's answer: content, reasoning and tool calls, with the completion's stop reason, tokens and timings. */
export interface ChatReply extends CompletionResult {
  /** The answer's text (without reasoning and tool-call markup). */
  content: string;
  /** The model's thinking, when it is a reasoning model ("" otherwise). */
  reasoning: string;
  /** The calls the answer makes; answer each with a "tool" message ({ role: "tool", toolCallId, content }). */
  toolCalls: ChatToolCall[];
  /** The assistant message the turn added to the history. */
  message: ChatMessage;
}

/** The answer's deltas as they are generated; `result` has the whole reply. Leaving the loop early stops it. */
export type ChatStream = PieceStream<ChatDelta, ChatReply>;

/** What a turn sends: a user message's text, a message (a tool result, say), or several messages. */
export type ChatInput = string | ChatMessage | readonly ChatMessage[];

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
    return this.#history.map(copyMessage);
  }

  get disposed(): boolean {
    return this.#disposing !== undefined;
  }

  /** Messages at the start of the history (after the system prompt) dropped from the model's context to make room. */
  get droppedMessages(): number {
    const system = this.#history[0]?.role === "system" ? 1 : 0;
    return Math.max(0, this.#windowStart - system);
  }

  /**
   * Sends a user message (or tool results, or any messages) and returns the assistant's answer: `{ content,
   * reasoning, toolCalls }` with the stop reason and timings. With `tools`, the answer may call them; send each
   * call's result back as a "tool" message to get the next answer. An aborted answer resolves with what was
   * generated so far, and that partial answer stays in the history.
   */
  async send(input: ChatInput, options: ChatSendOptions = {}): Promise<ChatReply> {
    this.#assertUsable();
    const added = inputMessages(input);
    // Turns are serialised here, not only on the context, because each turn reads the history the last one wrote.
    return await this.#queue.run(async () => {
      this.#assertUsable();
      const context = await this.#getContext();
      const messages = [...this.#history, ...added];
      const { onDelta, onTextChunk, tools, toolChoice, parallelToolCalls, thinking, templateVariables, ...generation } = options;
      const s = this.#options;
      const formatOptions = {
        tools: tools ?? s.tools,
        toolChoice: toolChoice ?? s.toolChoice,
        parallelToolCalls: parallelToolCalls ?? s.parallelToolCalls,
        thinking: thinking ?? s.thinking,
        templateVariables: templateVariables ?? s.templateVariables,
        ...(s.chatTemplate !== undefined ? { template: s.chatTemplate, templateName: "the chat session's chatTemplate" } : {}),
      };
      // The window of the conversation that fits the context (oldest turns dropped with contextShift); the last
      // list formatted with the assistant's prompt is the window's, and its format (grammar, parser) is the turn's.
      let windowFormat: NativeChatFormat | undefined;
      const formatList = async (list: ChatMessage[], addAssistantPrompt: boolean) => {
        const formatted = this.model.formatChat(list, { ...formatOptions, addAssistantPrompt });
        if (addAssistantPrompt) windowFormat = formatted;
        return dropDoubleBos(await this.model.tokenize(formatted.prompt, CHAT_TOKENIZE), this.model.info.bosToken);
      };
      // With media (images, audio) the whole conversation is sent and the context does not shift (as llama-server
      // does with a projector): an image's or a clip's embeddings cannot be cut in part.
      const withMedia = mediaOf(messages).length > 0;
      const contextShift = !withMedia && (generation.contextShift ?? s.contextShift ?? true);
      const maxTokens = generation.maxTokens ?? this.model.generationDefaults.maxTokens;
      let window: { tokens: Int32Array; start: number; keep: number };
      let media: MediaPrompt | undefined;
      if (withMedia) {
        windowFormat = this.model.formatChat(messages, { ...formatOptions, addAssistantPrompt: true });
        media = await this.model.tokenizeWithMedia(windowFormat.prompt, messages);
        window = { tokens: media.tokens, start: 0, keep: 0 };
      } else {
        window = await chatWindow(messages, this.#windowStart, { format: formatList, contextSize: context.sequenceSize, contextShift, maxTokens });
      }
      const format = windowFormat!;
      const tokens = window.tokens;
      const chatGrammar = chatGrammarOf(format);
      if (chatGrammar && (generation.grammar !== undefined || generation.jsonSchema !== undefined)) {
        throw invalid("a grammar or jsonSchema cannot be combined with tools (the template's tool-call grammar applies)");
      }
      const parser = new ChatOutputParser(format, toolCallIdMaker(this.model.chatTemplateSource(s.chatTemplate)));
      const emit = (delta: ChatDelta | undefined) => {
        if (!delta) return;
        onDelta?.(delta);
        if (delta.content !== "") onTextChunk?.(delta.content);
      };
      const callerSignal = this.#sharedContext ? anySignal(generation.signal, this.#stopping.signal) : generation.signal;
      const signal = anySignal(callerSignal, parser.limit);
      const stop = [...(generation.stop ?? this.model.generationDefaults.stop ?? []), ...format.additionalStops];
      const shift = contextShift ? { cacheReuse: CHAT_CACHE_REUSE, keepTokens: window.keep } : {};
      let result = await context.completeWithMeta(media ?? tokens, {
        ...shift,
        ...generation,
        contextShift,
        ...(stop.length > 0 ? { stop } : {}),
        ...(chatGrammar ? { chatGrammar } : {}),
        signal,
        // A turn nobody streams is parsed once, at the end.
        onTextChunk: onDelta || onTextChunk ? (text) => emit(parser.push(text)) : (text) => parser.append(text),
      });
      // The model began a call beyond the allowed ones: the answer ended there, as at a stop string.
      if (result.stopReason === "abort" && parser.limit.aborted && callerSignal?.aborted !== true) result = { ...result, stopReason: "stop" };
      const finished = parser.finish(result.stopReason === "eos" || result.stopReason === "stop");
      emit(finished.delta);
      const parsed = finished.message;
      // A call cut short (maxTokens, abort) stays in the reply as it came, but not in the history: its arguments are
      // not JSON, and the template could not render the next turn.
      const whole = parsed.toolCalls.filter((call) => isJson(call.arguments));
      const message: ChatMessage = {
        role: "assistant",
        content: parsed.content,
        ...(parsed.reasoning !== "" ? { reasoning: parsed.reasoning } : {}),
        ...(whole.length > 0 ? { toolCalls: whole.map((call) => ({ ...call })) } : {}),
      };
      this.#history = [...messages, message];
      this.#windowStart = window.start;
      this.#lastTokens = concatTokens(tokens, result.tokens);
      const reply: ChatMessage = { ...message, ...(parsed.toolCalls.length > 0 ? { toolCalls: parsed.toolCalls.map((call) => ({ ...call })) } : {}) };
      return { ...result, content: parsed.content, reasoning: parsed.reasoning, toolCalls: parsed.toolCalls, message: reply };
    });
  }

  /** The same as send(), which now returns the whole reply (kept for code written against earlier versions). */
  sendWithMeta(input: ChatInput, options: ChatSendOptions = {}): Promise<ChatReply> {
    return this.send(input, options);
  }

  /**
   * Streams the answer as deltas: `for await (const { content, reasoning, toolCalls } of chat.stream("Hi"))`;
   * `.result` has the whole reply.
   */
  stream(input: ChatInput, options: ChatSendOptions = {}): ChatStream {
    this.#assertUsable();
    return createPieceStream<ChatDelta, ChatReply>(
      (push, signal) =>
        this.send(input, {
          ...options,
          signal,
          onDelta: (delta) => {
            push(delta);
            options.onDelta?.(delta);
          },
        }),
      options.signal,
    );
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
      this.#history = file.header.history.map((message, i) => checkedMessage(message, `the saved chat's history entry ${i}`));
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
      const { systemPrompt, chatTemplate, history, context, tools, toolChoice, parallelToolCalls, thinking, templateVariables, ...contextOptions } = this.#options;
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

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

function anySignal(signal: AbortSignal | undefined, other: AbortSignal): AbortSignal {
  return signal ? AbortSignal.any([signal, other]) : other;
}

function inputMessages(input: ChatInput): ChatMessage[] {
  if (typeof input === "string") return [{ role: "user", content: input }];
  const list = Array.isArray(input) ? (input as readonly ChatMessage[]) : [input as ChatMessage];
  if (list.length === 0) throw invalid("send() needs a message");
  return list.map((message, i) => checkedMessage(message, `message ${i}`));
}

function initialHistory(options: Pick<ChatSessionOptions, "systemPrompt" | "history">): ChatMessage[] {
  const history: ChatMessage[] = [];
  if (options.systemPrompt !== undefined) history.push({ role: "system", content: options.systemPrompt });
  for (const [i, message] of (options.history ?? []).entries()) history.push(checkedMessage(message, `chat history entry ${i}`));
  return history;
}

/** A copy of a message, checked: a role, and text (or text parts); tool calls and results as ChatMessage has them. */
function checkedMessage(message: ChatMessage, what: string): ChatMessage {
  if (typeof message !== "object" || message === null || typeof message.role !== "string" || message.role === "") {
    throw invalid(`${what} must be { role: string, content: string }`);
  }
  const content = message.content ?? "";
  if (typeof content !== "string" && !(Array.isArray(content) && content.every((part: ChatTextPart) => isMediaPart(part) || (part?.type === "text" && typeof part.text === "string")))) {
    throw invalid(`${what}: content must be a string or an array of { type: "text", text }, { type: "image", data | path } and { type: "audio", data | path } parts`);
  }
  if (Array.isArray(content)) for (const [j, part] of content.entries()) if (isMediaPart(part)) checkMediaPart(part, `${what}: content part ${j}`);
  if (message.toolCalls !== undefined && !Array.isArray(message.toolCalls)) throw invalid(`${what}: toolCalls must be an array`);
  return copyMessage({ ...message, content });
}

function copyMessage(message: ChatMessage): ChatMessage {
  return {
    ...message,
    content: typeof message.content === "string" ? message.content : message.content.map((part) => ({ ...part })),
    ...(message.toolCalls ? { toolCalls: message.toolCalls.map((call) => ({ ...call })) } : {}),
  };
}

/** Templates that write the BOS token themselves would get a second one from tokenization's addSpecial. */
function dropDoubleBos(tokens: Int32Array, bos: number): Int32Array {
  return tokens.length >= 2 && bos >= 0 && tokens[0] === bos && tokens[1] === bos ? tokens.subarray(1) : tokens;
}
