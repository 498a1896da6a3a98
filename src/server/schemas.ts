/**
 * JSON schemas of the request bodies, checked by fastify's ajv before a handler runs (no type coercion, unknown
 * fields allowed as the OpenAI and Ollama APIs allow them), and the one-line message a failed check answers with,
 * naming the field as OpenAI does ("messages[0].content must be a string ...").
 */

/** Any finite JSON number (1e400 parses to Infinity, which this refuses). */
const FINITE = Number.MAX_VALUE;
const INT32 = 2 ** 31 - 1;

const number = (minimum = -FINITE, maximum = FINITE) => ({ type: ["number", "null"], minimum, maximum }) as const;
const integer = (minimum: number, maximum: number) => ({ type: ["integer", "null"], minimum, maximum }) as const;
const boolean = { type: ["boolean", "null"] } as const;
const string = { type: ["string", "null"] } as const;

const STOP = {
  title: "a string, an array of strings or null",
  anyOf: [
    { type: "string", maxLength: 4096 },
    { type: "array", maxItems: 16, items: { type: "string", maxLength: 4096 } },
    { type: "null" },
  ],
} as const;

const BIAS = { anyOf: [{ type: "number", minimum: -FINITE, maximum: FINITE }, { const: false }] } as const;

/** OpenAI's { "token id": bias } object, or llama-server's [[token id or text, bias], ...]; a bias of false bans the token. */
const LOGIT_BIAS = {
  title: "an object of token ids to numbers, an array of [token, bias] pairs, or null",
  anyOf: [
    { type: "object", maxProperties: 65_536, additionalProperties: BIAS },
    { type: "array", maxItems: 65_536, items: { type: "array", minItems: 2, maxItems: 2, items: [{ type: ["integer", "string"] }, BIAS] } },
    { type: "null" },
  ],
} as const;

/** llama-server's samplers beyond OpenAI's (its field names), taken by /v1 and, in `options`, by /api. */
const LLAMA_SAMPLERS = {
  typical_p: number(0, 1),
  top_n_sigma: number(),
  xtc_probability: number(0, 1),
  xtc_threshold: number(0, 1),
  dry_multiplier: number(0),
  dry_base: number(0),
  dry_allowed_length: integer(0, INT32),
  dry_penalty_last_n: integer(-1, INT32),
  dry_sequence_breakers: { type: ["array", "null"], maxItems: 256, items: { type: "string", minLength: 1, maxLength: 256 } },
  mirostat: integer(0, 2),
  mirostat_tau: number(0),
  mirostat_eta: number(0),
  logit_bias: LOGIT_BIAS,
} as const;

/** llama-server's sampling extensions and OpenAI's sampling fields, shared by both OpenAI endpoints. */
const OPENAI_SAMPLING = {
  model: { type: ["string", "null"], maxLength: 2048 },
  max_tokens: integer(-1, INT32),
  temperature: number(0),
  top_p: number(0, 1),
  top_k: integer(-1, INT32),
  min_p: number(0, 1),
  repeat_penalty: number(0),
  repeat_last_n: integer(-1, INT32),
  presence_penalty: number(-2, 2),
  frequency_penalty: number(-2, 2),
  seed: { type: ["integer", "null"], minimum: -(2 ** 63), maximum: 2 ** 64 },
  stop: STOP,
  n: integer(1, INT32),
  stream: boolean,
  stream_options: {
    title: "an object or null",
    anyOf: [{ type: "object", properties: { include_usage: boolean } }, { type: "null" }],
  },
  ignore_eos: boolean,
  logprobs: boolean,
  user: string,
  ...LLAMA_SAMPLERS,
} as const;

const CONTENT_PART = {
  type: "object",
  required: ["type"],
  properties: {
    type: { type: "string", maxLength: 64 },
    text: { type: "string" },
    refusal: { type: "string" },
    // An image as a data: URL (or { url }), as OpenAI's image_url part.
    image_url: {
      title: "a data: URL or { url }",
      anyOf: [{ type: "string" }, { type: "object", required: ["url"], properties: { url: { type: "string" }, detail: { type: "string" } } }],
    },
    // Audio as base64 and its format, as OpenAI's input_audio part (libmtmd decodes WAV and MP3 by their bytes).
    input_audio: {
      type: "object",
      required: ["data", "format"],
      properties: { data: { type: "string" }, format: { type: "string", enum: ["wav", "mp3"] } },
    },
  },
} as const;

