/**
 * GET /v2/ to learn where a registry answers and how it authenticates: HTTPS first, then plain HTTP where it is
 * allowed and no TLS server answered (a certificate that fails verification is never downgraded).
 */
import { LlamaOciError } from "../../errors.js";
import type { Logger } from "../../log.js";
import { parseWwwAuthenticate, preferredChallenge, type Challenge } from "./challenge.js";
import type { HttpClient, HttpResponse } from "./http-client.js";
import { describeNetworkError, isNotTlsFailure } from "./network-errors.js";

export interface PingOptions {
  http: HttpClient;
  /** host[:port] to ping. */
  apiHost: string;
  /** In order; "http" only where plain HTTP is allowed. */
  schemes: readonly ("https" | "http")[];
  logger: Logger;
  signal?: AbortSignal;
  /** The registry answers 404 to /v2/ and serves its API all the same (the Ollama library's does). */
  pingless?: boolean;
}

export interface PingResult {
  /** https://host or http://host: where the registry answered. */
  origin: string;
  /** How it wants to be authenticated; null when /v2/ answered 200. */
  challenge: Challenge | null;
}

export async function ping(options: PingOptions): Promise<PingResult> {
  const { http, apiHost, schemes, logger, signal } = options;
  const fallback = schemes.includes("http");
  let lastError: unknown;
  for (const scheme of schemes) {
    const origin = `${scheme}://${apiHost}`;
    let response: HttpResponse;
    try {
      // With a plain-HTTP fallback, a refused https connection goes to http at once; answered errors are retried.
      const retry = scheme === "https" && fallback ? "status" : true;
      response = await http.send(`${origin}/v2/`, { signal, headersTimeoutMs: 15_000, retry }, "none (ping)");
    } catch (error) {
      lastError = error;
      if (signal?.aborted) throw error;
      if (scheme === "https" && fallback) {
        if (!isNotTlsFailure(error)) throw error;
        logger.debug(`https to ${apiHost} failed (${describeNetworkError(error)}); trying plain http`);
      }
      continue;
    }
    await response.body.dump().catch(() => {});
    if (response.status === 200) return { origin, challenge: null };
    if (response.status === 401) {
      return { origin, challenge: preferredChallenge(parseWwwAuthenticate(response.headers["www-authenticate"])) ?? null };
    }
    if (response.status === 404 && options.pingless) return { origin, challenge: null };
    if (response.status === 404 && scheme === "https" && fallback) continue;
    if (response.status === 429) {
      throw new LlamaOciError("RATE_LIMITED", `${apiHost} answered 429 (too many requests) to GET /v2/`, {
        hint: "wait before trying again, or log in (docker login) for a higher limit",
        status: 429,
      });
    }
    if (response.status >= 500 || response.status === 408) {
      throw new LlamaOciError("REGISTRY", `${apiHost} answered ${response.status} (try again later)`, {
        hint: "the registry has a problem; llama-oci already retried with backoff",
        status: response.status,
      });
    }
    throw new LlamaOciError("REGISTRY", `${apiHost} does not look like an OCI registry (GET /v2/ answered ${response.status})`, {
      hint: "check the registry address in the reference",
      status: response.status,
    });
  }
  throw lastError instanceof Error ? lastError : new LlamaOciError("NETWORK", `cannot reach ${apiHost}`);
}
