/**
 * The OpenAI-compatible API under /v1: models, chat completions (SSE streaming, usage, finish_reason, JSON modes,
 * llama-server's sampling extensions), legacy completions (editors' autocomplete) and embeddings.
 */
import { randomBytes } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { normalizeToolChoice, type ChatDelta, type ChatMessage, type ChatTool, type ChatToolChoice, type ParsedChatMessage } from "../llama/chat-format.js";
import type { CompletionResult } from "../llama/completion.js";
import { decodeBase64, type ChatAudioPart, type ChatImagePart } from "../llama/media.js";
import { listModels } from "../oci/cache/index.js";
import { formatReference, parseReference } from "../oci/name/index.js";
import {
  chatRunOptions,
  checkedTokens,
  checkPromptFits,
  checkSchemaSize,
  endedByModel,
  finishReason,
  llamaSamplers,
  prepareChat,
  requestTools,
  rawPrompt,
  runGeneration,
  schemaGrammar,
  stopList,
  timings,
  toSeed,
  usage,
  type LlamaSamplerFields,
  type Prompt,
} from "./generation.js";
import { badRequest, errorBody, HttpError, oneLine, toHttpError } from "./http-errors.js";
import type { LoadedModel } from "./models.js";
import type { RunOptions } from "./runner.js";
import { CHAT_COMPLETIONS_BODY, COMPLETIONS_BODY, EMBEDDINGS_BODY } from "./schemas.js";
import type { ServerParts } from "./server-parts.js";
import { clientGone, EventStream } from "./streams.js";

type Nullable<T> = T | null | undefined;

interface SamplingBody extends LlamaSamplerFields {
  model?: string | null;
  max_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  min_p?: number | null;
  repeat_penalty?: number | null;
  repeat_last_n?: number | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  n?: number | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean | null } | null;
  ignore_eos?: boolean | null;
  logprobs?: boolean | null;
}

interface ContentPart {
  type: string;
  text?: string;
  refusal?: string;
  image_url?: string | { url: string; detail?: string };
  input_audio?: { data: string; format: string };
}

interface OpenAiToolCall {
  id?: string | null;
  type?: string | null;
  function?: { name?: string | null; arguments?: string | null } | null;
}

interface OpenAiMessage {
  role: string;
  content?: string | ContentPart[] | null;
  name?: string | null;
  tool_calls?: OpenAiToolCall[] | null;
  tool_call_id?: string | null;
  reasoning_content?: string | null;
  function_call?: { name?: string | null; arguments?: string | null } | null;
}

interface ChatBody extends SamplingBody {
  messages: OpenAiMessage[];
  max_completion_tokens?: number | null;
  response_format?: { type: "text" | "json_object" | "json_schema"; json_schema?: { name?: string; schema?: object } } | null;
  tools?: unknown[] | null;
  tool_choice?: unknown;
  parallel_tool_calls?: boolean | null;
  reasoning_effort?: string | null;
  chat_template_kwargs?: Record<string, unknown> | null;
}

interface CompletionsBody extends SamplingBody {
  prompt: string | string[] | number[];
  suffix?: string | null;
  echo?: boolean | null;
  best_of?: number | null;
}

interface EmbeddingsBody {
  model?: string | null;
  input: string | string[] | number[] | number[][];
  encoding_format?: "float" | "base64" | null;
  dimensions?: number | null;
}

/** Completions default to 16 tokens, as OpenAI's legacy endpoint does; chat runs until the model stops. */
const COMPLETIONS_DEFAULT_MAX_TOKENS = 16;

