/**
 * Talks to one registry (the "remote" of go-containerregistry): pings /v2/ to learn how it authenticates, adds
 * the right Authorization to requests for the registry's own origin, refreshes a bearer token once on a 401
 * re-challenge, and follows blob redirects itself so Authorization never leaves the registry origin.
 */
import { LlamaOciError } from "../errors.js";
import { redactUrl, type Logger } from "../log.js";
import { parseScopes, parseWwwAuthenticate, preferredChallenge, type Challenge } from "./challenge.js";
import type { Credential } from "./credentials.js";
import { MANIFEST_ACCEPT } from "./media-types.js";
import { allowsPlainHttp } from "./plain-http.js";
import { loginCommand, registryError } from "./registry-errors.js";
import { basic, TokenSource } from "./token.js";
import { describeNetworkError, headerValue, type HttpHeaders, type HttpRequest, type HttpResponse, type Transport } from "./transport.js";

export const MAX_REDIRECTS = 10;

export interface RegistryClientOptions {
  /** Canonical registry name, e.g. "docker.io" or "127.0.0.1:5000". */
  registry: string;
  /** host[:port] to connect to, e.g. "registry-1.docker.io". */
  apiHost: string;
  credential: Credential;
  transport: Transport;
  logger: Logger;
  /** Extra hosts that may be reached over plain HTTP. */
  insecureRegistries?: readonly string[];
  /**
   * Use only this scheme (a mirror's URL decides it, and http:// is then allowed explicitly). Default: https,
   * then plain http where the registry is loopback or listed as insecure.
   */
  scheme?: "https" | "http";
}

export interface RegistryRequest extends HttpRequest {
  /** Token scopes this request needs, e.g. ["repository:ai/smollm2:pull"]. */
  scopes: string[];
  /** What is being fetched, for error messages. */
  what: string;
}

export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

export class RegistryClient {
  readonly registry: string;
  private readonly apiHost: string;
  private readonly credential: Credential;
  private readonly transport: Transport;
  private readonly logger: Logger;
  private readonly plainHttpAllowed: boolean;
  private readonly schemes: readonly string[];
  private readonly tokens: TokenSource;
  private origin?: string;
  private challenge?: Challenge | null;
  private pinging?: Promise<void>;

  constructor(options: RegistryClientOptions) {
    this.registry = options.registry;
    this.apiHost = options.apiHost;
    this.credential = options.credential;
    this.transport = options.transport;
    this.logger = options.logger;
    this.plainHttpAllowed = options.scheme ? options.scheme === "http" : allowsPlainHttp(options.apiHost, options.insecureRegistries ?? []);
    this.schemes = options.scheme ? [options.scheme] : this.plainHttpAllowed ? ["https", "http"] : ["https"];
    this.tokens = new TokenSource(this.transport, this.credential, this.registry, () => this.origin?.startsWith("http:") ?? false);
  }

  /** The origin in use (https://host or http://host), known after the first request. */
  get baseUrl(): string | undefined {
    return this.origin;
  }

  private ping(signal?: AbortSignal): Promise<void> {
    this.pinging ??= this.doPing(signal).catch((error) => {
      this.pinging = undefined;
      throw error;
    });
    return this.pinging;
  }

