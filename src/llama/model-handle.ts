/**
 * ModelHandle: what contexts and chat sessions need from the model they run on. LlamaModel implements it; context.ts
 * and chat.ts depend on this interface rather than on model.ts, so that model.ts can import them without a cycle.
 */
import type { ChatFormatOptions, ChatMessage } from "./chat-format.js";
import type { MediaPrompt } from "./media.js";
import type { NativeChatFormat, NativeModelInfo } from "./native-types.js";
import type { ContextOptions, GenerationOptions } from "./options.js";

/** `Context` is what createContext() resolves to (chat sessions need it; contexts themselves do not). */
export interface ModelHandle<Context = unknown> {
  /** The GGUF file (a saved chat is tied to it). */
  readonly path: string;
  readonly info: NativeModelInfo;
  /** Every GGUF metadata key and value, as text. */
  readonly metadata: Readonly<Record<string, string>>;
  /** The pull that produced the file, if any. */
  readonly pull?: { readonly digest: string };
  readonly disposed: boolean;
  /** Generation options every request on the model starts from (an artifact's own settings); its options win. */
  readonly generationDefaults: Readonly<GenerationOptions>;
  /** The system prompt a chat starts with when it is given none (an artifact's own). */
  readonly systemPrompt?: string;
  tokenize(text: string, options: { addSpecial: boolean; parseSpecial: boolean }): Promise<Int32Array>;
  /** A formatted chat tokenized with the media (images, audio) of `messages` (through the model's projector). */
  tokenizeWithMedia(prompt: string, messages: readonly ChatMessage[]): Promise<MediaPrompt>;
  /** The grammar a request asks for, from `grammar` or `jsonSchema`. */
  grammarFor(options: Pick<GenerationOptions, "grammar" | "jsonSchema">): string | null;
  /** The conversation as llama.cpp's chat layer formats it (prompt, tool-call grammar, the answer's parser). */
  formatChat(messages: readonly ChatMessage[], options: ChatFormatOptions & { template?: string; templateName?: string; addAssistantPrompt?: boolean }): NativeChatFormat;
  /** The template text a chat is formatted with (undefined: llama.cpp's default). */
  chatTemplateSource(override?: string): string | undefined;
  createContext(options: ContextOptions): Promise<Context>;
}
