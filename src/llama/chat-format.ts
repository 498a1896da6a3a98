/**
 * Chat messages, tools and answers as llama.cpp's chat layer sees them: conversations are handed to the template as
 * OpenAI-format messages (what llama-server passes to common_chat_msgs_parse_oaicompat), tools as OpenAI function
 * tools, and the model's output is parsed back with the template's own parser into content, reasoning and tool
 * calls, streamed as deltas. ChatSession and the server's /v1/chat/completions and /api/chat share this.
 */
import { randomBytes } from "node:crypto";
import { LlamaOciError } from "../errors.js";
import { MEDIA_MARKER, checkMediaPart, isMediaPart, type ChatMediaPart } from "./media.js";
import type { NativeChatFormat, NativeChatParsed } from "./native-types.js";
import { invalid } from "./options.js";

/** A text part of a message's content (OpenAI's `{ type: "text", text }`). */
export interface ChatTextPart {
  type: "text";
  text: string;
}

/** Text, or parts: text and (for a model with a projector) images and audio. */
export type ChatContent = string | readonly (ChatTextPart | ChatMediaPart)[];

/** A call the assistant made: `arguments` is the JSON text of the arguments, as OpenAI's API gives it. */
export interface ChatToolCall {
  id: string;
  name: string;
  arguments: string;
}

export interface ChatMessage {
  /** "system", "user", "assistant" or "tool" (templates may know others). */
  role: string;
  /** Text, or text parts; may be empty on an assistant message that only calls tools. */
  content: ChatContent;
  /** The assistant's reasoning (thinking) before its answer, which templates may show the model again or drop. */
  reasoning?: string;
  /** The assistant's tool calls (arguments as JSON text, or an object that is written as JSON). */
  toolCalls?: readonly (Omit<ChatToolCall, "arguments"> & { arguments: string | object })[];
  /** On a "tool" message: the id of the call this is the result of. */
  toolCallId?: string;
  /** On a "tool" message: the name of the tool that was called. */
  name?: string;
}

/** A function the model may call: its name, what it does, and a JSON schema of its arguments. */
export interface ChatTool {
  name: string;
  description?: string;
  /** JSON schema of the arguments (an object schema); default: any object. */
  parameters?: object;
}

/**
 * "auto": the model decides (default); "none": no calls; "required": the answer is one or more calls; `{ name }`:
 * the answer is a call to that tool. "required" and a named tool constrain the output with the grammar llama.cpp
 * derives from the template, so even a weak model produces a valid call.
 */
export type ChatToolChoice = "auto" | "none" | "required" | { name: string };

export interface ChatFormatOptions {
  tools?: readonly ChatTool[];
  toolChoice?: ChatToolChoice;
  /** Allow more than one call in an answer (default: what the template supports). */
  parallelToolCalls?: boolean;
  /** Let a reasoning model think before answering (llama.cpp's enable_thinking; default true). */
  thinking?: boolean;
  /** Extra variables for the template (llama-server's chat_template_kwargs), e.g. { reasoning_effort: "high" }. */
  templateVariables?: Record<string, unknown>;
}

/** What changed in the answer: new content, new reasoning, and new or growing tool calls (by index). */
export interface ChatDelta {
  content: string;
  reasoning: string;
  toolCalls: ChatToolCallDelta[];
}

export interface ChatToolCallDelta {
  /** Which call of the answer (0, 1, ...). */
  index: number;
  /** Given once, in the call's first delta. */
  id?: string;
  /** Given once, in the call's first delta. */
  name?: string;
  /** The next piece of the arguments' JSON text. */
  arguments: string;
}

/** An answer parsed with the template's parser. */
export interface ParsedChatMessage {
  content: string;
  reasoning: string;
  toolCalls: ChatToolCall[];
}

/** A tool-call grammar from the chat template, with what the sampler needs to apply it (internal). */
export interface ChatGrammar {
  grammar: string;
  lazy: boolean;
  triggers: { type: string; value: string }[];
  /** The part of the answer the template already wrote: fed to an eager grammar first (and to the thinking tracker). */
  prefill: string;
  thinkingStart: string;
  thinkingEnd: string[];
  preservedTokens: string[];
}

