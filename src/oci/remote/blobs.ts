/**
 * Reading blobs from a registry: GET or HEAD following redirects (Authorization only ever to the registry's own
 * origin, so a CDN never sees it), and small blobs read whole, size-capped and checked against their digest.
 */
import { LlamaOciError } from "../../errors.js";
import { redactUrl } from "../../log.js";
import { digestOf, parseDigest } from "../name/index.js";
import { headerValue, pullScope, type HttpResponse, type RegistryRequest, type RegistryTransport } from "../transport/index.js";

export const MAX_REDIRECTS = 10;

export type BlobRequest = Omit<RegistryRequest, "scopes" | "what"> & { what?: string };

/**
 * GET (or HEAD) of a blob, following up to 10 redirects. Authorization goes only to the registry origin;
 * Range and the other headers go everywhere. Each call re-asks the registry, so signed CDN URLs are fresh.
 */
export async function openBlob(registry: RegistryTransport, repository: string, digest: string, init: BlobRequest): Promise<HttpResponse> {
  const what = init.what ?? `blob ${digest}`;
  const scopes = [pullScope(repository)];
  let response = await registry.request(`/v2/${repository}/blobs/${digest}`, { ...init, scopes, what });
  for (let hop = 0; isRedirect(response.status); hop++) {
    const location = headerValue(response.headers, "location");
    await response.body.dump().catch(() => {});
    if (!location) throw new LlamaOciError("REGISTRY", `${registry.registry} redirected ${what} without a Location`);
    if (hop >= MAX_REDIRECTS) throw new LlamaOciError("REGISTRY", `too many redirects (> ${MAX_REDIRECTS}) fetching ${what}`);
    const next = new URL(location, response.url);
    if (next.protocol !== "https:" && next.protocol !== "http:") {
      throw new LlamaOciError("REGISTRY", `${registry.registry} redirected ${what} to an unsupported URL scheme ${next.protocol}`);
    }
    registry.http.logger.debug(`redirect ${response.status} -> ${redactUrl(next)}`);
    if (registry.baseUrl && next.origin === registry.baseUrl) {
      response = await registry.request(next.pathname + next.search, { ...init, scopes, what });
    } else {
      response = await registry.http.send(next.toString(), { ...init, headers: { ...init.headers } }, "none (other origin)");
    }
  }
  return response;
}

/** A blob read whole into memory (a config), refused above `maxBytes` and checked against its size and digest. */
export async function fetchBlobBytes(
  registry: RegistryTransport,
  repository: string,
  blob: { digest: string; size: number },
  options: { what: string; maxBytes: number; signal?: AbortSignal },
): Promise<Buffer> {
  const { what } = options;
  if (blob.size > options.maxBytes) {
    throw new LlamaOciError("UNSUPPORTED_ARTIFACT", `${what} is ${blob.size} bytes, more than it can be (${options.maxBytes})`);
  }
  const response = await openBlob(registry, repository, blob.digest, { signal: options.signal, what });
  if (response.status !== 200) throw await registry.error(response, what);
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of response.body as AsyncIterable<Buffer>) {
      length += chunk.length;
      if (length > blob.size) break;
      chunks.push(chunk);
    }
  } finally {
    response.body.destroy();
  }
  const body = Buffer.concat(chunks);
  if (length !== blob.size || digestOf(body, parseDigest(blob.digest).algorithm) !== blob.digest) {
    throw new LlamaOciError("DIGEST_MISMATCH", `${registry.registry} served ${what} with other content (${length} bytes)`, {
      hint: "the registry or a proxy in between returned the wrong data; try again",
    });
  }
  return body;
}

/** The first byte offset of a `Content-Range: bytes a-b/n` value. */
export function contentRangeStart(value: string | undefined): number | undefined {
  const match = /^bytes\s+(\d+)-(\d+)\/(\d+|\*)$/i.exec(value?.trim() ?? "");
  return match ? Number(match[1]) : undefined;
}

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}
