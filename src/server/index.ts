/**
 * server: `llama-oci serve`, serve() and createRequestHandler(): an OpenAI- and Ollama-compatible HTTP API over
 * models named by OCI reference (pulled on demand), each with `parallel` sequences behind a bounded queue.
 * The implementation (fastify, prom-client) loads on the first call, so importing this folder costs nothing.
 */
import type { LlamaRequestHandler, LlamaServer } from "./server.js";
import type { ServeOptions } from "./options.js";

export type { LlamaRequestHandler, LlamaServer, LoadedModel, RequestHandler, ServeOptions } from "./server.js";
export { SERVE_DEFAULTS, parseDuration } from "./options.js";

/** Starts the OpenAI- and Ollama-compatible HTTP server; see ServeOptions. */
export async function serve(options: ServeOptions = {}): Promise<LlamaServer> {
  return (await import("./server.js")).serve(options);
}

/** The server's API as a request handler for your own HTTP server. */
export async function createRequestHandler(options: ServeOptions = {}): Promise<LlamaRequestHandler> {
  return (await import("./server.js")).createRequestHandler(options);
}