export function openAiRoutes(app: FastifyInstance, parts: ServerParts): void {
  const { models } = parts;

  app.get("/v1/models", async () => ({ object: "list", data: await modelList(parts) }));

  app.get("/v1/models/*", async (request) => {
    const id = (request.params as { "*": string })["*"];
    const all = await modelList(parts);
    const key = canonical(id);
    const found = all.find((m) => m.id === id || (key !== undefined && canonical(m.id) === key));
    if (!found) throw new HttpError(404, `model ${id} is not in this server's cache`, { code: "model_not_found", param: "model" });
    return found;
  });

  app.post("/v1/chat/completions", { schema: { body: CHAT_COMPLETIONS_BODY } }, async (request, reply) => {
    const body = request.body as ChatBody;
    const startedAt = performance.now();
    const signal = clientGone(request, reply);
    checkCommon(body);
    const tools = requestTools(body.tools);
    const toolChoice = openAiToolChoice(body.tool_choice, tools);
    const messages = toMessages(body.messages);
    const lease = await models.acquire(body.model ?? undefined, signal, { generate: true });
    try {
      const loaded = lease.model;
      const usesTools = tools.length > 0 && toolChoice !== "none";
      const reasoning = reasoningOptions(body);
      const prepared = await prepareChat(loaded, {
        messages,
        tools,
        toolChoice,
        parallelToolCalls: body.parallel_tool_calls ?? undefined,
        ...reasoning,
        // With tools, a response format is the template's business (its grammar covers both, as llama-server's).
        ...(usesTools ? { jsonSchema: responseSchema(body) } : {}),
      });
      checkPromptFits(loaded, prepared.tokens, "messages");
      const base: RunOptions = {
        ...sampling(body, body.max_completion_tokens ?? body.max_tokens, Infinity),
        grammar: usesTools ? undefined : responseGrammar(loaded, body),
        arriving: lease.arriving,
      };
      const options = chatRunOptions(loaded, base, prepared);
      const parser = prepared.parser;
      const id = `chatcmpl-${randomId()}`;
      const created = Math.floor(Date.now() / 1000);
      const head = { id, object: "chat.completion.chunk", created, model: loaded.name, system_fingerprint: fingerprint(loaded) };
      const finish = (result: CompletionResult, message: ParsedChatMessage) =>
        message.toolCalls.length > 0 && endedByModel(result.stopReason) ? "tool_calls" : finishReason(result.stopReason);
      if (body.stream === true) {
        const includeUsage = body.stream_options?.include_usage === true;
        const chunk = (delta: object, finishReason: string | null) => ({
          ...head,
          choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
          ...(includeUsage ? { usage: null } : {}),
        });
        await stream(parts, request, reply, loaded, prepared.tokens, options, signal, startedAt, {
          first: () => chunk({ role: "assistant", content: "" }, null),
          until: parser.limit,
          piece: (text) => {
            const delta = parser.push(text);
            return delta ? [chunk(openAiDelta(delta), null)] : [];
          },
          last: (result) => {
            const { message, delta } = parser.finish(endedByModel(result.stopReason));
            return [
              ...(delta ? [chunk(openAiDelta(delta), null)] : []),
              { ...chunk({}, finish(result, message)), timings: timings(result) },
              ...(includeUsage ? [{ ...head, choices: [], usage: usage(result) }] : []),
            ];
          },
        });
        return reply;
      }
      const result = await runGeneration(loaded, prepared.tokens, options, parts.metrics, { signal, startedAt, until: parser.limit, onText: (text) => parser.append(text) });
      const { message } = parser.finish(endedByModel(result.stopReason));
      return {
        ...head,
        object: "chat.completion",
        choices: [{ index: 0, message: openAiMessage(message), logprobs: null, finish_reason: finish(result, message) }],
        usage: usage(result),
        timings: timings(result),
      };
    } finally {
      lease.release();
    }
  });

  app.post("/v1/completions", { schema: { body: COMPLETIONS_BODY } }, async (request, reply) => {
    const body = request.body as CompletionsBody;
    const startedAt = performance.now();
    const signal = clientGone(request, reply);
    checkCommon(body);
    if (body.suffix) throw badRequest("suffix (fill-in-the-middle) is not supported by this server", "suffix");
    if (body.echo === true) throw badRequest("echo is not supported", "echo");
    if (body.best_of != null && body.best_of !== 1) throw badRequest("only best_of=1 is supported", "best_of");
    const prompt = Array.isArray(body.prompt) && typeof body.prompt[0] === "string" ? body.prompt[0] : (body.prompt as string | number[]);
    const lease = await models.acquire(body.model ?? undefined, signal, { generate: true });
    try {
      const loaded = lease.model;
      const tokens = await rawPrompt(loaded, prompt);
      checkPromptFits(loaded, tokens, "prompt");
      const options = { ...sampling(body, body.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS), arriving: lease.arriving };
      const id = `cmpl-${randomId()}`;
      const created = Math.floor(Date.now() / 1000);
      const base = { id, object: "text_completion", created, model: loaded.name, system_fingerprint: fingerprint(loaded) };
      const choice = (text: string, finish: string | null) => ({ text, index: 0, logprobs: null, finish_reason: finish });
      if (body.stream === true) {
        const includeUsage = body.stream_options?.include_usage === true;
        const extra = includeUsage ? { usage: null } : {};
        await stream(parts, request, reply, loaded, tokens, options, signal, startedAt, {
          piece: (text) => [{ ...base, choices: [choice(text, null)], ...extra }],
          last: (result) => [
            { ...base, choices: [choice("", finishReason(result.stopReason))], ...extra, timings: timings(result) },
            ...(includeUsage ? [{ ...base, choices: [], usage: usage(result) }] : []),
          ],
        });
        return reply;
      }
      const result = await runGeneration(loaded, tokens, options, parts.metrics, { signal, startedAt });
      return { ...base, choices: [choice(result.text, finishReason(result.stopReason))], usage: usage(result), timings: timings(result) };
    } finally {
      lease.release();
    }
  });

  app.post("/v1/embeddings", { schema: { body: EMBEDDINGS_BODY } }, async (request, reply) => {
    const body = request.body as EmbeddingsBody;
    const signal = clientGone(request, reply);
    const lease = await models.acquire(body.model ?? undefined, signal);
    try {
      const loaded = lease.model;
      const dimensions = loaded.model.info.embeddingLength;
      if (body.dimensions != null && body.dimensions !== dimensions) {
        throw badRequest(`this model's embeddings have ${dimensions} dimensions (got dimensions: ${body.dimensions})`, "dimensions");
      }
      const inputs = await embeddingInputs(loaded, body.input);
      const vectors = await loaded.embedder.embedAll(inputs, signal);
      const promptTokens = inputs.reduce((sum, t) => sum + t.length, 0);
      parts.metrics.promptTokens.inc({ model: loaded.name }, promptTokens);
      const base64 = body.encoding_format === "base64";
      return {
        object: "list",
        data: vectors.map((vector, index) => ({
          object: "embedding",
          index,
          embedding: base64 ? Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString("base64") : Array.from(vector),
        })),
        model: loaded.name,
        usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
      };
    } finally {
      lease.release();
    }
  });
}

