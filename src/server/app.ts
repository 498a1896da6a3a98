/**
 * The fastify application: the HTTP server it runs on (timeouts against slow uploads, Nagle off), body parsing
 * (JSON whatever the content type, a size limit answering 413), CORS when origins are given, the API key check,
 * errors in OpenAI's or Ollama's shape, /health, /metrics, and the OpenAI and Ollama routes.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import cors from "@fastify/cors";
import Fastify, { type FastifyError, type FastifyInstance, type FastifyRequest } from "fastify";
import { errorBody, HttpError, toHttpError } from "./http-errors.js";
import { ollamaRoutes } from "./ollama.js";
import { openAiRoutes } from "./openai.js";
import { rerankRoutes } from "./rerank.js";
import { describeValidation, type ValidationIssue } from "./schemas.js";
import type { ServerParts } from "./server-parts.js";

export interface AppHealth {
  /** "loading" while models given at start load, "ok" after, "error" when one could not be loaded. */
  status: "loading" | "ok" | "error";
  error?: string;
}

export type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void;

export interface AppParts extends Omit<ServerParts, "recordStream"> {
  health: () => AppHealth;
}

/** Builds the app; `onHandler` receives fastify's request handler (for createRequestHandler). */
export async function buildApp(parts: AppParts, onHandler?: (handler: RequestHandler) => void): Promise<FastifyInstance> {
  const { options, metrics } = parts;
  const app = Fastify({
    logger: false,
    bodyLimit: options.bodyLimit,
    serverFactory: (handler) => {
      onHandler?.(handler);
      return httpServer(handler, options.requestTimeoutMs, options.headersTimeoutMs);
    },
    ajv: {
      customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false, verbose: true, strict: false },
    },
    return503OnClosing: true,
    forceCloseConnections: true,
    requestIdHeader: false,
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 2048 },
  });

  // Clients send JSON with any content type, or none (curl -d sends application/x-www-form-urlencoded).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "string" }, (_request, body, done) => {
    try {
      done(null, parseJson(body as string));
    } catch (error) {
      done(error as Error, undefined);
    }
  });

  const recorded = new WeakSet<FastifyRequest>();
  const started = new WeakMap<FastifyRequest, number>();
  const record = (request: FastifyRequest, status: number) => {
    if (recorded.has(request)) return;
    recorded.add(request);
    const route = request.routeOptions.url ?? "unmatched";
    metrics.httpRequests.inc({ route, method: request.method, status: String(status) });
    const t = started.get(request);
    const ms = t === undefined ? 0 : performance.now() - t;
    metrics.httpSeconds.observe({ route }, ms / 1000);
    if (options.accessLog) options.log(`${request.method} ${pathOf(request.url).slice(0, 200)} ${status} ${ms.toFixed(0)} ms`);
  };
  const routeParts: ServerParts = { ...parts, recordStream: record };

  app.addHook("onRequest", (request, _reply, done) => {
    started.set(request, performance.now());
    done();
  });
  app.addHook("onResponse", (request, reply, done) => {
    record(request, reply.statusCode);
    done();
  });

  if (options.cors.length > 0) {
    await app.register(cors, {
      origin: options.cors.includes("*") ? "*" : options.cors,
      methods: ["GET", "HEAD", "POST", "DELETE", "OPTIONS"],
      maxAge: 600,
    });
  }

  if (options.apiKey !== undefined) {
    const expected = digest(options.apiKey);
    app.addHook("onRequest", (request, reply, done) => {
      const path = pathOf(request.url);
      if (path === "/health" || bearerMatches(request.headers.authorization, expected)) return done();
      const error = new HttpError(401, "a valid API key is required: send it as 'Authorization: Bearer <key>'", {
        code: "invalid_api_key",
        headers: { "www-authenticate": 'Bearer realm="llama-oci"' },
      });
      void reply.code(401).headers(error.headers).send(errorBody(path, error));
    });
  }

  app.setErrorHandler((error: FastifyError & { validation?: ValidationIssue[] }, request, reply) => {
    const httpError = fromFrameworkError(error, options.bodyLimit);
    const path = pathOf(request.url);
    if (httpError.status >= 500) options.log(`${request.method} ${path}: ${httpError.message}`);
    if (reply.sent || reply.raw.headersSent) return;
    void reply.code(httpError.status === 499 ? 400 : httpError.status).headers(httpError.headers).send(errorBody(path, httpError));
  });

  app.setNotFoundHandler((request, reply) => {
    const path = pathOf(request.url);
    const error = new HttpError(404, `no route ${request.method} ${path.slice(0, 200)}`, { code: "not_found" });
    void reply.code(404).send(errorBody(path, error));
  });

  app.get("/", (_request, reply) => reply.type("text/plain; charset=utf-8").send("llama-oci is running"));

  app.get("/health", (_request, reply) => {
    const health = parts.health();
    return reply.code(health.status === "ok" ? 200 : 503).send(health);
  });

  app.get("/metrics", async (_request, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));

  openAiRoutes(app, routeParts);
  rerankRoutes(app, routeParts);
  ollamaRoutes(app, routeParts);
  return app;
}

