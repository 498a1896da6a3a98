/**
 * HTTP for registries: one undici dispatcher per Transport (a keep-alive pool per origin inside it), proxies from
 * HTTP_PROXY / HTTPS_PROXY / NO_PROXY, and a trace of every exchange for --verbose that never shows a secret.
 * Extra CA certificates come from NODE_EXTRA_CA_CERTS, which Node loads into the default TLS store undici uses.
 */
import type { Dispatcher } from "undici";
import EnvHttpProxyAgent from "undici/lib/dispatcher/env-http-proxy-agent.js";
import dispatchRequest from "undici/lib/api/api-request.js";
import connectApi from "undici/lib/api/api-connect.js";
import DispatcherClass from "undici/lib/dispatcher/dispatcher.js";
import { LlamaOciError, abortError } from "../errors.js";
import { redactUrl, type Logger } from "../log.js";

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

export interface TransportOptions {
  logger: Logger;
  env?: NodeJS.ProcessEnv;
  userAgent?: string;
  connections?: number;
}

export const USER_AGENT = "llama-oci/0.1.0";

export class Transport {
  readonly logger: Logger;
  private readonly dispatcher: Dispatcher;
  private readonly userAgent: string;

  constructor(options: TransportOptions) {
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

export function describeNetworkError(error: unknown): string {
  const err = error as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const code = err?.code ?? err?.cause?.code;
  // OpenSSL messages end in a newline; a trace or error line must stay one line.
  const message = (err?.cause?.message ?? err?.message ?? String(error)).replace(/\s+/g, " ").trim();
  return code ? `${code}: ${message}` : message;
}

export function networkError(url: string, error: unknown): LlamaOciError {
  const host = safeHost(url);
  if (isCertificateError(error)) {
    return new LlamaOciError("NETWORK", `the TLS certificate of ${host} is not trusted: ${describeNetworkError(error)}`, {
      hint: "if the registry uses a private CA, set NODE_EXTRA_CA_CERTS to its certificate file (PEM)",
      cause: error,
    });
  }
  return new LlamaOciError("NETWORK", `cannot reach ${host}: ${describeNetworkError(error)}`, {
    hint: "check the network, proxy settings (HTTPS_PROXY, NO_PROXY) and the registry address",
    cause: error,
  });
}

/** TLS verification failures (OpenSSL X509 codes and Node's host name check), anywhere in the cause chain. */
function isCertificateError(error: unknown): boolean {
  let current: unknown = error;
  for (let depth = 0; current && depth < 5; depth++) {
    const code = (current as { code?: string }).code;
    if (code && /CERT|SELF_SIGNED|UNABLE_TO_(GET_ISSUER|VERIFY_LEAF)|HOSTNAME_MISMATCH|INVALID_CA/.test(code)) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

function safeHost(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return "<invalid url>";
  }
}

const TRANSIENT_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "ENETUNREACH",
  "EHOSTUNREACH",
  "UND_ERR_SOCKET",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
  "UND_ERR_CLOSED",
  "ERR_STREAM_PREMATURE_CLOSE",
]);

/** Whether a failure is worth another attempt: dropped or stalled connections, not bad input. */
export function isTransientNetworkError(error: unknown): boolean {
  let current: unknown = error;
  for (let depth = 0; current && depth < 5; depth++) {
    const code = (current as { code?: string }).code;
    if (code && TRANSIENT_CODES.has(code)) return true;
    if (current instanceof LlamaOciError && current.code === "NETWORK") return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}
