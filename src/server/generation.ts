/**
 * What the OpenAI and Ollama endpoints share once a request is parsed: prompts (chat template, tokens), the checks
 * that must answer 400 before any response is sent, running on the model's sequences, and the metrics of each run.
 */
import { LlamaOciError } from "../errors.js";
import {
  ChatOutputParser,
  chatGrammarOf,
  toolCallIdMaker,
  type ChatGrammar,
  type ChatMessage,
  type ChatTool,
  type ChatToolChoice,
  normalizeTools,
} from "../llama/chat-format.js";
import type { CompletionResult, StopReason } from "../llama/completion.js";
import { mediaError, mediaOf, MediaPrompt } from "../llama/media.js";
import type { ModelDefaults } from "../oci/model/index.js";
import { badRequest, HttpError, oneLine } from "./http-errors.js";
import type { ServerMetrics } from "./metrics.js";
import type { LoadedModel } from "./models.js";
import type { RunOptions } from "./runner.js";

const PROMPT_TOKENIZE = { addSpecial: true, parseSpecial: true } as const;

/** A prompt to generate from: tokens, or a chat's prompt tokenized with its media (images, audio). */
export type Prompt = Int32Array | MediaPrompt;

/** A chat request as both APIs give it: messages (tool calls and results included), tools and how to use them. */
export interface ChatRequest {
  messages: ChatMessage[];
  tools?: ChatTool[];
  toolChoice?: ChatToolChoice;
  parallelToolCalls?: boolean;
  thinking?: boolean;
  templateVariables?: Record<string, unknown>;
  /** A response format the template's grammar must cover (only with tools; otherwise a grammar of its own). */
  jsonSchema?: object;
}

/** A chat formatted for the model: its prompt tokens, the template's grammar and stops, and the answer's parser. */
export interface PreparedChat {
  /** The prompt's tokens, or (with media) the prompt tokenized with them by the model's projector. */
  tokens: Prompt;
  chatGrammar: ChatGrammar | undefined;
  /** Stop words the template adds (llama-server's additional_stops). */
  stops: string[];
  parser: ChatOutputParser;
}

/** The conversation formatted with the model's chat template and tokenized, ready to generate the assistant's turn. */
export async function prepareChat(loaded: LoadedModel, request: ChatRequest, param = "messages"): Promise<PreparedChat> {
  const model = loaded.model;
  const media = mediaOf(request.messages).length;
  // Media without a projector, or of a kind the projector does not take (audio for a vision-only one): a 400 naming
  // the part (the request's own numbering: the artifact's system prompt comes in later).
  let part = param;
  const refused = mediaError(model.projector, loaded.name, request.messages, (i, j) => (part = `${param}[${i}].content[${j}]`));
  if (refused) throw badRequest(oneLine(refused), model.projector === undefined ? param : part);
  let format;
  try {
    format = model.formatChat(withSystemPrompt(request.messages, loaded.pull?.systemPrompt), {
      tools: request.tools,
      toolChoice: request.toolChoice,
      parallelToolCalls: request.parallelToolCalls,
      thinking: request.thinking,
      templateVariables: request.templateVariables,
      jsonSchema: request.jsonSchema,
    });
  } catch (error) {
    throw badRequest(`the model's chat template cannot format these messages: ${oneLine(error)}`, param);
  }
  const chatGrammar = chatGrammarOf(format);
  const parser = new ChatOutputParser(format, toolCallIdMaker(model.chatTemplateSource()));
  if (media > 0) {
    let prompt: MediaPrompt;
    try {
      prompt = await model.tokenizeWithMedia(format.prompt, withSystemPrompt(request.messages, loaded.pull?.systemPrompt));
    } catch (error) {
      if (error instanceof LlamaOciError && error.code === "INVALID_ARGUMENT") throw badRequest(oneLine(error), param);
      throw error;
    }
    return { tokens: prompt, chatGrammar, stops: format.additionalStops, parser };
  }
  const tokens = await model.tokenize(format.prompt, PROMPT_TOKENIZE);
  const bos = model.info.bosToken;
  return {
    // A template that writes BOS itself gets a second one from tokenization's addSpecial.
    tokens: tokens.length >= 2 && bos >= 0 && tokens[0] === bos && tokens[1] === bos ? tokens.subarray(1) : tokens,
    chatGrammar,
    stops: format.additionalStops,
    parser,
  };
}

