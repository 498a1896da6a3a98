/**
 * The OpenAI-compatible API under /v1: models, chat completions (SSE streaming, usage, finish_reason, JSON modes,
 * llama-server's sampling extensions), legacy completions (editors' autocomplete) and embeddings.
 */
import { randomBytes } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { ChatMessage } from "../llama/chat.js";
import type { CompletionResult } from "../llama/completion.js";
import { listModels } from "../oci/cache/index.js";
import { formatReference, parseReference } from "../oci/name/index.js";
import {
  chatPrompt,
  checkedTokens,
  checkPromptFits,
  finishReason,
  llamaSamplers,
  rawPrompt,
  runGeneration,
  schemaGrammar,
  stopList,
  timings,
  toSeed,
  usage,
  type LlamaSamplerFields,
} from "./generation.js";
import { badRequest, errorBody, HttpError, toHttpError } from "./http-errors.js";
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
}

interface ChatBody extends SamplingBody {
  messages: { role: string; content?: string | ContentPart[] | null }[];
  max_completion_tokens?: number | null;
  response_format?: { type: "text" | "json_object" | "json_schema"; json_schema?: { name?: string; schema?: object } } | null;
  tools?: unknown[] | null;
  tool_choice?: unknown;
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
    if (Array.isArray(body.tools) && body.tools.length > 0 && body.tool_choice !== "none") {
      throw badRequest("tools (function calling) are not supported by this server", "tools");
    }
    const messages = toMessages(body.messages);
    const lease = await models.acquire(body.model ?? undefined, signal);
    try {
      const loaded = lease.model;
      const tokens = await chatPrompt(loaded, messages);
      checkPromptFits(loaded, tokens, "messages");
      const options: RunOptions = { ...sampling(body, body.max_completion_tokens ?? body.max_tokens, Infinity), grammar: responseGrammar(loaded, body) };
      const id = `chatcmpl-${randomId()}`;
      const created = Math.floor(Date.now() / 1000);
      const base = { id, object: "chat.completion.chunk", created, model: loaded.name, system_fingerprint: fingerprint(loaded) };
      if (body.stream === true) {
        const includeUsage = body.stream_options?.include_usage === true;
        const chunk = (delta: object, finish: string | null) => ({
          ...base,
          choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
          ...(includeUsage ? { usage: null } : {}),
        });
        await stream(parts, request, reply, loaded, tokens, options, signal, startedAt, {
          first: () => chunk({ role: "assistant", content: "" }, null),
          piece: (text) => chunk({ content: text }, null),
          last: (result) => [
            { ...chunk({}, finishReason(result.stopReason)), timings: timings(result) },
            ...(includeUsage ? [{ ...base, choices: [], usage: usage(result) }] : []),
          ],
        });
        return reply;
      }
      const result = await runGeneration(loaded, tokens, options, parts.metrics, { signal, startedAt });
      return {
        ...base,
        object: "chat.completion",
        choices: [{ index: 0, message: { role: "assistant", content: result.text, refusal: null }, logprobs: null, finish_reason: finishReason(result.stopReason) }],
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
    const lease = await models.acquire(body.model ?? undefined, signal);
    try {
      const loaded = lease.model;
      const tokens = await rawPrompt(loaded, prompt);
      checkPromptFits(loaded, tokens, "prompt");
      const options = sampling(body, body.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS);
      const id = `cmpl-${randomId()}`;
      const created = Math.floor(Date.now() / 1000);
      const base = { id, object: "text_completion", created, model: loaded.name, system_fingerprint: fingerprint(loaded) };
      const choice = (text: string, finish: string | null) => ({ text, index: 0, logprobs: null, finish_reason: finish });
      if (body.stream === true) {
        const includeUsage = body.stream_options?.include_usage === true;
        const extra = includeUsage ? { usage: null } : {};
        await stream(parts, request, reply, loaded, tokens, options, signal, startedAt, {
          piece: (text) => ({ ...base, choices: [choice(text, null)], ...extra }),
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
  piece: (text: string) => object;
  last: (result: CompletionResult) => object[];
}

/** Runs a generation as Server-Sent Events ending in `data: [DONE]`; failures before the stream starts are HTTP errors. */
async function stream(
  parts: ServerParts,
  request: FastifyRequest,
  reply: FastifyReply,
  loaded: LoadedModel,
  tokens: Int32Array,
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
      onText: (text) => {
        begin();
        events.send(shape.piece(text));
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
  const format = body.response_format;
  if (!format || format.type === "text") return undefined;
  if (format.type === "json_object") return schemaGrammar(loaded, { type: "object" }, "response_format");
  const schema = format.json_schema?.schema;
  if (schema === undefined) throw badRequest("response_format.json_schema.schema is required", "response_format.json_schema.schema");
  return schemaGrammar(loaded, schema, "response_format.json_schema.schema");
}

/** OpenAI messages as the chat template takes them: text content, "developer" as "system", "function" as "tool". */
function toMessages(messages: ChatBody["messages"]): ChatMessage[] {
  return messages.map((message, i) => {
    const role = message.role === "developer" ? "system" : message.role === "function" ? "tool" : message.role;
    const content = message.content;
    if (typeof content === "string") return { role, content };
    if (content == null) return { role, content: "" };
    const texts = content.map((part, j) => {
      if (part.type === "text" && typeof part.text === "string") return part.text;
      if (part.type === "refusal" && typeof part.refusal === "string") return part.refusal;
      throw badRequest(`content parts of type "${part.type.slice(0, 64)}" are not supported (this server reads text only)`, `messages[${i}].content[${j}].type`);
    });
    return { role, content: texts.join("\n") };
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
