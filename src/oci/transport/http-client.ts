/**
 * HTTP for registries, composed once like go-containerregistry's round-trippers: undici's retry interceptor (the
 * policy of retry.ts) around undici's redirect interceptor (Authorization dropped on a cross-origin hop) around a
 * trace of every hop for --verbose (never a secret) around the route to a proxy or straight to the origin
 * (proxy.ts) with per-registry TLS (tls.ts). A keep-alive pool per origin; NODE_EXTRA_CA_CERTS is honoured.
 */
import { Readable } from "node:stream";
import type { Dispatcher } from "undici";
import AgentClass from "undici/lib/dispatcher/agent.js";
import PoolClass from "undici/lib/dispatcher/pool.js";
import ProxyAgentClass from "undici/lib/dispatcher/proxy-agent.js";
import dispatchRequest from "undici/lib/api/api-request.js";
import connectApi from "undici/lib/api/api-connect.js";
import DispatcherClass from "undici/lib/dispatcher/dispatcher.js";
import createRedirectInterceptor from "undici/lib/interceptor/redirect.js";
import createRetryInterceptor from "undici/lib/interceptor/retry.js";
import { abortError, LlamaOciError } from "../../errors.js";
import { redactUrl, type Logger } from "../../log.js";
import { describeNetworkError, isTransientNetworkError, networkError } from "./network-errors.js";
import { bypassesProxy, proxySettings } from "./proxy.js";
import { backoffMs, isRetryableStatus, retryPolicy, type RetryEvent, type RetryPolicy } from "./retry.js";
import { registryTls } from "./tls.js";

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
  /** Follow redirects (default: for GET and HEAD). Authorization never crosses to another origin. */
  followRedirects?: boolean;
  /**
   * Retry 408, 429, 5xx and dropped connections with the client's policy (default: for GET, HEAD, PUT and DELETE).
   * "status" retries only answered requests, not refused connections (a probe with a fallback of its own).
   */
  retry?: boolean | "status";
  /** Told before each retry. */
  onRetry?: (event: RetryEvent) => void;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData["body"];
  /** The URL asked for (a followed redirect's target is in the trace, not here). */
  url: string;
}

export interface HttpClientOptions {
  logger: Logger;
  env?: NodeJS.ProcessEnv;
  userAgent?: string;
  connections?: number;
  /** The retry policy of every request (attempts, backoff, longest Retry-After waited for). */
  retry?: Partial<RetryPolicy>;
}

export const USER_AGENT = "llama-oci/0.1.0";
const RETRYABLE_STATUSES = [408, 429, ...Array.from({ length: 100 }, (_, i) => 500 + i)].filter(isRetryableStatus);
export const MAX_REDIRECTS = 10;

/** What the interceptors read from a request's dispatch options, beside undici's own. */
interface DispatchExtras {
  origin: string;
  path: string;
  method: string;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  traceLabel?: string;
  retryMode?: "all" | "status" | "none";
  onRetry?: (event: RetryEvent) => void;
}

type DispatchFn = Dispatcher["dispatch"];
type Interceptor = (dispatch: DispatchFn) => DispatchFn;
type Handler = Dispatcher.DispatchHandler;

export class HttpClient {
  readonly logger: Logger;
  readonly policy: RetryPolicy;
  private readonly dispatcher: Dispatcher;
  private readonly agents: Dispatcher[];
  private readonly proxyAgents: Map<string, Dispatcher>;
  private readonly userAgent: string;