  private async doPing(signal?: AbortSignal): Promise<void> {
    let lastError: unknown;
    for (const scheme of this.schemes) {
      const origin = `${scheme}://${this.apiHost}`;
      let response: HttpResponse;
      try {
        response = await this.transport.send(`${origin}/v2/`, { signal, headersTimeoutMs: 15_000 }, "none (ping)");
      } catch (error) {
        lastError = error;
        if (signal?.aborted) throw error;
        // Only a server that does not speak TLS at all may be retried over http: a certificate that fails
        // verification is a TLS server, and plain http to it would be a silent downgrade.
        if (scheme === "https" && this.plainHttpAllowed) {
          if (!isNotTlsFailure(error)) throw error;
          this.logger.debug(`https to ${this.apiHost} failed (${describeNetworkError(error)}); trying plain http`);
        }
        continue;
      }
      await response.body.dump().catch(() => {});
      if (response.status === 200) {
        this.challenge = null;
      } else if (response.status === 401) {
        this.challenge = preferredChallenge(parseWwwAuthenticate(response.headers["www-authenticate"])) ?? null;
      } else if (response.status === 404 && scheme === "https" && this.plainHttpAllowed) {
        continue;
      } else {
        throw new LlamaOciError("REGISTRY", `${this.apiHost} does not look like an OCI registry (GET /v2/ answered ${response.status})`, {
          hint: "check the registry address in the reference",
          status: response.status,
        });
      }
      this.origin = origin;
      this.logger.debug(`registry ${this.registry}: ${origin}, auth ${this.challenge ? this.challenge.scheme : "none"}`);
      return;
    }
    throw lastError ?? new LlamaOciError("NETWORK", `cannot reach ${this.apiHost}`);
  }

  private async authorization(scopes: string[], signal?: AbortSignal): Promise<{ header?: string; scheme: string }> {
    const challenge = this.challenge;
    const credential = this.credential;
    if (!challenge) {
      if (credential.kind === "registryToken") return { header: `Bearer ${credential.registryToken}`, scheme: "bearer (registry token)" };
      return { scheme: "none" };
    }
    if (challenge.scheme === "basic") {
      switch (credential.kind) {
        case "basic":
          return { header: basic(credential.username, credential.password), scheme: "basic" };
        case "registryToken":
          return { header: `Bearer ${credential.registryToken}`, scheme: "bearer (registry token)" };
        case "identityToken":
          return { header: basic(credential.username ?? "<token>", credential.identityToken), scheme: "basic (identity token)" };
        default:
          return { scheme: "none" };
      }
    }
    if (challenge.scheme === "bearer") {
      if (credential.kind === "registryToken") return { header: `Bearer ${credential.registryToken}`, scheme: "bearer (registry token)" };
      const realm = challenge.params.realm;
      if (!realm) throw new LlamaOciError("REGISTRY", `${this.registry} sent a Bearer challenge without a realm`);
      const token = await this.tokens.token({ realm, service: challenge.params.service }, scopes, signal);
      return { header: `Bearer ${token}`, scheme: `bearer (${credential.kind === "anonymous" ? "anonymous" : credential.kind})` };
    }
    return { scheme: `unsupported ${challenge.scheme}` };
  }

  /** A request to the registry origin with auth; the response is returned as is (redirects not followed). */
  async request(path: string, init: RegistryRequest): Promise<HttpResponse> {
    await this.ping(init.signal);
    let scopes = init.scopes;
    for (let attempt = 0; ; attempt++) {
      const auth = await this.authorization(scopes, init.signal);
      const headers: HttpHeaders = { ...init.headers };
      if (auth.header) headers.authorization = auth.header;
      const response = await this.transport.send(`${this.origin}${path}`, { ...init, headers }, auth.scheme);
      if (response.status !== 401 || attempt > 0) return response;
      const challenge = preferredChallenge(parseWwwAuthenticate(response.headers["www-authenticate"]));
      if (!challenge) return response;
      await response.body.dump().catch(() => {});
      if (challenge.scheme === "bearer" && this.credential.kind !== "registryToken") {
        const realm = challenge.params.realm ?? this.challenge?.params.realm;
        const wanted = parseScopes(challenge.params.scope);
        const merged = [...wanted, ...scopes.filter((s) => !wanted.includes(s))];
        if (realm) {
          this.tokens.invalidate({ realm, service: challenge.params.service }, scopes);
          this.challenge = { scheme: "bearer", params: { ...challenge.params, realm } };
          scopes = merged;
          this.logger.debug(`401 from ${this.registry} (${challenge.params.error ?? "re-challenge"}); refreshing token once`);
          continue;
        }
      } else if (challenge.scheme === "basic" && this.challenge?.scheme !== "basic") {
        this.challenge = challenge;
        continue;
      }
      // Re-send once to get a response whose body we have not consumed, so the caller can report it.
      return this.transport.send(`${this.origin}${path}`, { ...init, headers }, auth.scheme);
    }
  }