const TOOL_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** Checks tools and brings both ours and OpenAI's `{ type: "function", function }` shape to ChatTool. */
export function normalizeTools(tools: readonly unknown[] | undefined, param = "tools"): ChatTool[] {
  if (tools === undefined) return [];
  if (!Array.isArray(tools)) throw invalid(`${param} must be an array`);
  const out: ChatTool[] = [];
  const names = new Set<string>();
  for (const [i, raw] of tools.entries()) {
    const where = `${param}[${i}]`;
    if (typeof raw !== "object" || raw === null) throw invalid(`${where} must be an object`);
    let tool = raw as Record<string, unknown>;
    if (tool.type !== undefined || tool.function !== undefined) {
      if (tool.type !== "function") throw invalid(`${where}.type must be "function" (got ${JSON.stringify(tool.type)})`);
      if (typeof tool.function !== "object" || tool.function === null) throw invalid(`${where}.function must be an object`);
      tool = tool.function as Record<string, unknown>;
    }
    const { name, description, parameters } = tool;
    if (typeof name !== "string" || !TOOL_NAME.test(name)) {
      throw invalid(`${where} needs a name of 1 to 64 letters, digits, "_", "-" or "." (got ${JSON.stringify(name)})`);
    }
    if (names.has(name)) throw invalid(`${where}: two tools are named "${name}"`);
    names.add(name);
    if (description !== undefined && description !== null && typeof description !== "string") throw invalid(`${where}.description must be a string`);
    if (parameters !== undefined && parameters !== null && (typeof parameters !== "object" || Array.isArray(parameters))) {
      throw invalid(`${where}.parameters must be a JSON schema object`);
    }
    out.push({ name, ...(typeof description === "string" ? { description } : {}), ...(parameters ? { parameters } : {}) });
  }
  return out;
}

/** "auto", "none", "required" or a tool's name; also OpenAI's `{ type: "function", function: { name } }`. */
export function normalizeToolChoice(choice: unknown, tools: readonly ChatTool[], param = "toolChoice"): { choice: "auto" | "none" | "required"; named?: string } {
  if (choice === undefined || choice === null || choice === "auto") return { choice: "auto" };
  if (choice === "none" || choice === "required") return { choice };
  if (typeof choice === "object") {
    const object = choice as { name?: unknown; type?: unknown; function?: { name?: unknown } };
    const name = object.type === "function" ? object.function?.name : object.name;
    if (typeof name === "string") {
      if (!tools.some((tool) => tool.name === name)) throw invalid(`${param} names the tool "${name}", which is not among the tools`);
      return { choice: "required", named: name };
    }
  }
  throw invalid(`${param} must be "auto", "none", "required" or { name } of a tool (got ${JSON.stringify(choice)})`);
}

/** Our messages as OpenAI-format JSON, the way llama-server hands them to llama.cpp's chat layer. */
export function toOpenAiMessages(messages: readonly ChatMessage[]): object[] {
  return messages.map((message, i) => {
    if (typeof message !== "object" || message === null || typeof message.role !== "string" || message.role === "") {
      throw invalid(`message ${i} needs a role`);
    }
    const out: Record<string, unknown> = { role: message.role, content: openAiContent(message.content, i) };
    if (message.reasoning !== undefined && message.reasoning !== "") {
      if (typeof message.reasoning !== "string") throw invalid(`message ${i}: reasoning must be a string`);
      out.reasoning_content = message.reasoning;
    }
    if (message.toolCalls !== undefined && message.toolCalls.length > 0) {
      const calls: unknown = message.toolCalls;
      if (!Array.isArray(calls)) throw invalid(`message ${i}: toolCalls must be an array`);
      out.tool_calls = message.toolCalls.map((call, j) => {
        if (typeof call?.name !== "string" || call.name === "") throw invalid(`message ${i}: tool call ${j} needs a name`);
        const args = typeof call.arguments === "string" ? call.arguments : JSON.stringify(call.arguments ?? {});
        return { type: "function", ...(call.id ? { id: String(call.id) } : {}), function: { name: call.name, arguments: args } };
      });
    }
    if (message.toolCallId !== undefined) out.tool_call_id = String(message.toolCallId);
    if (message.name !== undefined) out.name = String(message.name);
    return out;
  });
}