interface StreamShape {
  /** The event that opens the stream (before the first piece of text). */
  first?: () => object;
  /** The events a piece of generated text makes (none while, say, a tool call's markup is being parsed). */
  piece: (text: string) => object[];
  last: (result: CompletionResult) => object[];
  /** Ends the generation as a stop string would (the chat parser's limit on tool calls). */
  until?: AbortSignal;
}

/** Runs a generation as Server-Sent Events ending in `data: [DONE]`; failures before the stream starts are HTTP errors. */
async function stream(
  parts: ServerParts,
  request: FastifyRequest,
  reply: FastifyReply,
  loaded: LoadedModel,
  tokens: Prompt,
  options: RunOptions,
  signal: AbortSignal,
  startedAt: number,
  shape: StreamShape,
): Promise<void> {
  const events = new EventStream(reply, "sse", (status) => parts.recordStream(request, status));
  try {
    // The stream starts with the first piece of text, so that anything failing before (the queue, the grammar, the
    // prompt) still answers with its own HTTP status.
    const begin = () => {
      if (events.started) return;
      if (shape.first) events.send(shape.first());
      else events.start();
    };
    const result = await runGeneration(loaded, tokens, options, parts.metrics, {
      signal,
      startedAt,
      ...(shape.until ? { until: shape.until } : {}),
      onText: (text) => {
        const events_ = shape.piece(text);
        if (events_.length === 0) return;
        begin();
        for (const event of events_) events.send(event);
      },
    });
    if (result.stopReason === "abort" && signal.aborted) return events.abandon();
    begin();
    if (result.stopReason !== "abort") for (const event of shape.last(result)) events.send(event);
    events.end();
  } catch (error) {
    if (!events.started) throw error;
    const httpError = toHttpError(error);
    if (httpError.status >= 500) parts.options.log(`${request.method} ${request.url}: ${httpError.message}`);
    events.send(errorBody("/v1", httpError));
    events.end();
  }
}

