/**
 * HTTP for registries: one undici dispatcher per HttpClient (a keep-alive pool per origin inside it), proxies from
 * HTTP_PROXY / HTTPS_PROXY / NO_PROXY, and a trace of every exchange for --verbose that never shows a secret.
 * Extra CA certificates come from NODE_EXTRA_CA_CERTS, which Node loads into the default TLS store undici uses.
 */
import type { Dispatcher } from "undici";
import EnvHttpProxyAgent from "undici/lib/dispatcher/env-http-proxy-agent.js";
import dispatchRequest from "undici/lib/api/api-request.js";
import connectApi from "undici/lib/api/api-connect.js";
import DispatcherClass from "undici/lib/dispatcher/dispatcher.js";
import { abortError } from "../../errors.js";
import { redactUrl, type Logger } from "../../log.js";
import { describeNetworkError, networkError } from "./network-errors.js";

// ProxyAgent opens its tunnels with dispatcher.connect(), which undici's index adds to every dispatcher; loading its
// modules directly skips that, and every proxied request failed with "this[kClient].connect is not a function".
if (typeof DispatcherClass.prototype.connect !== "function") Object.assign(DispatcherClass.prototype, { connect: connectApi });

export type HttpHeaders = Record<string, string>;

export interface HttpRequest {
  method?: "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE";
  headers?: HttpHeaders;
  body?: string | Buffer;
  signal?: AbortSignal;
  /** Fail when no response headers arrive within this time. */
  headersTimeoutMs?: number;
  /** Fail when the body stalls (no bytes) for this long. */
  bodyTimeoutMs?: number;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData["body"];
  url: string;
}

export interface HttpClientOptions {
  logger: Logger;
  env?: NodeJS.ProcessEnv;
  userAgent?: string;
  connections?: number;
}

export const USER_AGENT = "llama-oci/0.1.0";

export class HttpClient {
  readonly logger: Logger;
  private readonly dispatcher: Dispatcher;
  private readonly userAgent: string;

  constructor(options: HttpClientOptions) {
    const env = options.env ?? process.env;
    this.logger = options.logger;
    this.userAgent = options.userAgent ?? USER_AGENT;
    this.dispatcher = new EnvHttpProxyAgent({
      // "" rather than undefined: undici would otherwise fall back to process.env, not the env we were given.
      httpProxy: env.http_proxy ?? env.HTTP_PROXY ?? "",
      httpsProxy: env.https_proxy ?? env.HTTPS_PROXY ?? "",
      noProxy: env.no_proxy ?? env.NO_PROXY ?? "",
      connections: options.connections ?? 8,
      keepAliveTimeout: 10_000,
      connect: { timeout: 15_000 },
    });
  }

  async send(url: string, init: HttpRequest = {}, authScheme = "none"): Promise<HttpResponse> {
    const method = init.method ?? "GET";
    if (init.signal?.aborted) throw abortError(init.signal);
    const started = Date.now();
    let response: Dispatcher.ResponseData;
    try {
      const target = new URL(url);
      response = await dispatchRequest.call(this.dispatcher, {
        origin: target.origin,
        path: `${target.pathname}${target.search}`,
        method,
        headers: { "user-agent": this.userAgent, ...init.headers },
        body: init.body,
        signal: init.signal,
        headersTimeout: init.headersTimeoutMs ?? 30_000,
        bodyTimeout: init.bodyTimeoutMs ?? 30_000,
      });
    } catch (error) {
      if (init.signal?.aborted) throw abortError(init.signal);
      this.logger.debug(`${method} ${redactUrl(url)} -> ${describeNetworkError(error)} (auth: ${authScheme})`);
      throw networkError(url, error);
    }
    const range = init.headers?.range ?? init.headers?.Range;
    this.logger.debug(
      `${method} ${redactUrl(url)} -> ${response.statusCode} (auth: ${authScheme}${range ? `, ${range}` : ""}, ${Date.now() - started} ms)`,
    );
    return { status: response.statusCode, headers: response.headers, body: response.body, url };
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }
}

/** The one header value of a response header that may repeat. */
export function headerValue(headers: HttpResponse["headers"], name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}