/** The conversation formatted with the model's chat template and tokenized (text messages, no tools). */
export async function chatPrompt(loaded: LoadedModel, messages: ChatMessage[], param = "messages"): Promise<Int32Array> {
  const { tokens } = await prepareChat(loaded, { messages }, param);
  if (tokens instanceof MediaPrompt) throw badRequest("images and audio are not supported here", param);
  return tokens;
}

/** Run options of a chat: the template's grammar instead of the request's, its stops after the request's (or the artifact's). */
export function chatRunOptions(loaded: LoadedModel, options: RunOptions, prepared: PreparedChat): RunOptions {
  if (prepared.chatGrammar && options.grammar !== undefined) {
    throw badRequest("a response format cannot be combined with tools on this model's template", "response_format");
  }
  const stop = [...(options.stop ?? loaded.pull?.defaults?.stop ?? []), ...prepared.stops];
  return { ...options, ...(stop.length > 0 ? { stop } : {}), ...(prepared.chatGrammar ? { chatGrammar: prepared.chatGrammar, grammar: undefined } : {}) };
}

/** A raw prompt: text (special tokens such as "<|im_start|>" become those tokens, BOS added) or token IDs. */
export async function rawPrompt(loaded: LoadedModel, prompt: string | readonly number[], param = "prompt"): Promise<Int32Array> {
  if (typeof prompt === "string") return loaded.model.tokenize(prompt, PROMPT_TOKENIZE);
  return checkedTokens(loaded, prompt, param);
}

/** Token IDs from a client, each checked against the vocabulary. */
export function checkedTokens(loaded: LoadedModel, ids: readonly number[], param: string): Int32Array {
  const vocabSize = loaded.model.info.vocabSize;
  const bad = ids.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= vocabSize);
  if (bad !== -1) throw badRequest(`${param}[${bad}] is ${String(ids[bad])}, not a token of this model (0 to ${vocabSize - 1})`, param);
  return Int32Array.from(ids);
}

/** 400 unless the prompt leaves room to generate in one sequence. */
export function checkPromptFits(loaded: LoadedModel, prompt: Prompt, param: string): void {
  const tokens = prompt instanceof MediaPrompt ? prompt.tokens : prompt;
  const contextSize = loaded.runner.contextSize;
  if (tokens.length === 0) throw badRequest(`${param} is empty`, param);
  if (tokens.length >= contextSize) {
    throw new HttpError(400, `the prompt is ${tokens.length} tokens but the context holds ${contextSize} (each sequence's context: --ctx-size)`, {
      param,
      code: "context_length_exceeded",
    });
  }
}

/** Limits on a client's JSON schema, checked before llama.cpp's converter (recursive, on the event loop) sees it. */
const SCHEMA_MAX_DEPTH = 32;
const SCHEMA_MAX_NODES = 10_000;
/** Counts above this (minItems, a regex's {n}) would expand into a grammar too large to hold. */
const SCHEMA_MAX_REPEAT = 1000;
const REPEAT_KEYS = new Set(["minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties", "minContains", "maxContains"]);

/** Refuses schemas that are too deep, too large, or that repeat something too often (400 naming `param`). */
export function checkSchemaSize(schema: unknown, param: string): void {
  const stack: { value: unknown; depth: number }[] = [{ value: schema, depth: 0 }];
  let nodes = 0;
  while (stack.length > 0) {
    const { value, depth } = stack.pop()!;
    if (typeof value !== "object" || value === null) continue;
    if (++nodes > SCHEMA_MAX_NODES) throw badRequest(`${param} is too large (more than ${SCHEMA_MAX_NODES} objects and arrays)`, param);
    if (depth > SCHEMA_MAX_DEPTH) throw badRequest(`${param} is nested more than ${SCHEMA_MAX_DEPTH} levels deep`, param);
    for (const [key, child] of Object.entries(value)) {
      if (REPEAT_KEYS.has(key) && typeof child === "number" && child > SCHEMA_MAX_REPEAT) {
        throw badRequest(`${param}: ${key} above ${SCHEMA_MAX_REPEAT} is not supported`, param);
      }
      if (key === "pattern" && typeof child === "string") {
        for (const match of child.matchAll(/\{(\d*)(?:,(\d*))?\}/g)) {
          if (Number(match[1] || 0) > SCHEMA_MAX_REPEAT || Number(match[2] || 0) > SCHEMA_MAX_REPEAT) throw badRequest(`${param}: a pattern repeating more than ${SCHEMA_MAX_REPEAT} times is not supported`, param);
        }
      }
      stack.push({ value: child, depth: depth + 1 });
    }
  }
}