function checkCommon(body: SamplingBody): void {
  if (body.n != null && body.n !== 1) throw badRequest("only n=1 is supported", "n");
  if (body.logprobs === true) throw badRequest("logprobs are not supported by this server", "logprobs");
}

/** Generation options from OpenAI's fields and llama-server's extensions; -1 max tokens = until the model stops. */
function sampling(body: SamplingBody, maxTokens: Nullable<number>, defaultMaxTokens: number): RunOptions {
  return {
    maxTokens: maxTokens == null ? defaultMaxTokens : maxTokens < 0 ? Infinity : maxTokens,
    temperature: body.temperature ?? undefined,
    topP: body.top_p ?? undefined,
    topK: body.top_k == null ? undefined : Math.max(0, body.top_k),
    minP: body.min_p ?? undefined,
    repeatPenalty: body.repeat_penalty ?? undefined,
    repeatLastN: body.repeat_last_n ?? undefined,
    presencePenalty: body.presence_penalty ?? undefined,
    frequencyPenalty: body.frequency_penalty ?? undefined,
    seed: toSeed(body.seed),
    stop: stopList(body.stop),
    ignoreEos: body.ignore_eos ?? undefined,
    ...llamaSamplers(body),
  };
}

function responseGrammar(loaded: LoadedModel, body: ChatBody): string | undefined {
  const schema = responseSchema(body);
  return schema === undefined ? undefined : schemaGrammar(loaded, schema, body.response_format?.type === "json_object" ? "response_format" : "response_format.json_schema.schema");
}

/** The JSON schema response_format asks for (json_object: any object). */
function responseSchema(body: ChatBody): object | undefined {
  const format = body.response_format;
  if (!format || format.type === "text") return undefined;
  if (format.type === "json_object") return { type: "object" };
  const schema = format.json_schema?.schema;
  if (schema === undefined) throw badRequest("response_format.json_schema.schema is required", "response_format.json_schema.schema");
  checkSchemaSize(schema, "response_format.json_schema.schema");
  return schema;
}

function openAiToolChoice(choice: unknown, tools: ChatTool[]): ChatToolChoice | undefined {
  if (choice === undefined || choice === null) return undefined;
  if (tools.length === 0 && choice !== "none" && choice !== "auto") throw badRequest("tool_choice is only allowed when tools are given", "tool_choice");
  try {
    const normalized = normalizeToolChoice(choice, tools, "tool_choice");
    return normalized.named !== undefined ? { name: normalized.named } : normalized.choice;
  } catch (error) {
    throw badRequest(oneLine(error), "tool_choice");
  }
}

