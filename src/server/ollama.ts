/**
 * The Ollama-compatible API under /api: version, tags, show, ps, pull (NDJSON progress), delete, chat, generate and
 * embed, with keep_alive. Streaming endpoints stream by default, as Ollama's do.
 */
import { readFile } from "node:fs/promises";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { LlamaOciError } from "../errors.js";
import type { ChatMessage, ParsedChatMessage } from "../llama/chat-format.js";
import type { CompletionResult } from "../llama/completion.js";
import type { GgufFacts } from "../gguf/facts.js";
import { decodeBase64, MediaPrompt, type ChatImagePart } from "../llama/media.js";
import { listModels, removeModels } from "../oci/cache/index.js";
import { inspectModel } from "../oci/inspect.js";
import type { ProgressEvent } from "../oci/progress.js";
import { pull } from "../oci/pull.js";
import {
  chatPrompt,
  chatRunOptions,
  checkedTokens,
  checkPromptFits,
  checkSchemaSize,
  endedByModel,
  finishReason,
  llamaSamplers,
  prepareChat,
  requestTools,
  runGeneration,
  schemaGrammar,
  stopList,
  toSeed,
  type LlamaSamplerFields,
  type Prompt,
} from "./generation.js";
import { badRequest, errorBody, HttpError, oneLine, toHttpError } from "./http-errors.js";
import type { LoadedModel } from "./models.js";
import { parseDuration } from "./options.js";
import type { RunOptions } from "./runner.js";
import { OLLAMA_CHAT_BODY, OLLAMA_EMBED_BODY, OLLAMA_GENERATE_BODY, OLLAMA_MODEL_BODY } from "./schemas.js";
import type { ServerParts } from "./server-parts.js";
import { clientGone, EventStream } from "./streams.js";

interface OllamaOptions extends LlamaSamplerFields {
  num_predict?: number | null;
  temperature?: number | null;
  top_k?: number | null;
  top_p?: number | null;
  min_p?: number | null;
  repeat_penalty?: number | null;
  repeat_last_n?: number | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
}

interface GenerationBody {
  model?: string;
  stream?: boolean | null;
  format?: string | object | null;
  keep_alive?: string | number | null;
  options?: OllamaOptions | null;
}

interface OllamaToolCall {
  id?: string | null;
  function: { name: string; arguments?: Record<string, unknown> | string | null };
}

interface OllamaMessage {
  role: string;
  content?: string | null;
  images?: string[] | null;
  tool_calls?: OllamaToolCall[] | null;
  tool_name?: string | null;
  tool_call_id?: string | null;
  thinking?: string | null;
}

interface ChatBody extends GenerationBody {
  messages?: OllamaMessage[] | null;
  tools?: unknown[] | null;
  think?: boolean | string | null;
}

interface GenerateBody extends GenerationBody {
  prompt?: string | null;
  suffix?: string | null;
  system?: string | null;
  template?: string | null;
  context?: number[] | null;
  raw?: boolean | null;
  images?: string[] | null;
}

interface EmbedBody {
  model?: string;
  input?: string | string[];
  prompt?: string | null;
  truncate?: boolean | null;
  keep_alive?: string | number | null;
}

interface ModelBody {
  model?: string;
  name?: string;
  insecure?: boolean | null;
  stream?: boolean | null;
}

interface ModelDetails {
  parent_model: string;
  format: string;
  family: string;
  families: string[];
  parameter_size: string;
  quantization_level: string;
}

const UNKNOWN_DETAILS: ModelDetails = { parent_model: "", format: "gguf", family: "", families: [], parameter_size: "", quantization_level: "" };
/** Ollama's expires_at for a model that stays loaded. */
const FOREVER = "2318-11-26T00:00:00Z";
const ns = (ms: number) => Math.round(ms * 1e6);
const EMBED_TOKENIZE = { addSpecial: true, parseSpecial: true } as const;