export const OPENAI_ROLES = ["system", "developer", "user", "assistant", "tool", "function"] as const;

const FUNCTION_CALL = {
  type: ["object", "null"],
  properties: { name: string, arguments: string },
} as const;

const OPENAI_TOOL_CALL = {
  type: "object",
  properties: {
    id: string,
    type: { type: ["string", "null"], enum: ["function", null] },
    function: FUNCTION_CALL,
  },
} as const;

const OPENAI_MESSAGE = {
  type: "object",
  required: ["role"],
  properties: {
    role: { type: "string", enum: OPENAI_ROLES },
    // Not an anyOf, so that a bad content part is named itself ("messages[0].content[1].input_audio.format ...").
    content: { type: ["string", "array", "null"], maxItems: 4096, items: CONTENT_PART },
    name: string,
    tool_calls: { type: ["array", "null"], maxItems: 1024, items: OPENAI_TOOL_CALL },
    tool_call_id: string,
    reasoning_content: string,
    function_call: FUNCTION_CALL,
  },
} as const;

const OPENAI_TOOL = {
  type: "object",
  required: ["type"],
  properties: {
    type: { type: "string", maxLength: 64 },
    function: {
      type: "object",
      required: ["name"],
      properties: { name: { type: "string", maxLength: 256 }, description: string, parameters: { type: ["object", "null"] }, strict: boolean },
    },
  },
} as const;

export const CHAT_COMPLETIONS_BODY = {
  type: "object",
  required: ["messages"],
  properties: {
    ...OPENAI_SAMPLING,
    messages: { type: "array", minItems: 1, maxItems: 100_000, items: OPENAI_MESSAGE },
    max_completion_tokens: integer(-1, INT32),
    response_format: {
      type: ["object", "null"],
      required: ["type"],
      properties: {
        type: { type: "string", enum: ["text", "json_object", "json_schema"] },
        json_schema: {
          type: "object",
          properties: { name: { type: "string" }, schema: { type: "object" }, strict: boolean },
        },
      },
    },
    tools: { type: ["array", "null"], maxItems: 1024, items: OPENAI_TOOL },
    tool_choice: {
      title: '"none", "auto", "required", { type: "function", function: { name } } or null',
      anyOf: [
        { type: "string", enum: ["none", "auto", "required"] },
        { type: "object", required: ["function"], properties: { type: { type: "string" }, function: { type: "object", required: ["name"], properties: { name: { type: "string" } } } } },
        { type: "null" },
      ],
    },
    parallel_tool_calls: boolean,
    reasoning_effort: { type: ["string", "null"], maxLength: 64 },
    chat_template_kwargs: { type: ["object", "null"] },
  },
} as const;

export const COMPLETIONS_BODY = {
  type: "object",
  required: ["prompt"],
  properties: {
    ...OPENAI_SAMPLING,
    prompt: {
      title: "a string, an array of one string, or an array of token IDs",
      anyOf: [
        { type: "string" },
        { type: "array", minItems: 1, maxItems: 1, items: { type: "string" } },
        { type: "array", minItems: 1, items: { type: "integer", minimum: 0, maximum: INT32 } },
      ],
    },
    suffix: string,
    echo: boolean,
    best_of: integer(1, INT32),
  },
} as const;

export const EMBEDDINGS_BODY = {
  type: "object",
  required: ["input"],
  properties: {
    model: { type: ["string", "null"], maxLength: 2048 },
    input: {
      title: "a string, an array of strings, an array of token IDs or an array of arrays of token IDs",
      anyOf: [
        { type: "string" },
        { type: "array", minItems: 1, maxItems: 2048, items: { type: "string" } },
        { type: "array", minItems: 1, items: { type: "integer", minimum: 0, maximum: INT32 } },
        { type: "array", minItems: 1, maxItems: 2048, items: { type: "array", minItems: 1, items: { type: "integer", minimum: 0, maximum: INT32 } } },
      ],
    },
    encoding_format: { type: ["string", "null"], enum: ["float", "base64", null] },
    dimensions: integer(1, INT32),
    user: string,
  },
} as const;