/** A GBNF grammar from a JSON schema (400 naming `param` when it is unreasonable or llama.cpp's converter refuses it). */
export function schemaGrammar(loaded: LoadedModel, schema: object, param: string): string {
  checkSchemaSize(schema, param);
  try {
    return loaded.model.jsonSchemaToGrammar(schema);
  } catch (error) {
    throw badRequest(oneLine(error), param);
  }
}

/** OpenAI's and Ollama's seed (any integer; negative = random) as the 32-bit seed llama.cpp takes. */
export function toSeed(seed: number | null | undefined): number | undefined {
  if (seed === undefined || seed === null || seed < 0) return undefined;
  return seed % 0xffffffff;
}

/** llama-server's sampler fields (its names), in /v1 bodies and /api options. */
export interface LlamaSamplerFields {
  typical_p?: number | null;
  top_n_sigma?: number | null;
  xtc_probability?: number | null;
  xtc_threshold?: number | null;
  dry_multiplier?: number | null;
  dry_base?: number | null;
  dry_allowed_length?: number | null;
  dry_penalty_last_n?: number | null;
  dry_sequence_breakers?: string[] | null;
  mirostat?: number | null;
  mirostat_tau?: number | null;
  mirostat_eta?: number | null;
  logit_bias?: Record<string, number | false> | Array<[number | string, number | false]> | null;
}

/** Generation options from llama-server's sampler fields, read as llama-server reads them. */
export function llamaSamplers(body: LlamaSamplerFields): RunOptions {
  return {
    typicalP: body.typical_p ?? undefined,
    topNSigma: body.top_n_sigma ?? undefined,
    xtcProbability: body.xtc_probability ?? undefined,
    xtcThreshold: body.xtc_threshold ?? undefined,
    dryMultiplier: body.dry_multiplier ?? undefined,
    // llama-server replaces a base below 1 (which would turn DRY off) with its default.
    dryBase: body.dry_base == null || body.dry_base < 1 ? undefined : body.dry_base,
    dryAllowedLength: body.dry_allowed_length ?? undefined,
    dryPenaltyLastN: body.dry_penalty_last_n ?? undefined,
    drySequenceBreakers: body.dry_sequence_breakers ?? undefined,
    mirostat: (body.mirostat ?? undefined) as 0 | 1 | 2 | undefined,
    mirostatTau: body.mirostat_tau ?? undefined,
    mirostatEta: body.mirostat_eta ?? undefined,
    logitBias: body.logit_bias ?? undefined,
  };
}

export function stopList(stop: string | string[] | null | undefined): string[] | undefined {
  if (stop === undefined || stop === null) return undefined;
  return (typeof stop === "string" ? [stop] : stop).filter((s) => s.length > 0);
}

/** OpenAI's finish_reason ("stop" or "length") for a stop reason; Ollama's done_reason is the same word. */
export function finishReason(reason: StopReason): "stop" | "length" {
  return reason === "maxTokens" || reason === "contextFull" ? "length" : "stop";
}

/** Whether the model ended its answer itself (so that it is parsed as complete). */
export function endedByModel(reason: StopReason): boolean {
  return reason === "eos" || reason === "stop";
}

const DEFAULTED = [
  "temperature",
  "topK",
  "topP",
  "minP",
  "repeatPenalty",
  "repeatLastN",
  "presencePenalty",
  "frequencyPenalty",
  "seed",
  "stop",
  "typicalP",
  "mirostat",
  "mirostatTau",
  "mirostatEta",
] as const;

/** The generation defaults the artifact ships (Ollama's params layer) under what the request asked for. */
export function withArtifactDefaults(options: RunOptions, defaults: ModelDefaults | undefined): RunOptions {
  if (!defaults) return options;
  const merged: RunOptions = { ...options };
  for (const key of DEFAULTED) {
    if (merged[key] === undefined && defaults[key] !== undefined) (merged as Record<string, unknown>)[key] = defaults[key];
  }
  return merged;
}

/** The artifact's default system prompt (Ollama's system layer) first, when the conversation brings none. */
export function withSystemPrompt(messages: ChatMessage[], systemPrompt: string | undefined): ChatMessage[] {
  if (systemPrompt === undefined || systemPrompt === "" || messages.some((m) => m.role === "system")) return messages;
  return [{ role: "system", content: systemPrompt }, ...messages];
}