export function ollamaRoutes(app: FastifyInstance, parts: ServerParts): void {
  const { models } = parts;
  const details = new DetailsCache(parts);

  app.get("/api/version", () => ({ version: parts.version }));

  app.get("/api/tags", async () => {
    const listings = await listModels({ cacheDir: parts.options.cacheDir, env: parts.options.env });
    const out = [];
    for (const listing of listings) {
      // A model whose cached files cannot be read is still listed, without details.
      const facts = await details.get(listing.reference, listing.digest).catch(() => undefined);
      out.push({
        name: listing.reference,
        model: listing.reference,
        modified_at: listing.pulledAt,
        size: listing.size,
        digest: listing.digest.replace(/^sha256:/, ""),
        details: facts?.details ?? UNKNOWN_DETAILS,
      });
    }
    return { models: out };
  });

  app.get("/api/ps", async () => {
    const out = [];
    for (const loaded of models.loaded()) {
      const digest = loaded.pull?.digest;
      out.push({
        name: loaded.name,
        model: loaded.name,
        size: loaded.model.info.sizeBytes,
        digest: digest?.replace(/^sha256:/, "") ?? "",
        details: (await details.get(loaded.name, digest, loaded).catch(() => undefined))?.details ?? UNKNOWN_DETAILS,
        expires_at: loaded.expiresAt?.toISOString() ?? FOREVER,
        size_vram: 0,
        context_length: loaded.runner.contextSize,
      });
    }
    return { models: out };
  });

  app.post("/api/show", { schema: { body: OLLAMA_MODEL_BODY } }, async (request) => {
    const body = request.body as ModelBody;
    const name = body.model ?? body.name;
    const target = models.target(name);
    const loaded = models.loaded().find((m) => m.key === target.key);
    let facts: Facts;
    if (target.kind === "file") {
      if (!loaded) throw new HttpError(404, `model '${target.name}' is not loaded`);
      facts = await details.get(target.name, undefined, loaded);
    } else {
      facts = await details.get(target.reference, undefined).catch((error: unknown) => {
        throw notFoundFrom(error, target.name);
      });
    }
    const gguf = facts.gguf;
    const modelInfo: Record<string, string | number | boolean> = {};
    for (const [key, value] of Object.entries(gguf?.metadata ?? {})) {
      if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") modelInfo[key] = value;
    }
    return {
      license: facts.license,
      modelfile: "",
      parameters: "",
      template: facts.template ?? "",
      details: facts.details,
      model_info: modelInfo,
      capabilities: facts.embeddingOnly ? ["embedding"] : ["completion"],
      modified_at: facts.modifiedAt,
    };
  });

  app.delete("/api/delete", { schema: { body: OLLAMA_MODEL_BODY } }, async (request, reply) => {
    const body = request.body as ModelBody;
    const target = models.target(body.model ?? body.name);
    if (target.kind === "file") throw badRequest(`${target.name} is a local file, not a cached model`, "model");
    const [outcome] = await removeModels([target.reference], { cacheDir: parts.options.cacheDir, env: parts.options.env });
    if (outcome?.error) throw notFoundFrom(outcome.error, target.name);
    await models.unload(target.key, "deleted");
    return reply.code(200).send();
  });

  app.post("/api/pull", { schema: { body: OLLAMA_MODEL_BODY } }, async (request, reply) => {
    const body = request.body as ModelBody;
    const name = body.model ?? body.name;
    if (name === undefined) throw badRequest("model is required", "model");
    if (parts.options.pull === "never") throw new HttpError(403, "this server does not pull models (--pull never)");
    const signal = clientGone(request, reply);
    if (body.stream === false) {
      await models.pullModel(name, { insecure: body.insecure === true });
      return { status: "success" };
    }
    const events = new EventStream(reply, "ndjson", (status) => parts.recordStream(request, status));
    const progress = new PullProgress((line) => events.send(line));
    try {
      await abortable(models.pullModel(name, { insecure: body.insecure === true, onProgress: (event) => progress.on(event) }), signal);
      progress.finish();
      events.end();
    } catch (error) {
      if (!events.started) throw error;
      events.send({ error: toHttpError(error).message });
      events.end();
    }
    return reply;
  });

  app.post("/api/chat", { schema: { body: OLLAMA_CHAT_BODY } }, async (request, reply) => {
    const body = request.body as ChatBody;
    const startedAt = performance.now();
    const signal = clientGone(request, reply);
    const keepAlive = keepAliveOf(body);
    const tools = requestTools(body.tools);
    const messages = ollamaMessages(body.messages ?? []);
    const lease = await models.acquire(body.model, signal, { generate: messages.length > 0 });
    const loadMs = performance.now() - startedAt;
    try {
      const loaded = lease.model;
      const created = () => new Date().toISOString();
      if (messages.length === 0) {
        return { model: loaded.name, created_at: created(), message: { role: "assistant", content: "" }, done: true, done_reason: keepAlive === 0 ? "unload" : "load" };
      }
      const schema = formatSchema(body.format);
      const prepared = await prepareChat(loaded, {
        messages,
        tools,
        ...thinkOptions(body.think),
        ...(tools.length > 0 && schema !== undefined ? { jsonSchema: schema } : {}),
      });
      checkPromptFits(loaded, prepared.tokens, "messages");
      const grammar = tools.length > 0 || schema === undefined ? undefined : schemaGrammar(loaded, schema, "format");
      const options = chatRunOptions(loaded, { ...ollamaSampling(body.options), grammar, arriving: lease.arriving }, prepared);
      const parser = prepared.parser;
      const piece = (message: object) => ({ model: loaded.name, created_at: created(), message: { role: "assistant", content: "", ...message }, done: false });
      const final = (result: CompletionResult, message: object) => ({
        model: loaded.name,
        created_at: created(),
        message: { role: "assistant", content: "", ...message },
        done: true,
        done_reason: finishReason(result.stopReason),
        ...durations(result, startedAt, loadMs),
      });
      if (body.stream !== false) {
        await ndjson(parts, request, reply, loaded, prepared.tokens, options, signal, startedAt, {
          until: parser.limit,
          piece: (text) => {
            const delta = parser.push(text);
            if (!delta || (delta.content === "" && delta.reasoning === "")) return [];
            return [piece({ content: delta.content, ...(delta.reasoning !== "" ? { thinking: delta.reasoning } : {}) })];
          },
          last: (result) => {
            const { message, delta } = parser.finish(endedByModel(result.stopReason));
            const lines: object[] = [];
            if (delta && (delta.content !== "" || delta.reasoning !== "")) lines.push(piece({ content: delta.content, ...(delta.reasoning !== "" ? { thinking: delta.reasoning } : {}) }));
            // Ollama sends the calls whole, in a message of their own before the last one.
            if (message.toolCalls.length > 0) lines.push(piece({ tool_calls: ollamaToolCalls(message) }));
            lines.push(final(result, {}));
            return lines;
          },
        });
        return reply;
      }
      const result = await runGeneration(loaded, prepared.tokens, options, parts.metrics, { signal, startedAt, until: parser.limit, onText: (text) => parser.append(text) });
      const { message } = parser.finish(endedByModel(result.stopReason));
      return final(result, {
        content: message.content,
        ...(message.reasoning !== "" ? { thinking: message.reasoning } : {}),
        ...(message.toolCalls.length > 0 ? { tool_calls: ollamaToolCalls(message) } : {}),
      });
    } finally {
      lease.release(keepAlive);
    }
  });

  app.post("/api/generate", { schema: { body: OLLAMA_GENERATE_BODY } }, async (request, reply) => {
    const body = request.body as GenerateBody;
    const startedAt = performance.now();
    const signal = clientGone(request, reply);
    const keepAlive = keepAliveOf(body);
    if (body.suffix) throw badRequest("suffix (fill-in-the-middle) is not supported by this server", "suffix");
    if (body.template) throw badRequest("template is not supported (this server formats prompts with the model's own chat template)", "template");
    const images = generateImages(body);
    const lease = await models.acquire(body.model, signal, { generate: true });
    const loadMs = performance.now() - startedAt;
    try {
      const loaded = lease.model;
      const created = () => new Date().toISOString();
      const prompt = body.prompt ?? "";
      if (prompt === "" && !body.context?.length && images.length === 0) {
        return { model: loaded.name, created_at: created(), response: "", done: true, done_reason: keepAlive === 0 ? "unload" : "load" };
      }
      const tokens = await generatePrompt(loaded, body, prompt, images);
      checkPromptFits(loaded, tokens, "prompt");
      const options = { ...ollamaSampling(body.options), grammar: formatGrammar(loaded, body.format), arriving: lease.arriving };
      const final = (result: CompletionResult, response: string) => ({
        model: loaded.name,
        created_at: created(),
        response,
        done: true,
        done_reason: finishReason(result.stopReason),
        // The conversation so far as tokens, for the next request's context: a prompt with images has none (their
        // positions are no tokens), as their data cannot travel back that way.
        ...(tokens instanceof MediaPrompt ? {} : { context: [...tokens, ...result.tokens] }),
        ...durations(result, startedAt, loadMs),
      });
      if (body.stream !== false) {
        await ndjson(parts, request, reply, loaded, tokens, options, signal, startedAt, {
          piece: (text) => [{ model: loaded.name, created_at: created(), response: text, done: false }],
          last: (result) => [final(result, "")],
        });
        return reply;
      }
      const result = await runGeneration(loaded, tokens, options, parts.metrics, { signal, startedAt });
      return final(result, result.text);
    } finally {
      lease.release(keepAlive);
    }
  });

  const embed = async (request: FastifyRequest, reply: FastifyReply, legacy: boolean) => {
    const body = request.body as EmbedBody;
    const startedAt = performance.now();
    const signal = clientGone(request, reply);
    const keepAlive = keepAliveOf(body);
    const inputs = legacy ? [body.prompt ?? ""] : body.input === undefined ? [] : typeof body.input === "string" ? [body.input] : body.input;
    const lease = await models.acquire(body.model, signal);
    const loadMs = performance.now() - startedAt;
    try {
      const loaded = lease.model;
      const limit = loaded.embedder.limit;
      const tokenized: Int32Array[] = [];
      for (const [i, input] of inputs.entries()) {
        let tokens = await loaded.model.tokenize(input, EMBED_TOKENIZE);
        if (tokens.length > limit) {
          if (body.truncate === false) {
            throw new HttpError(400, `input[${i}] is ${tokens.length} tokens but the embedding context takes at most ${limit}`, { param: "input" });
          }
          tokens = tokens.subarray(0, limit);
        }
        if (tokens.length === 0) throw badRequest(`input[${i}] is empty`, "input");
        tokenized.push(tokens);
      }
      const vectors = tokenized.length > 0 ? await loaded.embedder.embedAll(tokenized, signal) : [];
      const count = tokenized.reduce((sum, t) => sum + t.length, 0);
      parts.metrics.promptTokens.inc({ model: loaded.name }, count);
      if (legacy) return { embedding: vectors[0] ? Array.from(vectors[0]) : [] };
      return {
        model: loaded.name,
        embeddings: vectors.map((v) => Array.from(v)),
        total_duration: ns(performance.now() - startedAt),
        load_duration: ns(loadMs),
        prompt_eval_count: count,
      };
    } finally {
      lease.release(keepAlive);
    }
  };
  app.post("/api/embed", { schema: { body: OLLAMA_EMBED_BODY } }, (request, reply) => embed(request, reply, false));
  app.post("/api/embeddings", { schema: { body: OLLAMA_EMBED_BODY } }, (request, reply) => embed(request, reply, true));
}