  /**
   * GET (or HEAD) of a blob, following up to 10 redirects. Authorization goes only to the registry origin;
   * Range and the other headers go everywhere. Each call re-asks the registry, so signed CDN URLs are fresh.
   */
  async openBlob(repository: string, digest: string, init: Omit<RegistryRequest, "scopes" | "what"> & { what?: string }): Promise<HttpResponse> {
    const what = init.what ?? `blob ${digest}`;
    let response = await this.request(`/v2/${repository}/blobs/${digest}`, { ...init, scopes: [pullScope(repository)], what });
    for (let hop = 0; isRedirect(response.status); hop++) {
      const location = headerValue(response.headers, "location");
      await response.body.dump().catch(() => {});
      if (!location) throw new LlamaOciError("REGISTRY", `${this.registry} redirected ${what} without a Location`);
      if (hop >= MAX_REDIRECTS) throw new LlamaOciError("REGISTRY", `too many redirects (> ${MAX_REDIRECTS}) fetching ${what}`);
      const next = new URL(location, response.url);
      if (next.protocol !== "https:" && next.protocol !== "http:") {
        throw new LlamaOciError("REGISTRY", `${this.registry} redirected ${what} to an unsupported URL scheme ${next.protocol}`);
      }
      this.logger.debug(`redirect ${response.status} -> ${redactUrl(next)}`);
      if (this.origin && next.origin === this.origin) {
        response = await this.request(next.pathname + next.search, { ...init, scopes: [pullScope(repository)], what });
      } else {
        response = await this.transport.send(next.toString(), { ...init, headers: { ...init.headers } }, "none (other origin)");
      }
    }
    return response;
  }

  async error(response: HttpResponse, what: string): Promise<LlamaOciError> {
    const error = await registryError(response, { registry: this.registry, what });
    if (error.code === "UNAUTHORIZED" && this.credential.kind !== "anonymous") {
      // The token server accepted these credentials (a token was issued); the registry's verdict is on the token.
      const challenge = preferredChallenge(parseWwwAuthenticate(response.headers["www-authenticate"]));
      const verdict = this.credential.kind !== "registryToken" && challenge?.scheme === "bearer" ? challenge.params.error : undefined;
      if (verdict === "insufficient_scope") {
        return new LlamaOciError("DENIED", `${this.registry} denied pull access to ${what} for the credentials from ${this.credential.source}`, {
          hint: "check the repository name: it may not exist, or your account may not be allowed to pull it",
          status: response.status,
        });
      }
      if (verdict === "invalid_token") {
        return new LlamaOciError("UNAUTHORIZED", `${this.registry} did not accept the token issued for the credentials from ${this.credential.source} (${what})`, {
          hint: `the registry's token service may be misconfigured, or this machine's clock wrong; if it persists, run '${loginCommand(this.registry)}' again`,
          status: response.status,
        });
      }
      return new LlamaOciError("UNAUTHORIZED", `${this.registry} rejected the credentials from ${this.credential.source} for ${what}`, {
        hint: `check the username and password, then run '${loginCommand(this.registry)}' again`,
        status: response.status,
      });
    }
    return error;
  }

  manifestHeaders(): HttpHeaders {
    return { accept: MANIFEST_ACCEPT };
  }
}

const NOT_TLS_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "UND_ERR_SOCKET",
  "UND_ERR_CLOSED",
  "ERR_SSL_WRONG_VERSION_NUMBER",
  "ERR_SSL_PACKET_LENGTH_TOO_LONG",
  "ERR_SSL_HTTP_REQUEST",
]);

/** Whether an https attempt failed because no TLS server answered (nothing listening, or plain HTTP spoken back). */
export function isNotTlsFailure(error: unknown): boolean {
  let current: unknown = error;
  for (let depth = 0; current && depth < 5; depth++) {
    const { code, message } = current as { code?: string; message?: string };
    if (code && NOT_TLS_CODES.has(code)) return true;
    if (typeof message === "string" && /wrong version number|packet length too long|http request/i.test(message)) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}