function httpServer(handler: RequestHandler, requestTimeoutMs: number, headersTimeoutMs: number): Server {
  const server = createServer(
    {
      requestTimeout: requestTimeoutMs,
      headersTimeout: Math.min(headersTimeoutMs, requestTimeoutMs),
      // Timeouts are checked this often: a tenth of the shortest, within 100 ms to 5 s.
      connectionsCheckingInterval: Math.max(100, Math.min(5_000, Math.floor(Math.min(requestTimeoutMs, headersTimeoutMs) / 10))),
      keepAliveTimeout: 5_000,
      noDelay: true,
    },
    handler,
  );
  // Connections beyond this are closed at once, so idle sockets cannot use up the process's file descriptors.
  server.maxConnections = 1024;
  return server;
}

function fromFrameworkError(error: FastifyError & { validation?: ValidationIssue[] }, bodyLimit: number): HttpError {
  if (error instanceof HttpError) return error;
  if (Array.isArray(error.validation)) {
    const { message, param } = describeValidation(error.validation);
    return new HttpError(400, message, { param });
  }
  const code = typeof error.code === "string" ? error.code : "";
  if (code === "FST_ERR_CTP_BODY_TOO_LARGE") return new HttpError(413, `the request body is larger than the ${bodyLimit} bytes this server accepts (--body-limit)`, { code: "request_too_large" });
  if (code.startsWith("FST_ERR_CTP_") || code === "FST_ERR_BAD_URL") {
    return new HttpError(error.statusCode ?? 400, error.message.slice(0, 200), { code: "invalid_request" });
  }
  if (typeof error.statusCode === "number" && error.statusCode >= 400 && error.statusCode < 500) {
    return new HttpError(error.statusCode, error.message.slice(0, 200));
  }
  return toHttpError(error);
}

/** JSON.parse, with "__proto__" keys dropped (so no code here can ever treat one as the prototype). */
function parseJson(text: string): unknown {
  if (text.length === 0) throw new HttpError(400, "the request body is empty", { code: "invalid_json" });
  try {
    return text.includes("__proto__") ? JSON.parse(text, (key, value: unknown) => (key === "__proto__" ? undefined : value)) : JSON.parse(text);
  } catch (error) {
    throw new HttpError(400, `the request body is not valid JSON: ${(error as Error).message.slice(0, 200)}`, { code: "invalid_json" });
  }
}

function pathOf(url: string): string {
  const q = url.indexOf("?");
  return q === -1 ? url : url.slice(0, q);
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

/** Compares the bearer token with the key in constant time (both hashed to 32 bytes first, so lengths leak nothing). */
function bearerMatches(header: string | undefined, expected: Buffer): boolean {
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header ?? "");
  const given = digest(match?.[1] ?? "");
  return timingSafeEqual(given, expected) && match !== null;
}