/**
 * /api/generate's images (base64), decoded; they go before the prompt's text in the user message, as on /api/chat.
 * Not with raw (no template to place them) or context (a conversation of tokens, which images are not).
 */
function generateImages(body: GenerateBody): ChatImagePart[] {
  const list = body.images ?? [];
  if (list.length === 0) return [];
  if (body.raw === true) throw badRequest("images need the model's chat template: send them without raw", "images");
  if (body.context?.length) throw badRequest("images cannot be combined with context: send the conversation to /api/chat with messages[].images", "images");
  return ollamaImages(list, "images");
}

/** Ollama's base64 images, decoded; one that is not base64 is a 400 naming `${param}[i]`. */
function ollamaImages(list: readonly string[], param: string): ChatImagePart[] {
  return list.map((data, i): ChatImagePart => {
    try {
      return { type: "image", data: decodeBase64(data, `${param}[${i}]`) };
    } catch (error) {
      throw badRequest(oneLine(error), `${param}[${i}]`);
    }
  });
}

/** The prompt of /api/generate: raw, or as a user message (after `system`) in the chat template; after `context`. */
async function generatePrompt(loaded: LoadedModel, body: GenerateBody, prompt: string, images: ChatImagePart[]): Promise<Prompt> {
  const context = body.context?.length ? checkedTokens(loaded, body.context, "context") : undefined;
  let tokens: Int32Array;
  if (body.raw === true) {
    tokens = await loaded.model.tokenize(prompt, { addSpecial: context === undefined, parseSpecial: true });
  } else {
    const messages: ChatMessage[] = [];
    if (body.system) messages.push({ role: "system", content: body.system });
    if (images.length > 0) {
      messages.push({ role: "user", content: [...images, { type: "text", text: prompt }] });
      return (await prepareChat(loaded, { messages }, "images")).tokens;
    }
    messages.push({ role: "user", content: prompt });
    tokens = await chatPrompt(loaded, messages, "prompt");
    const bos = loaded.model.info.bosToken;
    if (context !== undefined && tokens[0] === bos) tokens = tokens.subarray(1);
  }
  if (context === undefined) return tokens;
  const out = new Int32Array(context.length + tokens.length);
  out.set(context);
  out.set(tokens, context.length);
  return out;
}