/** reasoning_effort ("none" turns thinking off; others reach the template, as gpt-oss's reads it) and chat_template_kwargs. */
function reasoningOptions(body: ChatBody): { thinking?: boolean; templateVariables?: Record<string, unknown> } {
  const variables: Record<string, unknown> = { ...(body.chat_template_kwargs ?? {}) };
  let thinking: boolean | undefined;
  if (typeof variables.enable_thinking === "boolean") thinking = variables.enable_thinking;
  if (body.reasoning_effort === "none") thinking = false;
  else if (typeof body.reasoning_effort === "string") variables.reasoning_effort = body.reasoning_effort;
  return { ...(thinking !== undefined ? { thinking } : {}), ...(Object.keys(variables).length > 0 ? { templateVariables: variables } : {}) };
}

/** A delta as OpenAI streams it: content, reasoning_content (llama-server's), tool_calls by index. */
function openAiDelta(delta: ChatDelta): object {
  const out: Record<string, unknown> = {};
  if (delta.reasoning !== "") out.reasoning_content = delta.reasoning;
  if (delta.content !== "") out.content = delta.content;
  if (delta.toolCalls.length > 0) {
    out.tool_calls = delta.toolCalls.map((call) =>
      call.name !== undefined
        ? { index: call.index, id: call.id, type: "function", function: { name: call.name, arguments: call.arguments } }
        : { index: call.index, function: { arguments: call.arguments } },
    );
  }
  return out;
}

/** The assistant's message: content null when it only calls tools, as OpenAI's. */
function openAiMessage(message: ParsedChatMessage): object {
  const calls = message.toolCalls;
  return {
    role: "assistant",
    content: message.content === "" && calls.length > 0 ? null : message.content,
    ...(message.reasoning !== "" ? { reasoning_content: message.reasoning } : {}),
    ...(calls.length > 0 ? { tool_calls: calls.map((call) => ({ id: call.id, type: "function", function: { name: call.name, arguments: call.arguments } })) } : {}),
    refusal: null,
  };
}

/**
 * OpenAI messages as the chat template takes them: text content (parts kept as parts), "developer" as "system",
 * assistant tool calls, "tool" results with their call's id, and the legacy "function" role and function_call.
 */
function toMessages(messages: ChatBody["messages"]): ChatMessage[] {
  return messages.map((message, i) => {
    const role = message.role === "developer" ? "system" : message.role === "function" ? "tool" : message.role;
    const content = message.content;
    let text: ChatMessage["content"];
    if (typeof content === "string") text = content;
    else if (content == null) text = "";
    else {
      text = content.map((part, j) => {
        if (part.type === "text" && typeof part.text === "string") return { type: "text" as const, text: part.text };
        if (part.type === "refusal" && typeof part.refusal === "string") return { type: "text" as const, text: part.refusal };
        if (part.type === "image_url" && part.image_url !== undefined) return imagePart(part.image_url, `messages[${i}].content[${j}].image_url`);
        if (part.type === "input_audio" && part.input_audio !== undefined) return audioPart(part.input_audio, `messages[${i}].content[${j}].input_audio`);
        throw badRequest(`content parts of type "${part.type.slice(0, 64)}" are not supported (this server reads text, image_url and input_audio parts)`, `messages[${i}].content[${j}].type`);
      });
    }
    const out: ChatMessage = { role, content: text };
    if (message.reasoning_content) out.reasoning = message.reasoning_content;
    const calls = message.tool_calls ?? (message.function_call ? [{ type: "function", function: message.function_call }] : undefined);
    if (calls && calls.length > 0) {
      if (role !== "assistant") throw badRequest("only assistant messages can have tool_calls", `messages[${i}].tool_calls`);
      out.toolCalls = calls.map((call, j) => {
        const name = call.function?.name;
        if (typeof name !== "string" || name === "") throw badRequest("a tool call needs function.name", `messages[${i}].tool_calls[${j}].function.name`);
        return { id: call.id ?? "", name, arguments: call.function?.arguments ?? "{}" };
      });
    }
    if (role === "tool") {
      if (message.tool_call_id != null) out.toolCallId = message.tool_call_id;
      if (message.name != null) out.name = message.name;
    }
    return out;
  });
}

