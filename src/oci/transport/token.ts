/**
 * Bearer tokens from a registry's token server (distribution token spec): anonymous GET, GET with Basic
 * credentials, or the OAuth2 refresh-token POST for identity tokens (falling back to GET when the server
 * answers 404). Tokens are cached per realm, service, scope set and credential until shortly before expiry.
 */
import { LlamaOciError } from "../../errors.js";
import type { Credential } from "../authn/index.js";
import { readLimited, type HttpClient, type HttpResponse } from "./http-client.js";
import { loginCommand, readErrorBody } from "./registry-errors.js";

export interface BearerChallenge {
  realm: string;
  service?: string;
}

interface CachedToken {
  value: string;
  expiresAt: number;
}

const CLIENT_ID = "llama-oci";
/** Real token responses are a few KiB (a JWT or two); more is refused rather than buffered. */
export const MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024;
/** Answers to the OAuth2 POST after which the token is asked for with GET, as containerd and ggcr do. */
const POST_FALLBACK_STATUSES: ReadonlySet<number> = new Set([400, 401, 404, 405]);
const EXPIRY_SKEW_MS = 30_000;

export class TokenSource {
  private readonly cache = new Map<string, CachedToken>();
  private refreshToken?: string;

  constructor(
    private readonly http: HttpClient,
    private readonly credential: Credential,
    /** Registry name, for messages. */
    private readonly registry: string,
    /** Whether the registry itself is reached over plain HTTP (then an http realm is acceptable). */
    private readonly plainHttp: () => boolean,
  ) {}

  invalidate(challenge: BearerChallenge, scopes: string[]): void {
    this.cache.delete(this.key(challenge, scopes));
  }

  async token(challenge: BearerChallenge, scopes: string[], signal?: AbortSignal): Promise<string> {
    const key = this.key(challenge, scopes);
    const cached = this.cache.get(key);
    if (cached && cached.expiresAt > Date.now()) return cached.value;
    const fresh = await this.fetchToken(challenge, scopes, signal);
    this.cache.set(key, fresh);
    return fresh.value;
  }

  private key(challenge: BearerChallenge, scopes: string[]): string {
    return JSON.stringify([challenge.realm, challenge.service ?? "", [...scopes].sort()]);
  }

  private realmUrl(challenge: BearerChallenge): URL {
    let url: URL;
    try {
      url = new URL(challenge.realm);
    } catch {
      throw new LlamaOciError("REGISTRY", `${this.registry} sent an invalid token realm`, {
        hint: "the registry's auth configuration is broken; contact its operator",
      });
    }
    if (url.protocol !== "https:" && !(url.protocol === "http:" && this.plainHttp())) {
      throw new LlamaOciError("REGISTRY", `${this.registry} asks for tokens from an insecure realm (${url.origin})`, {
        hint: "a registry served over HTTPS must use an HTTPS token server",
      });
    }
    return url;
  }

  private async fetchToken(challenge: BearerChallenge, scopes: string[], signal?: AbortSignal): Promise<CachedToken> {
    const realm = this.realmUrl(challenge);
    const credential = this.credential;
    if (credential.kind === "identityToken") {
      const posted = await this.postOAuth(realm, challenge, scopes, credential.identityToken, signal);
      if (posted) return posted;
      return this.getToken(realm, challenge, scopes, basicAuthorization(credential.username ?? "<token>", credential.identityToken), signal);
    }
    const auth = credential.kind === "basic" ? basicAuthorization(credential.username, credential.password) : undefined;
    return this.getToken(realm, challenge, scopes, auth, signal);
  }

  private async getToken(
    realm: URL,
    challenge: BearerChallenge,
    scopes: string[],
    authorization: string | undefined,
    signal?: AbortSignal,
  ): Promise<CachedToken> {
    const url = new URL(realm);
    if (challenge.service) url.searchParams.set("service", challenge.service);
    for (const scope of scopes) url.searchParams.append("scope", scope);
    if (this.credential.kind === "basic") url.searchParams.set("account", this.credential.username);
    const response = await this.http.send(
      url.toString(),
      { headers: authorization ? { authorization } : {}, signal },
      authorization ? "basic (token request)" : "anonymous (token request)",
    );
    return this.readTokenResponse(response, realm);
  }

