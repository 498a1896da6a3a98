/**
 * serve() and createRequestHandler(): the models, the metrics and the fastify app put together, listening on a
 * socket or handed over as a request handler.
 */
import type { AddressInfo } from "node:net";
import type { FastifyInstance } from "fastify";
import { buildApp, type AppHealth, type RequestHandler } from "./app.js";
import { oneLine } from "./http-errors.js";
import { ServerMetrics, type RunnerStats } from "./metrics.js";
import { ModelManager, type LoadedModel } from "./models.js";
import { resolveServeOptions, type ResolvedServeOptions, type ServeOptions } from "./options.js";

export type { ServeOptions } from "./options.js";
export type { LoadedModel } from "./models.js";
export type { RequestHandler } from "./app.js";

/** The version /api/version reports (this package's). */
const VERSION = "0.1.0";

export interface LlamaServer {
  /** http://host:port, with the port actually bound (see port: 0). */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** Settles when the models given at start are loaded: rejects with the load's (or pull's) error when one cannot be. */
  readonly ready: Promise<void>;
  /** The models loaded now. */
  loaded(): LoadedModel[];
  /** Stops listening, stops running generations and pulls, unloads every model. Idempotent. */
  close(): Promise<void>;
}

export interface LlamaRequestHandler {
  /** Mount it on your own server: http.createServer(handler), or a route of your framework that passes (req, res). */
  readonly handler: RequestHandler;
  readonly ready: Promise<void>;
  loaded(): LoadedModel[];
  /** Stops running generations and pulls and unloads every model. Idempotent. */
  close(): Promise<void>;
}

interface Core {
  options: ResolvedServeOptions;
  models: ModelManager;
  app: FastifyInstance;
  ready: Promise<void>;
  close(): Promise<void>;
}

async function createCore(options: ServeOptions, onHandler?: (handler: RequestHandler) => void): Promise<Core> {
  const resolved = resolveServeOptions(options);
  // The gauges read the manager at scrape time, after it exists.
  const metrics: ServerMetrics = new ServerMetrics((): RunnerStats[] =>
    manager.loaded().map((m) => ({ model: m.name, parallel: m.runner.parallel, busy: m.runner.busy, queued: m.runner.queued })),
  );
  const manager: ModelManager = new ModelManager(resolved, metrics);
  let health: AppHealth = { status: resolved.models.length > 0 ? "loading" : "ok" };
  const app = await buildApp({ models: manager, metrics, options: resolved, version: VERSION, health: () => health }, onHandler);
  let started: Promise<void> | undefined;
  const start = () => {
    started ??= manager.preload().then(
      () => {
        health = { status: "ok" };
      },
      (error: unknown) => {
        health = { status: "error", error: oneLine(error) };
        throw error;
      },
    );
    // Callers that never look at `ready` must not get an unhandled rejection.
    started.catch(() => {});
    return started;
  };
  let closing: Promise<void> | undefined;
  return {
    options: resolved,
    models: manager,
    app,
    get ready() {
      return start();
    },
    close() {
      closing ??= (async () => {
        await manager.close();
        await app.close();
      })();
      return closing;
    },
  };
}

/**
 * Starts the HTTP server: listens on options.host:options.port (default 127.0.0.1:8080), then loads the models
 * given in options.models (GET /health answers 503 until they are loaded). Resolves once listening.
 */
export async function serve(options: ServeOptions = {}): Promise<LlamaServer> {
  const core = await createCore(options);
  const { host, port } = core.options;
  try {
    await core.app.listen({ host, port });
  } catch (error) {
    await core.close();
    throw error;
  }
  const address = core.app.server.address() as AddressInfo;
  const ready = core.ready;
  const shownHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    url: `http://${shownHost}:${address.port}`,
    host: address.address,
    port: address.port,
    ready,
    loaded: () => core.models.loaded(),
    close: () => core.close(),
  };
}

/**
 * The same API as a request handler for an app's own HTTP server (Node's http, Electron's main process, another
 * framework's raw route). Models given in options.models start loading at once.
 */
export async function createRequestHandler(options: ServeOptions = {}): Promise<LlamaRequestHandler> {
  let inner: RequestHandler | undefined;
  const core = await createCore(options, (handler) => (inner = handler));
  await core.app.ready();
  const dispatch = inner;
  if (!dispatch) throw new Error("fastify did not hand over its request handler");
  const ready = core.ready;
  return {
    handler: (req, res) => dispatch(req, res),
    ready,
    loaded: () => core.models.loaded(),
    close: () => core.close(),
  };
}