interface StreamShape {
  /** The lines a piece of generated text makes (none while, say, a tool call's markup is being parsed). */
  piece: (text: string) => object[];
  /** The last lines (the one with done: true last). */
  last: (result: CompletionResult) => object[];
  /** Ends the generation as a stop string would (the chat parser's limit on tool calls). */
  until?: AbortSignal;
}

/** A generation as NDJSON: a line per piece, then the final line with done: true; errors after the start as { error }. */
async function ndjson(
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
  const events = new EventStream(reply, "ndjson", (status) => parts.recordStream(request, status));
  try {
    // The stream starts with the first piece of text, so that failures before it answer with their own status.
    const result = await runGeneration(loaded, tokens, options, parts.metrics, {
      signal,
      startedAt,
      ...(shape.until ? { until: shape.until } : {}),
      onText: (text) => {
        for (const line of shape.piece(text)) events.send(line);
      },
    });
    if (result.stopReason === "abort" && signal.aborted) return events.abandon();
    if (result.stopReason !== "abort") for (const line of shape.last(result)) events.send(line);
    events.end();
  } catch (error) {
    if (!events.started) throw error;
    const httpError = toHttpError(error);
    if (httpError.status >= 500) parts.options.log(`${request.method} ${request.url}: ${httpError.message}`);
    events.send(errorBody("/api", httpError));
    events.end();
  }
}

