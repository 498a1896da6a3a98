/**
 * The authenticated transport to one registry: pings /v2/ to learn how it authenticates (ping.ts), adds the right
 * Authorization to requests for the registry's own origin, and refreshes a bearer token once on a 401
 * re-challenge. Requests to any other origin go through the plain HttpClient, without Authorization.
 */
import { LlamaOciError } from "../../errors.js";
import type { Logger } from "../../log.js";
import type { Credential } from "../authn/index.js";
import { OLLAMA_REGISTRY } from "../name/index.js";
import { parseWwwAuthenticate, preferredChallenge, type Challenge } from "./challenge.js";
import type { HttpClient, HttpHeaders, HttpRequest, HttpResponse } from "./http-client.js";
import { allowsPlainHttp } from "./insecure.js";
import { ping } from "./ping.js";
import { loginCommand, registryError } from "./registry-errors.js";
import { mergeScopes, parseScopes } from "./scope.js";
import { basicAuthorization, TokenSource } from "./token.js";

export interface RegistryTransportOptions {
  /** Canonical registry name, e.g. "docker.io" or "127.0.0.1:5000". */
  registry: string;
  /** host[:port] to connect to, e.g. "registry-1.docker.io". */
  apiHost: string;
  credential: Credential;
  http: HttpClient;
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

export class RegistryTransport {
  readonly registry: string;
  readonly credential: Credential;
  /** The plain client, for origins other than the registry's (CDN redirects, upload locations). */
  readonly http: HttpClient;
  private readonly apiHost: string;
  private readonly logger: Logger;
  private readonly plainHttpAllowed: boolean;
  private readonly schemes: readonly ("https" | "http")[];
  private readonly tokens: TokenSource;
  private origin?: string;
  private challenge?: Challenge | null;
  private pinging?: Promise<void>;

  constructor(options: RegistryTransportOptions) {
    this.registry = options.registry;
    this.apiHost = options.apiHost;
    this.credential = options.credential;
    this.http = options.http;
    this.logger = options.logger;
    this.plainHttpAllowed = options.scheme ? options.scheme === "http" : allowsPlainHttp(options.apiHost, options.insecureRegistries ?? []);
    this.schemes = options.scheme ? [options.scheme] : this.plainHttpAllowed ? ["https", "http"] : ["https"];
    this.tokens = new TokenSource(this.http, this.credential, this.registry, () => this.origin?.startsWith("http:") ?? false);
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
    const pingless = this.registry === OLLAMA_REGISTRY;
    const { origin, challenge } = await ping({ http: this.http, apiHost: this.apiHost, schemes: this.schemes, logger: this.logger, signal, pingless });
    this.origin = origin;
    this.challenge = challenge;
    this.logger.debug(`registry ${this.registry}: ${origin}, auth ${challenge ? challenge.scheme : "none"}`);
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
          return { header: basicAuthorization(credential.username, credential.password), scheme: "basic" };
        case "registryToken":
          return { header: `Bearer ${credential.registryToken}`, scheme: "bearer (registry token)" };
        case "identityToken":
          return { header: basicAuthorization(credential.username ?? "<token>", credential.identityToken), scheme: "basic (identity token)" };
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
      const response = await this.http.send(`${this.origin ?? ""}${path}`, { ...init, headers }, auth.scheme);
      if (response.status !== 401 || attempt > 0) return response;
      const challenge = preferredChallenge(parseWwwAuthenticate(response.headers["www-authenticate"]));
      if (!challenge) return response;
      await response.body.dump().catch(() => {});
      if (challenge.scheme === "bearer" && this.credential.kind !== "registryToken") {
        const realm = challenge.params.realm ?? this.challenge?.params.realm;
        const merged = mergeScopes(parseScopes(challenge.params.scope), scopes);
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
      return this.http.send(`${this.origin ?? ""}${path}`, { ...init, headers }, auth.scheme);
    }
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
}