/** Jina's (and llama-server's) rerank body; `texts` instead of `documents` is Hugging Face TEI's. */
export const RERANK_BODY = {
  type: "object",
  required: ["query"],
  properties: {
    model: { type: ["string", "null"], maxLength: 2048 },
    query: { type: "string" },
    documents: {
      title: "an array of strings (or of { text } objects) or null",
      anyOf: [
        { type: "array", maxItems: 2048, items: { anyOf: [{ type: "string" }, { type: "object", required: ["text"], properties: { text: { type: "string" } } }] } },
        { type: "null" },
      ],
    },
    texts: { type: ["array", "null"], maxItems: 2048, items: { type: "string" } },
    top_n: integer(0, INT32),
    return_documents: boolean,
    return_text: boolean,
  },
} as const;

/** Ollama's `options`: the ones that change sampling are checked; the others (num_ctx, num_gpu, ...) are accepted and ignored. */
const OLLAMA_OPTIONS = {
  type: ["object", "null"],
  properties: {
    num_predict: integer(-2, INT32),
    temperature: number(0),
    top_k: integer(-1, INT32),
    top_p: number(0, 1),
    min_p: number(0, 1),
    repeat_penalty: number(0),
    repeat_last_n: integer(-1, INT32),
    presence_penalty: number(),
    frequency_penalty: number(),
    seed: { type: ["integer", "null"], minimum: -(2 ** 63), maximum: 2 ** 64 },
    stop: STOP,
    ...LLAMA_SAMPLERS,
  },
} as const;

const KEEP_ALIVE = { title: "a duration such as \"5m\", a number of seconds, or null", anyOf: [{ type: "string", maxLength: 64 }, { type: "number", minimum: -FINITE, maximum: FINITE }, { type: "null" }] } as const;
const FORMAT = { title: '"json", a JSON schema object, or null', anyOf: [{ type: "string", maxLength: 64 }, { type: "object" }, { type: "null" }] } as const;
const OLLAMA_MODEL = { type: "string", maxLength: 2048 } as const;

const OLLAMA_TOOL_CALL = {
  type: "object",
  required: ["function"],
  properties: {
    id: string,
    function: {
      type: "object",
      required: ["name"],
      properties: {
        name: { type: "string", maxLength: 256 },
        index: integer(0, INT32),
        arguments: { title: "an object or a JSON string", anyOf: [{ type: "object" }, { type: "string" }, { type: "null" }] },
      },
    },
  },
} as const;

const OLLAMA_MESSAGE = {
  type: "object",
  required: ["role"],
  properties: {
    role: { type: "string", maxLength: 64 },
    content: string,
    images: { type: ["array", "null"], items: { type: "string" } },
    tool_calls: { type: ["array", "null"], maxItems: 1024, items: OLLAMA_TOOL_CALL },
    tool_name: string,
    tool_call_id: string,
    thinking: string,
  },
} as const;

export const OLLAMA_CHAT_BODY = {
  type: "object",
  properties: {
    model: OLLAMA_MODEL,
    messages: { type: ["array", "null"], maxItems: 100_000, items: OLLAMA_MESSAGE },
    stream: boolean,
    format: FORMAT,
    keep_alive: KEEP_ALIVE,
    options: OLLAMA_OPTIONS,
    tools: { type: ["array", "null"], maxItems: 1024, items: OPENAI_TOOL },
    think: { title: 'a boolean, "high", "medium", "low" or null', anyOf: [{ type: "boolean" }, { type: "string", maxLength: 64 }, { type: "null" }] },
  },
} as const;

export const OLLAMA_GENERATE_BODY = {
  type: "object",
  properties: {
    model: OLLAMA_MODEL,
    prompt: string,
    suffix: string,
    system: string,
    template: string,
    context: { type: ["array", "null"], items: { type: "integer", minimum: 0, maximum: INT32 } },
    stream: boolean,
    raw: boolean,
    format: FORMAT,
    images: { type: ["array", "null"], items: { type: "string" } },
    keep_alive: KEEP_ALIVE,
    options: OLLAMA_OPTIONS,
    think: {},
  },
} as const;