function durations(result: CompletionResult, startedAt: number, loadMs: number): object {
  const t = result.timings;
  return {
    total_duration: ns(performance.now() - startedAt),
    load_duration: ns(loadMs),
    prompt_eval_count: t.promptTokens,
    prompt_eval_duration: ns(t.promptMs),
    eval_count: t.generatedTokens,
    eval_duration: ns(t.generateMs),
  };
}

function keepAliveOf(body: { keep_alive?: string | number | null }): number | undefined {
  if (body.keep_alive === undefined || body.keep_alive === null) return undefined;
  try {
    return parseDuration(body.keep_alive, "keep_alive", "s");
  } catch (error) {
    throw badRequest(oneLine(error), "keep_alive");
  }
}

/** Ollama's options as generation options: num_predict -1 (or -2) = until the model stops or the context is full. */
function ollamaSampling(options: OllamaOptions | null | undefined): RunOptions {
  const o = options ?? {};
  return {
    maxTokens: o.num_predict == null || o.num_predict < 0 ? Infinity : o.num_predict,
    temperature: o.temperature ?? undefined,
    topK: o.top_k == null ? undefined : Math.max(0, o.top_k),
    topP: o.top_p ?? undefined,
    minP: o.min_p ?? undefined,
    repeatPenalty: o.repeat_penalty ?? undefined,
    repeatLastN: o.repeat_last_n ?? undefined,
    presencePenalty: o.presence_penalty ?? undefined,
    frequencyPenalty: o.frequency_penalty ?? undefined,
    seed: toSeed(o.seed),
    stop: stopList(o.stop),
    ...llamaSamplers(o),
  };
}