  /** Returns undefined when the server has no usable OAuth2 endpoint (400, 401, 404, 405), so the caller falls back to GET. */
  private async postOAuth(
    realm: URL,
    challenge: BearerChallenge,
    scopes: string[],
    identityToken: string,
    signal?: AbortSignal,
  ): Promise<CachedToken | undefined> {
    const form = new URLSearchParams({
      grant_type: "refresh_token",
      refresh_token: this.refreshToken ?? identityToken,
      client_id: CLIENT_ID,
    });
    if (challenge.service) form.set("service", challenge.service);
    if (scopes.length) form.set("scope", scopes.join(" "));
    const response = await this.http.send(
      realm.toString(),
      {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: form.toString(),
        signal,
        // Form posts are safe to send again and to follow (307/308 keep the method, as Go clients do).
        followRedirects: true,
        retry: true,
      },
      "identity token (oauth2)",
    );
    if (POST_FALLBACK_STATUSES.has(response.status)) {
      await response.body.dump().catch(() => {});
      return undefined;
    }
    return this.readTokenResponse(response, realm);
  }

  private async readTokenResponse(response: HttpResponse, realm: URL): Promise<CachedToken> {
    if (response.status === 401 || response.status === 403) {
      const { entries } = await readErrorBody(response);
      const who = this.credential.kind === "anonymous" ? "anonymously" : `with the credentials from ${describeSource(this.credential)}`;
      const detail = entries.map((e) => e.message).filter(Boolean).join("; ");
      throw new LlamaOciError(
        "UNAUTHORIZED",
        `${this.registry}: authentication at ${realm.host} failed ${who}${detail ? ` (${detail})` : ""}`,
        {
          hint:
            this.credential.kind === "anonymous"
              ? `log in with '${loginCommand(this.registry)}'`
              : `check the username and password, then run '${loginCommand(this.registry)}' again`,
          status: response.status,
        },
      );
    }
    if (response.status !== 200) {
      const { text } = await readErrorBody(response);
      throw new LlamaOciError(
        "REGISTRY",
        `token server ${realm.host} answered HTTP ${response.status}${text ? `: ${text.trim().split("\n")[0]?.slice(0, 200) ?? ""}` : ""}`,
        { hint: "try again later; if it persists the registry's auth service is down", status: response.status },
      );
    }
    let parsed: { token?: string; access_token?: string; expires_in?: number; issued_at?: string; refresh_token?: string };
    const body = await readLimited(
      response,
      MAX_TOKEN_RESPONSE_BYTES,
      () => new LlamaOciError("REGISTRY", `token server ${realm.host} sent a response larger than ${MAX_TOKEN_RESPONSE_BYTES} bytes`),
    );
    try {
      parsed = JSON.parse(body.toString("utf8")) as typeof parsed;
    } catch {
      throw new LlamaOciError("REGISTRY", `token server ${realm.host} sent a response that is not JSON`);
    }
    if (!parsed || typeof parsed !== "object") throw new LlamaOciError("REGISTRY", `token server ${realm.host} sent a response that is not a JSON object`);
    const value = typeof parsed.access_token === "string" && parsed.access_token !== "" ? parsed.access_token : parsed.token;
    if (typeof value !== "string" || value === "") throw new LlamaOciError("REGISTRY", `token server ${realm.host} sent no token`);
    if (parsed.refresh_token) this.refreshToken = parsed.refresh_token;
    const issued = parsed.issued_at ? Date.parse(parsed.issued_at) : NaN;
    const start = Number.isNaN(issued) ? Date.now() : Math.min(issued, Date.now());
    const lifetime = Math.max(Number(parsed.expires_in) || 60, 60) * 1000;
    return { value, expiresAt: start + lifetime - EXPIRY_SKEW_MS };
  }
}

export function basicAuthorization(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, "utf8").toString("base64")}`;
}

function describeSource(credential: Credential): string {
  return "source" in credential ? credential.source : "the API";
}