  constructor(options: HttpClientOptions) {
    const env = options.env ?? process.env;
    this.logger = options.logger;
    this.userAgent = options.userAgent ?? USER_AGENT;
    this.policy = retryPolicy(options.retry);
    const agentOptions = { connections: options.connections ?? 8, keepAliveTimeout: 10_000, connect: { timeout: 15_000 } };
    const logger = this.logger;
    const direct = new AgentClass({
      ...agentOptions,
      factory: (origin: string | URL, poolOptions: object) => {
        const url = new URL(origin);
        const tls = url.protocol === "https:" ? registryTls(url.host, env) : undefined;
        if (tls) logger.debug(`TLS for ${url.host} from ${tls.sources.join(", ")}${tls.cert ? " (client certificate)" : ""}`);
        const connect = { ...agentOptions.connect, ...(tls ? { ca: tls.ca, cert: tls.cert, key: tls.key } : {}) };
        return new PoolClass(origin, { ...poolOptions, connect });
      },
    });
    const proxies = proxySettings(env);
    const proxyAgents = new Map<string, InstanceType<typeof ProxyAgentClass>>();
    // One tunnel agent per proxy, and per registry whose certs.d holds TLS settings (the tunnel's TLS is per agent).
    const proxyFor = (uri: string, url: URL): InstanceType<typeof ProxyAgentClass> => {
      const tls = url.protocol === "https:" ? registryTls(url.host, env) : undefined;
      const key = tls ? `${uri} ${url.host}` : uri;
      let agent = proxyAgents.get(key);
      if (!agent) {
        if (tls) logger.debug(`TLS for ${url.host} from ${tls.sources.join(", ")}${tls.cert ? " (client certificate)" : ""}, through the proxy`);
        agent = new ProxyAgentClass({ ...agentOptions, uri, ...(tls ? { requestTls: { ca: tls.ca, cert: tls.cert, key: tls.key } } : {}) });
        proxyAgents.set(key, agent);
      }
      return agent;
    };
    this.agents = [direct];
    this.proxyAgents = proxyAgents;

    const route: Interceptor = () => (opts, handler) => {
      const url = new URL(opts.origin as string);
      const uri = bypassesProxy(url, proxies.noProxy) ? undefined : url.protocol === "https:" ? proxies.httpsProxy : proxies.httpProxy;
      return (uri === undefined ? direct : proxyFor(uri, url)).dispatch(opts, handler);
    };
    this.dispatcher = direct.compose(
      route,
      traceInterceptor(logger),
      createRedirectInterceptor({ maxRedirections: 0 }),
      // throwOnError: an answer whose status is retryable comes back, once retries are over, as an error carrying the
      // status and headers (send() turns it back into a response); any other answer passes straight through.
      createRetryInterceptor({ throwOnError: true, statusCodes: RETRYABLE_STATUSES, retry: this.retryDecision() }),
    );
  }

  async send(url: string, init: HttpRequest = {}, authScheme = "none"): Promise<HttpResponse> {
    const method = init.method ?? "GET";
    if (init.signal?.aborted) throw abortError(init.signal);
    const idempotent = method === "GET" || method === "HEAD" || method === "PUT" || method === "DELETE";
    const retry = init.retry ?? idempotent;
    let response: Dispatcher.ResponseData;
    try {
      const target = new URL(url);
      const options = {
        origin: target.origin,
        path: `${target.pathname}${target.search}`,
        method,
        headers: { "user-agent": this.userAgent, ...init.headers },
        body: init.body,
        signal: init.signal,
        headersTimeout: init.headersTimeoutMs ?? 30_000,
        bodyTimeout: init.bodyTimeoutMs ?? 30_000,
        maxRedirections: (init.followRedirects ?? (method === "GET" || method === "HEAD")) ? MAX_REDIRECTS : 0,
        traceLabel: authScheme,
        retryMode: retry === true ? "all" : retry === "status" ? "status" : "none",
        onRetry: init.onRetry,
      } satisfies Partial<DispatchExtras> & Record<string, unknown>;
      response = await dispatchRequest.call(this.dispatcher, options);
    } catch (error) {
      if (init.signal?.aborted) throw abortError(init.signal);
      if (error instanceof LlamaOciError) throw error;
      const answered = retriedAnswer(error);
      if (answered) return { ...answered, url };
      throw networkError(url, redirectFailure(error) ?? error);
    }
    if (init.signal?.aborted) {
      response.body.destroy();
      throw abortError(init.signal);
    }
    return { status: response.statusCode, headers: response.headers, body: response.body, url };
  }

  async close(): Promise<void> {
    await Promise.all([...this.agents, ...this.proxyAgents.values()].map((agent) => agent.close()));
  }

  /** undici's retry callback, deciding with retry.ts's policy; the answered response passes through when it stops. */
  private retryDecision() {
    const policy = this.policy;
    const logger = this.logger;
    return (error: Error & { statusCode?: number; headers?: Record<string, string | string[] | undefined> }, state: { state: { counter: number }; opts: object }, done: (error?: Error | null) => void) => {
      const opts = state.opts as DispatchExtras;
      const attempts = state.state.counter;
      const mode = opts.retryMode ?? "none";
      const status = error.statusCode;
      const retryable = status !== undefined ? isRetryableStatus(status) : mode === "all" && isTransientNetworkError(error);
      if (mode === "none" || !retryable || attempts >= policy.attempts || opts.signal?.aborted) return done(error);
      const retryAfter = status !== undefined ? retryAfterFromHeaders(error.headers) : undefined;
      if (retryAfter !== undefined && retryAfter > policy.maxRetryAfterMs) return done(error);
      const delayMs = retryAfter ?? backoffMs(policy, attempts);
      const reason = status !== undefined ? `HTTP ${status}` : describeNetworkError(error);
      logger.debug(`retrying ${opts.method} ${redactUrl(`${opts.origin}${opts.path}`)} in ${delayMs} ms (attempt ${attempts + 1}/${policy.attempts}): ${reason}`);
      opts.onRetry?.({ attempt: attempts + 1, maxAttempts: policy.attempts, delayMs, reason });
      const signal = opts.signal;
      const onAbort = () => {
        clearTimeout(timer);
        done(abortError(signal));
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        done(null);
      }, delayMs);
      signal?.addEventListener("abort", onAbort, { once: true });
    };
  }
}