export const OLLAMA_EMBED_BODY = {
  type: "object",
  properties: {
    model: OLLAMA_MODEL,
    input: {
      title: "a string or an array of strings",
      anyOf: [{ type: "string" }, { type: "array", maxItems: 2048, items: { type: "string" } }],
    },
    prompt: string,
    truncate: boolean,
    keep_alive: KEEP_ALIVE,
    options: OLLAMA_OPTIONS,
    dimensions: integer(1, INT32),
  },
} as const;

/** /api/pull, /api/show, /api/delete: the model is `model` (or the older `name`). */
export const OLLAMA_MODEL_BODY = {
  type: "object",
  properties: {
    model: OLLAMA_MODEL,
    name: OLLAMA_MODEL,
    insecure: boolean,
    stream: boolean,
    verbose: boolean,
  },
} as const;

/** One failed check of ajv (fastify's FastifySchemaValidationError, with `verbose` on so parentSchema is there). */
export interface ValidationIssue {
  keyword: string;
  instancePath: string;
  params: Record<string, unknown>;
  message?: string;
  parentSchema?: { title?: string };
}

/** The message and the field (OpenAI's `param`) for a failed body check. */
export function describeValidation(issues: readonly ValidationIssue[]): { message: string; param: string | null } {
  // For anyOf, ajv lists each branch's failure and then the anyOf itself: that last one says what the field may be.
  const issue = issues.find((i) => i.keyword === "anyOf" || i.keyword === "oneOf") ?? issues[0];
  if (!issue) return { message: "the request body is invalid", param: null };
  let path = pointerToParam(issue.instancePath);
  const p = issue.params;
  if (issue.keyword === "required") {
    const missing = typeof p.missingProperty === "string" ? p.missingProperty : "?";
    path = path === "" ? missing : `${path}.${missing}`;
    return { message: `${path} is required`, param: path };
  }
  const name = path === "" ? "the request body" : path;
  const param = path === "" ? null : path;
  switch (issue.keyword) {
    case "type":
      return { message: `${name} must be ${typeText(p.type)}`, param };
    case "enum":
      return { message: `${name} must be one of ${(Array.isArray(p.allowedValues) ? p.allowedValues : []).map((v) => JSON.stringify(v)).join(", ")}`, param };
    case "minimum":
    case "maximum":
    case "exclusiveMinimum":
    case "exclusiveMaximum":
      if (Math.abs(Number(p.limit)) === FINITE) return { message: `${name} must be a finite number`, param };
      return { message: `${name} must be ${String(p.comparison)} ${String(p.limit)}`, param };
    case "minItems":
      return { message: `${name} must have at least ${String(p.limit)} item${p.limit === 1 ? "" : "s"}`, param };
    case "maxItems":
      return { message: `${name} must have at most ${String(p.limit)} items`, param };
    case "maxLength":
      return { message: `${name} must be at most ${String(p.limit)} characters`, param };
    case "anyOf":
    case "oneOf":
      return { message: `${name} must be ${issue.parentSchema?.title ?? "of another type"}`, param };
    default:
      return { message: `${name} ${issue.message ?? "is invalid"}`, param };
  }
}

/** "/messages/0/content" → "messages[0].content". */
function pointerToParam(pointer: string): string {
  let out = "";
  for (const raw of pointer.split("/").slice(1)) {
    const part = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    out += /^\d+$/.test(part) ? `[${part}]` : out === "" ? part : `.${part}`;
  }
  return out;
}

const ARTICLE: Record<string, string> = {
  string: "a string",
  number: "a number",
  integer: "an integer",
  boolean: "a boolean",
  object: "an object",
  array: "an array",
  null: "null",
};

function typeText(type: unknown): string {
  const types = Array.isArray(type) ? type : typeof type === "string" ? type.split(",") : [];
  const words = types.map((t) => ARTICLE[String(t)] ?? String(t));
  if (words.length <= 1) return words[0] ?? "of another type";
  return `${words.slice(0, -1).join(", ")} or ${words.at(-1)!}`;
}
