/**
 * Which part of a conversation a chat turn sends to the model: the system prompt, then as many of the newest
 * messages as leave room for the answer (older turns are dropped once the conversation outgrows the context), and
 * how many tokens at the start (the system prompt's) a context shift must keep.
 */
import type { ChatMessage } from "./chat-format.js";
import { GENERATION_DEFAULTS, invalid } from "./options.js";

/** The smallest chunk of a chat's cache shifted into place after its oldest turns were dropped (GenerationOptions.cacheReuse). */
export const CHAT_CACHE_REUSE = 16;

export interface ChatWindowOptions {
  /** The messages formatted with the chat template and tokenized. */
  format(messages: ChatMessage[], addAssistantPrompt: boolean): Promise<Int32Array>;
  contextSize: number;
  contextShift: boolean;
  /** The turn's maxTokens (undefined: the default). */
  maxTokens: number | undefined;
}

export interface ChatWindow {
  tokens: Int32Array;
  /** Index of the first message after the system prompt that is sent. */
  start: number;
  /** Tokens of the system prompt at the start of `tokens`. */
  keep: number;
}

/**
 * `messages` ends with the new user message, which is always sent. With contextShift, whole turns are dropped from
 * the oldest (the window always starts at a user message) until the prompt leaves room for min(maxTokens, a quarter
 * of the context) tokens of answer; without it, the window stays where it is (a prompt too long is refused later).
 */
export async function chatWindow(messages: ChatMessage[], windowStart: number, options: ChatWindowOptions): Promise<ChatWindow> {
  const system = messages[0]?.role === "system" ? 1 : 0;
  const last = messages.length - 1;
  let start = Math.min(Math.max(windowStart, system), last);
  const build = (from: number) => options.format([...messages.slice(0, system), ...messages.slice(from)], true);
  let tokens = await build(start);
  if (!options.contextShift) return { tokens, start, keep: 0 };
  const { contextSize } = options;
  const maxTokens = options.maxTokens ?? GENERATION_DEFAULTS.maxTokens;
  const reserve = Math.min(maxTokens, Math.floor(contextSize / 4));
  while (tokens.length + reserve > contextSize && start < last) {
    start++;
    while (start < last && messages[start]!.role !== "user") start++;
    tokens = await build(start);
  }
  if (tokens.length >= contextSize) {
    throw invalid(
      `the message does not fit the context: with the system prompt it is ${tokens.length} tokens but the context holds ${contextSize}`,
      "use a larger contextSize, or a shorter message or system prompt",
    );
  }
  let keep = 0;
  if (system === 1) {
    const alone = await options.format(messages.slice(0, 1), false);
    while (keep < alone.length && keep < tokens.length && alone[keep] === tokens[keep]) keep++;
  }
  return { tokens, start, keep };
}