/** `format`: "json" (any JSON object) or a JSON schema. */
function formatGrammar(loaded: LoadedModel, format: string | object | null | undefined): string | undefined {
  const schema = formatSchema(format);
  return schema === undefined ? undefined : schemaGrammar(loaded, schema, "format");
}

function formatSchema(format: string | object | null | undefined): object | undefined {
  if (format === undefined || format === null || format === "") return undefined;
  if (format === "json") return { type: "object" };
  if (typeof format === "string") throw badRequest(`format must be "json" or a JSON schema (got "${format}")`, "format");
  checkSchemaSize(format, "format");
  return format;
}

/** think: false turns thinking off; "high", "medium" or "low" reach the template as reasoning_effort (gpt-oss). */
function thinkOptions(think: boolean | string | null | undefined): { thinking?: boolean; templateVariables?: Record<string, unknown> } {
  if (think === false) return { thinking: false };
  if (think === true) return { thinking: true };
  if (typeof think === "string") {
    if (!["high", "medium", "low"].includes(think)) throw badRequest(`think must be a boolean, "high", "medium" or "low" (got "${think.slice(0, 64)}")`, "think");
    return { thinking: true, templateVariables: { reasoning_effort: think } };
  }
  return {};
}

/**
 * Ollama's messages: tool calls with object arguments and often no ids (each gets one, and the tool results that
 * follow take the ids of the calls in order, as Ollama pairs them), tool results named by tool_name, thinking.
 */
function ollamaMessages(messages: OllamaMessage[]): ChatMessage[] {
  const pending: { id: string; name: string }[] = [];
  let counter = 0;
  return messages.map((m, i) => {
    // Ollama's images (base64) come before the message's text, as its own templates put them.
    const images = ollamaImages(m.images ?? [], `messages[${i}].images`);
    const out: ChatMessage = { role: m.role, content: images.length > 0 ? [...images, { type: "text", text: m.content ?? "" }] : (m.content ?? "") };
    if (m.thinking) out.reasoning = m.thinking;
    if (m.tool_calls && m.tool_calls.length > 0) {
      pending.length = 0;
      out.toolCalls = m.tool_calls.map((call) => {
        // Nine letters and digits: what Mistral's templates require of an id.
        const id = call.id || `call${String(++counter).padStart(5, "0")}`;
        pending.push({ id, name: call.function.name });
        const args = call.function.arguments;
        return { id, name: call.function.name, arguments: typeof args === "string" ? args : JSON.stringify(args ?? {}) };
      });
    }
    if (m.role === "tool") {
      const name = m.tool_name ?? undefined;
      const index = name === undefined ? 0 : Math.max(0, pending.findIndex((p) => p.name === name));
      const call = m.tool_call_id ? undefined : pending.splice(index, 1)[0];
      const id = m.tool_call_id ?? call?.id;
      if (id !== undefined) out.toolCallId = id;
      if (name !== undefined || call !== undefined) out.name = name ?? call!.name;
    }
    return out;
  });
}

/** Tool calls as Ollama gives them: arguments as an object. */
function ollamaToolCalls(message: ParsedChatMessage): object[] {
  return message.toolCalls.map((call, index) => ({ id: call.id, function: { index, name: call.name, arguments: parseArguments(call.arguments) } }));
}

function parseArguments(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

function notFoundFrom(error: unknown, name: string): HttpError {
  if (error instanceof LlamaOciError && (error.code === "NOT_FOUND" || error.code === "OFFLINE")) return new HttpError(404, `model '${name}' not found`);
  return toHttpError(error);
}

function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new LlamaOciError("ABORTED", "the client went away"));
    if (signal.aborted) onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** Pull progress as Ollama reports it: "pulling manifest", "pulling <digest>" with total and completed, "verifying sha256 digest", "writing manifest", "success". */
class PullProgress {
  #send: (line: object) => void;
  #started = false;
  #lastSent = new Map<string, number>();

  constructor(send: (line: object) => void) {
    this.#send = send;
  }