const EMBED_TOKENIZE = { addSpecial: true, parseSpecial: true } as const;

async function embeddingInputs(loaded: LoadedModel, input: EmbeddingsBody["input"]): Promise<Int32Array[]> {
  const list: (string | number[])[] = typeof input === "string" ? [input] : typeof input[0] === "number" ? [input as number[]] : (input as (string | number[])[]);
  const out: Int32Array[] = [];
  const limit = loaded.embedder.limit;
  for (const [i, item] of list.entries()) {
    const param = typeof input === "string" || typeof input[0] === "number" ? "input" : `input[${i}]`;
    const tokens = typeof item === "string" ? await loaded.model.tokenize(item, EMBED_TOKENIZE) : checkedTokens(loaded, item, param);
    if (tokens.length === 0) throw badRequest(`${param} is empty`, param);
    if (tokens.length > limit) {
      throw new HttpError(400, `${param} is ${tokens.length} tokens but the embedding context takes at most ${limit}`, { param, code: "context_length_exceeded" });
    }
    out.push(tokens);
  }
  return out;
}

interface ModelCard {
  id: string;
  object: "model";
  created: number;
  owned_by: string;
  status: { value: "loaded" | "loading" | "unloaded" };
}

/** Every cached model, and any loaded one the cache does not list (a local file), the loaded ones marked. */
async function modelList(parts: ServerParts): Promise<ModelCard[]> {
  const loadedKeys = new Map(parts.models.loaded().map((m) => [m.key, m]));
  const cards: ModelCard[] = [];
  const seen = new Set<string>();
  for (const listing of await listModels({ cacheDir: parts.options.cacheDir, env: parts.options.env })) {
    const key = canonical(listing.reference) ?? listing.reference;
    seen.add(key);
    cards.push({
      id: listing.reference,
      object: "model",
      created: Math.floor(Date.parse(listing.pulledAt) / 1000) || 0,
      owned_by: key.split("/")[0] ?? "",
      status: { value: loadedKeys.has(key) ? "loaded" : parts.models.isLoading(key) ? "loading" : "unloaded" },
    });
  }
  for (const [key, loaded] of loadedKeys) {
    if (seen.has(key)) continue;
    cards.push({ id: loaded.name, object: "model", created: Math.floor(loaded.loadedAt.getTime() / 1000), owned_by: "local", status: { value: "loaded" } });
  }
  return cards;
}

function canonical(name: string): string | undefined {
  try {
    return formatReference(parseReference(name));
  } catch {
    return undefined;
  }
}

function fingerprint(loaded: LoadedModel): string {
  return `llama-oci-${loaded.pull?.digest.slice(7, 19) ?? "local"}`;
}

function randomId(): string {
  return randomBytes(12).toString("base64url");
}

/** An image_url part as an image: its data: URL decoded (a URL to fetch is refused, and a bad one is a 400). */
function imagePart(imageUrl: string | { url: string }, param: string): ChatImagePart {
  const url = typeof imageUrl === "string" ? imageUrl : imageUrl.url;
  try {
    return { type: "image", data: decodeBase64(url, param) };
  } catch (error) {
    throw badRequest(oneLine(error), param);
  }
}

/**
 * An input_audio part as audio: its base64 data decoded (the format, "wav" or "mp3" as the schema takes, is not
 * needed: libmtmd tells the two apart by their bytes, as llama-server lets it). Bad or empty data is a 400.
 */
function audioPart(inputAudio: { data: string }, param: string): ChatAudioPart {
  let data: Uint8Array;
  try {
    data = decodeBase64(inputAudio.data, `${param}.data`, "audio");
  } catch (error) {
    throw badRequest(oneLine(error), `${param}.data`);
  }
  if (data.length === 0) throw badRequest(`${param}.data is empty: give the base64 of a WAV or MP3 file`, `${param}.data`);
  return { type: "audio", data };
}