function openAiContent(content: ChatContent | null | undefined, i: number): string | object[] {
  if (content === undefined || content === null) return "";
  if (typeof content === "string") return content;
  const parts: unknown = content;
  if (!Array.isArray(parts)) throw invalid(`message ${i}: content must be a string or an array of text parts`);
  return content.map((part, j) => {
    if (isMediaPart(part)) {
      // The media's place in the prompt, as llama-server renders an image_url or input_audio part; libmtmd puts the
      // image's or the clip's embeddings there.
      checkMediaPart(part, `message ${i}: content part ${j}`);
      return { type: "media_marker", text: MEDIA_MARKER };
    }
    if (part?.type !== "text" || typeof part.text !== "string") throw invalid(`message ${i}: content part ${j} must be { type: "text", text }, { type: "image", data | path } or { type: "audio", data | path }`);
    return { type: "text", text: part.text };
  });
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * JSON for llama.cpp's parser, which refuses the escape of a lone UTF-16 surrogate: each becomes U+FFFD, as it does
 * on the way into native code as UTF-8.
 */
export function toNativeJson(value: unknown): string {
  return JSON.stringify(value, (_key, item: unknown) => (typeof item === "string" ? item.replace(LONE_SURROGATE, "\uFFFD") : item));
}

/** The text of a message's content (parts joined by newlines). */
export function contentText(content: ChatContent): string {
  return typeof content === "string" ? content : content.flatMap((part) => (part.type === "text" ? [part.text] : [])).join("\n");
}

/** The tool-call grammar of a formatted chat, if the template gives one for the request. */
export function chatGrammarOf(format: NativeChatFormat): ChatGrammar | undefined {
  if (format.grammar === "") return undefined;
  return {
    grammar: format.grammar,
    lazy: format.grammarLazy,
    triggers: format.grammarTriggers,
    prefill: format.generationPrompt,
    thinkingStart: format.thinkingStartTag,
    thinkingEnd: format.thinkingEndTags,
    preservedTokens: format.preservedTokens,
  };
}

/** Ids for calls the model did not name itself: "call_" and 24 letters and digits, or 9 for Mistral's templates. */
export function toolCallIdMaker(templateSource: string | undefined): () => string {
  const short = templateSource !== undefined && /length\s*(!=|==)\s*9/.test(templateSource);
  return () => (short ? alphanumeric(9) : `call_${alphanumeric(24)}`);
}

const ALPHANUMERIC = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

function alphanumeric(length: number): string {
  const bytes = randomBytes(length * 2);
  let out = "";
  for (let i = 0; out.length < length && i < bytes.length; i++) {
    const b = bytes[i]!;
    if (b < 248) out += ALPHANUMERIC[b % 62];
  }
  while (out.length < length) out += ALPHANUMERIC[0];
  return out;
}

/**
 * Parses a streamed answer with the template's parser as it grows (llama-server's update_chat_msg): each piece of
 * raw text gives the delta of content, reasoning and tool calls since the last one. A call's id and name are given
 * once, when its arguments begin (never a half-parsed name); ids the model did not write (or had not written when
 * the call was announced) are made up.
 */
export class ChatOutputParser {
  #parse: (text: string, partial: boolean) => NativeChatParsed;
  #newId: () => string;
  #maxCalls: number;
  #text = "";
  #ids: string[] = [];
  #watch: boolean;
  #limit = new AbortController();
  #sent = { content: "", reasoning: "", calls: [] as { named: boolean; arguments: string }[] };

  /** Without parallel calls, an answer keeps its first call (llama.cpp's grammar would let a model write more). */
  constructor(format: Pick<NativeChatFormat, "parse" | "parallelToolCalls" | "parseToolCalls" | "grammar">, newId: () => string) {
    this.#parse = format.parse;
    this.#newId = newId;
    this.#maxCalls = format.parallelToolCalls ? Infinity : 1;
    // llama.cpp's tool-call grammars let a model go on to a second call even without parallel calls; the answer is
    // complete once one begins, so the text is parsed as it comes to notice that.
    this.#watch = !format.parallelToolCalls && format.parseToolCalls && format.grammar !== "";
  }

  /**
   * Aborts once the answer has all the calls it may have and the model begins another (without parallel calls):
   * the generation can stop there, and finish() takes the answer as complete.
   */
  get limit(): AbortSignal {
    return this.#limit.signal;
  }

  /** The raw text so far. */
  get text(): string {
    return this.#text;
  }

  /** Adds generated text without parsing it yet (an answer that is not streamed: finish() parses it once). */
  append(text: string): void {
    this.#text += text;
    if (!this.#watch || this.#limit.signal.aborted) return;
    try {
      this.#checkLimit(this.#parse(this.#text, true));
    } catch {
      // not parseable yet
    }
  }

  /** Adds generated text; the delta it makes, or undefined when nothing visible changed. */
  push(text: string): ChatDelta | undefined {
    this.#text += text;
    let parsed: NativeChatParsed;
    try {
      parsed = this.#parse(this.#text, true);
    } catch {
      return undefined;  // not parseable yet: the next piece may make it so
    }
    this.#checkLimit(parsed);
    return this.#deltaTo(this.#withIds(parsed), false);
  }

  /**
   * The whole answer and the last delta. An answer the model ended itself (`complete`) is parsed as complete; one
   * cut short (maxTokens, abort, a full context) as far as it goes, as OpenAI returns a truncated call. Text that
   * does not follow the template's format is not lost: the answer is then the raw text as content.
   */
  finish(complete: boolean): { message: ParsedChatMessage; delta: ChatDelta | undefined; wellFormed: boolean } {
    let message: ParsedChatMessage;
    let wellFormed = true;
    try {
      // Cut at the beginning of a call too many: the calls before it are whole, the one begun is dropped.
      message = this.#withIds(this.#parse(this.#text, !complete || this.#limit.signal.aborted));
    } catch {
      wellFormed = false;
      message = { content: this.#text, reasoning: "", toolCalls: [] };
    }
    return { message, delta: this.#deltaTo(message, true), wellFormed };
  }

  #checkLimit(parsed: NativeChatParsed): void {
    if (this.#watch && parsed.toolCalls.length > this.#maxCalls) this.#limit.abort();
  }

  #withIds(parsed: NativeChatParsed): ParsedChatMessage {
    const toolCalls = parsed.toolCalls.slice(0, this.#maxCalls).map((call, i) => {
      // The model's own id until the stream announced the call; after that the id it announced, so the deltas and
      // the final message agree (a Mistral call writes its id after its arguments).
      if (call.id !== "" && this.#sent.calls[i]?.named !== true) this.#ids[i] = call.id;
      this.#ids[i] ??= this.#newId();
      return { id: this.#ids[i], name: call.name, arguments: call.arguments };
    });
    return { content: parsed.content, reasoning: parsed.reasoning, toolCalls };
  }

  #deltaTo(message: ParsedChatMessage, final: boolean): ChatDelta | undefined {
    const delta: ChatDelta = { content: growth(this.#sent.content, message.content), reasoning: growth(this.#sent.reasoning, message.reasoning), toolCalls: [] };
    this.#sent.content += delta.content;
    this.#sent.reasoning += delta.reasoning;
    for (const [index, call] of message.toolCalls.entries()) {
      const sent = (this.#sent.calls[index] ??= { named: false, arguments: "" });
      const args = growth(sent.arguments, call.arguments);
      // A later call beginning, or the end, settles this call's name.
      const settled = final || index < message.toolCalls.length - 1 || args !== "" || sent.arguments !== "";
      if (!sent.named) {
        if (!settled || call.name === "") continue;
        sent.named = true;
        sent.arguments += args;
        delta.toolCalls.push({ index, id: call.id, name: call.name, arguments: args });
      } else if (args !== "") {
        sent.arguments += args;
        delta.toolCalls.push({ index, arguments: args });
      }
    }
    return delta.content === "" && delta.reasoning === "" && delta.toolCalls.length === 0 ? undefined : delta;
  }
}

/** What `now` adds to what was sent, or "" when it does not continue it (the parser changed its mind). */
function growth(sent: string, now: string): string {
  return now.length > sent.length && now.startsWith(sent) ? now.slice(sent.length) : "";
}

/** The error a template that cannot format a request gives, as an INVALID_ARGUMENT naming the template. */
export function templateError(error: unknown): LlamaOciError {
  const message = error instanceof Error ? error.message : String(error);
  return new LlamaOciError("INVALID_ARGUMENT", message, { cause: error });
}