  on(event: ProgressEvent): void {
    if (!this.#started) {
      this.#started = true;
      this.#send({ status: "pulling manifest" });
    }
    const layer = (digest: string, total: number, completed: number) => ({ status: `pulling ${digest.replace(/^sha256:/, "").slice(0, 12)}`, digest, total, completed });
    switch (event.type) {
      case "layer-start":
        this.#send(layer(event.digest, event.size, event.resumeFrom));
        break;
      case "layer-waiting":
        this.#send(layer(event.digest, event.size, 0));
        break;
      case "layer-progress": {
        const now = performance.now();
        if (now - (this.#lastSent.get(event.digest) ?? 0) < 100 && event.completed < event.size) return;
        this.#lastSent.set(event.digest, now);
        this.#send(layer(event.digest, event.size, event.completed));
        break;
      }
      case "layer-done":
        this.#send(layer(event.digest, event.size, event.size));
        break;
      case "verifying":
        this.#send({ status: "verifying sha256 digest" });
        break;
      default:
        break;
    }
  }

  finish(): void {
    if (!this.#started) this.#send({ status: "pulling manifest" });
    this.#send({ status: "writing manifest" });
    this.#send({ status: "success" });
  }
}

interface Facts {
  details: ModelDetails;
  gguf: GgufFacts | undefined;
  template: string | undefined;
  license: string;
  embeddingOnly: boolean;
  modifiedAt: string;
}

/** What /api/tags, /api/ps and /api/show say about a model, from its GGUF header in the cache, kept per digest. */
class DetailsCache {
  #parts: ServerParts;
  #byDigest = new Map<string, Facts>();

  constructor(parts: ServerParts) {
    this.#parts = parts;
  }

  async get(reference: string, digest: string | undefined, loaded?: LoadedModel): Promise<Facts> {
    const cached = digest !== undefined ? this.#byDigest.get(digest) : undefined;
    if (cached) return cached;
    const options = { cacheDir: this.#parts.options.cacheDir, env: this.#parts.options.env, offline: true };
    let facts: Facts;
    if (loaded && !loaded.pull) {
      facts = fromInfo(loaded);
    } else {
      const info = await inspectModel(reference, options);
      const gguf = info.gguf;
      const architecture = gguf.architecture ?? info.config.summary?.architecture ?? "";
      const pulled = await pull(reference, options).catch(() => undefined);
      const licenses: string[] = [];
      for (const file of pulled?.files ?? []) {
        if (file.kind === "license" && file.size <= 256 * 1024) licenses.push(await readFile(file.path, "utf8").catch(() => ""));
      }
      const template = pulled?.chatTemplatePath ? await readFile(pulled.chatTemplatePath, "utf8").catch(() => undefined) : undefined;
      facts = {
        details: {
          parent_model: "",
          format: "gguf",
          family: architecture,
          families: architecture ? [architecture] : [],
          parameter_size: parameterSize(gguf.parameterCount),
          quantization_level: gguf.quantization ?? info.config.summary?.quantization ?? "",
        },
        gguf,
        template: template ?? gguf.chatTemplate,
        license: licenses.join("\n"),
        embeddingOnly: gguf.metadata[`${architecture}.attention.causal`] === false,
        modifiedAt: info.pulledAt ?? new Date(0).toISOString(),
      };
      this.#byDigest.set(info.digest, facts);
    }
    return facts;
  }
}

function fromInfo(loaded: LoadedModel): Facts {
  const info = loaded.model.info;
  return {
    details: {
      parent_model: "",
      format: "gguf",
      family: info.architecture,
      families: [info.architecture],
      parameter_size: parameterSize(info.parameters),
      quantization_level: /\b(Q\d\w*|F16|F32|BF16|IQ\d\w*)\b/i.exec(info.description)?.[1] ?? "",
    },
    gguf: undefined,
    template: loaded.chatTemplate ?? info.chatTemplate ?? undefined,
    license: "",
    // causalAttention is false for embedding models (absent in older addons: treat as causal).
    embeddingOnly: (info as { causalAttention?: boolean }).causalAttention === false,
    modifiedAt: loaded.loadedAt.toISOString(),
  };
}

/** "135.00M", "7.24B", as Ollama's parameter_size. */
function parameterSize(count: number): string {
  if (count >= 1e9) return `${(count / 1e9).toFixed(2)}B`;
  if (count >= 1e6) return `${(count / 1e6).toFixed(2)}M`;
  return `${(count / 1e3).toFixed(2)}K`;
}