/** The one header value of a response header that may repeat. */
export function headerValue(headers: HttpResponse["headers"], name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}

/**
 * A small body (token, manifest, config, error) read whole, refused past `maxBytes` (announced or received) with
 * `tooLarge()`'s error: a registry cannot make the client buffer without bound.
 */
export async function readLimited(response: HttpResponse, maxBytes: number, tooLarge: () => Error): Promise<Buffer> {
  const declared = Number(headerValue(response.headers, "content-length"));
  if (declared > maxBytes) {
    response.body.destroy();
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of response.body as AsyncIterable<Buffer>) {
    length += chunk.length;
    if (length > maxBytes) {
      response.body.destroy();
      throw tooLarge();
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** A response's Retry-After in milliseconds (seconds or an HTTP date), or undefined. */
export function retryAfterMs(response: HttpResponse, now = Date.now()): number | undefined {
  return retryAfterFromHeaders(response.headers, now);
}

export function retryAfterFromHeaders(headers: HttpResponse["headers"] | undefined, now = Date.now()): number | undefined {
  const value = headers ? headerValue(headers, "retry-after") : undefined;
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/**
 * The last answer of a request whose retries ran out (undici's RequestRetryError has its status and headers), as a
 * response with an empty body, so callers map it like any other answer.
 */
function retriedAnswer(error: unknown): Omit<HttpResponse, "url"> | undefined {
  const { code, statusCode, headers } = error as { code?: string; statusCode?: number; headers?: HttpResponse["headers"] };
  if (code !== "UND_ERR_REQ_RETRY" || typeof statusCode !== "number") return undefined;
  const body = Object.assign(Readable.from([]), { dump: () => Promise.resolve() });
  return { status: statusCode, headers: headers ?? {}, body: body as unknown as HttpResponse["body"] };
}

/** undici's redirect handler failing on a Location it cannot follow, as a clear error. */
function redirectFailure(error: unknown): LlamaOciError | undefined {
  const message = (error as { message?: string }).message ?? "";
  if (/max redirects/i.test(message)) return new LlamaOciError("REGISTRY", `too many redirects (> ${MAX_REDIRECTS})`);
  return undefined;
}

/** Logs each hop (the first request and every redirect it follows) as `METHOD url -> status (auth: ..., ms)`. */
function traceInterceptor(logger: Logger): Interceptor {
  return (dispatch) => (opts, handler) => {
    if (!logger.debugEnabled) return dispatch(opts, handler);
    const extras = opts as unknown as DispatchExtras;
    const started = Date.now();
    const url = redactUrl(`${extras.origin}${extras.path}`);
    const hasAuth = Object.keys(extras.headers ?? {}).some((name) => name.toLowerCase() === "authorization");
    const label = hasAuth || (extras.traceLabel ?? "none").startsWith("none") ? (extras.traceLabel ?? "none") : "none (other origin)";
    const range = extras.headers?.range ?? extras.headers?.Range;
    const wrapped: Handler = {
      onRequestStart: (controller, context) => handler.onRequestStart?.(controller, context),
      onRequestUpgrade: (controller, statusCode, headers, socket) => handler.onRequestUpgrade?.(controller, statusCode, headers, socket),
      onResponseStart: (controller, statusCode, headers, statusMessage) => {
        const location = statusCode >= 300 && statusCode < 400 ? headers.location : undefined;
        const hop = typeof location === "string" ? `, redirect to ${redactUrl(new URL(location, `${extras.origin}${extras.path}`))}` : "";
        logger.debug(`${extras.method} ${url} -> ${statusCode} (auth: ${label}${range ? `, ${range}` : ""}, ${Date.now() - started} ms${hop})`);
        return handler.onResponseStart?.(controller, statusCode, headers, statusMessage);
      },
      onResponseData: (controller, chunk) => handler.onResponseData?.(controller, chunk),
      onResponseEnd: (controller, trailers) => handler.onResponseEnd?.(controller, trailers),
      onResponseError: (controller, error) => {
        logger.debug(`${extras.method} ${url} -> ${describeNetworkError(error)} (auth: ${label})`);
        return handler.onResponseError?.(controller, error);
      },
    };
    return dispatch(opts, wrapped);
  };
}