export interface RunHooks {
  /** The client's connection: aborting stops the generation (or leaves the queue) and frees the sequence. */
  signal: AbortSignal;
  onText?: (text: string) => void;
  /** When the request arrived, for the time to first token (performance.now()). */
  startedAt: number;
  /** Ends the generation as a stop string would (a tool call beyond the allowed ones began): stopReason "stop". */
  until?: AbortSignal;
}

/** Runs a generation on the model's sequences and records it in the metrics. */
export async function runGeneration(loaded: LoadedModel, tokens: Prompt, options: RunOptions, metrics: ServerMetrics, hooks: RunHooks): Promise<CompletionResult> {
  const model = loaded.name;
  let first = true;
  let result: CompletionResult;
  // Nothing can generate past the context; a client's 2^31 stays a small number for the native loop.
  const contextSize = loaded.runner.contextSize;
  const maxTokens = options.maxTokens === undefined || options.maxTokens > contextSize ? contextSize : options.maxTokens;
  try {
    result = await loaded.runner.run(tokens, {
      ...withArtifactDefaults(options, loaded.pull?.defaults),
      maxTokens,
      signal: hooks.until ? AbortSignal.any([hooks.signal, hooks.until]) : hooks.signal,
      onTextChunk: (text) => {
        if (first) {
          first = false;
          metrics.timeToFirstToken.observe({ model }, (performance.now() - hooks.startedAt) / 1000);
        }
        hooks.onText?.(text);
      },
    });
  } catch (error) {
    if (error instanceof Error && error.name === "QueueFullError") metrics.rejected.inc({ reason: "queue_full" });
    if (error instanceof LlamaOciError && error.code === "INVALID_ARGUMENT") throw badRequest(oneLine(error));
    // llama.cpp's converter can produce a grammar its own parser then refuses (e.g. from {"anyOf": []}).
    if (error instanceof LlamaOciError && error.code === "INFERENCE" && /invalid grammar/.test(error.message)) {
      throw badRequest(`the JSON schema does not give a usable grammar: ${oneLine(error)}`);
    }
    throw error;
  }
  if (result.stopReason === "abort" && hooks.until?.aborted === true && !hooks.signal.aborted) result = { ...result, stopReason: "stop" };
  const t = result.timings;
  metrics.promptTokens.inc({ model }, t.promptTokens);
  metrics.cachedPromptTokens.inc({ model }, t.cachedTokens);
  metrics.generatedTokens.inc({ model }, t.generatedTokens);
  metrics.promptSeconds.inc({ model }, t.promptMs / 1000);
  metrics.generationSeconds.inc({ model }, t.generateMs / 1000);
  metrics.completions.inc({ model, finish_reason: result.stopReason === "abort" ? "abort" : finishReason(result.stopReason) });
  return result;
}

/** OpenAI's usage object, with the cached prompt tokens as prompt_tokens_details.cached_tokens. */
export function usage(result: CompletionResult): object {
  const t = result.timings;
  return {
    prompt_tokens: t.promptTokens,
    completion_tokens: t.generatedTokens,
    total_tokens: t.promptTokens + t.generatedTokens,
    prompt_tokens_details: { cached_tokens: t.cachedTokens },
  };
}

/** llama-server's `timings` extension, which benchmark tools read. */
export function timings(result: CompletionResult): object {
  const t = result.timings;
  return {
    cache_n: t.cachedTokens,
    prompt_n: t.promptTokens - t.cachedTokens,
    prompt_ms: t.promptMs,
    prompt_per_second: t.promptTokensPerSecond,
    predicted_n: t.generatedTokens,
    predicted_ms: t.generateMs,
    predicted_per_second: t.generatedTokensPerSecond,
  };
}

/** Function tools (OpenAI's, which Ollama's are too), checked: 400 naming the tool that is wrong. */
export function requestTools(tools: unknown[] | null | undefined): ChatTool[] {
  if (tools == null) return [];
  for (const [i, tool] of tools.entries()) {
    const parameters = (tool as { function?: { parameters?: unknown } } | null)?.function?.parameters;
    if (typeof parameters === "object" && parameters !== null) checkSchemaSize(parameters, `tools[${i}].function.parameters`);
  }
  try {
    return normalizeTools(tools);
  } catch (error) {
    throw badRequest(oneLine(error), /^tools\[\d+\]/.exec(oneLine(error))?.[0] ?? "tools");
  }
}
