/**
 * Reading blobs from a registry: GET or HEAD following redirects (Authorization only ever to the registry's own
 * origin, so a CDN never sees it), and small blobs read whole, size-capped and checked against their digest.
 */
import { LlamaOciError } from "../../errors.js";
import { digestOf, parseDigest } from "../name/index.js";
import { pullScope, readLimited, type HttpResponse, type RegistryRequest, type RegistryTransport } from "../transport/index.js";

export type BlobRequest = Omit<RegistryRequest, "scopes" | "what"> & { what?: string };

/**
 * GET (or HEAD) of a blob. Redirects (to a CDN, signed URLs) are followed by the HTTP client, which sends
 * Authorization only to the registry's own origin; Range and the other headers go everywhere. Each call re-asks the
 * registry, so signed CDN URLs are fresh.
 */
export async function openBlob(registry: RegistryTransport, repository: string, digest: string, init: BlobRequest): Promise<HttpResponse> {
  const what = init.what ?? `blob ${digest}`;
  return registry.request(`/v2/${repository}/blobs/${digest}`, { ...init, scopes: [pullScope(repository)], what });
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
  const mismatch = (length: string) =>
    new LlamaOciError("DIGEST_MISMATCH", `${registry.registry} served ${what} with other content (${length} bytes)`, {
      hint: "the registry or a proxy in between returned the wrong data; try again",
    });
  const body = await readLimited(response, blob.size, () => mismatch(`more than ${blob.size}`));
  if (body.length !== blob.size || digestOf(body, parseDigest(blob.digest).algorithm) !== blob.digest) {
    throw new LlamaOciError("DIGEST_MISMATCH", `${registry.registry} served ${what} with other content (${body.length} bytes)`, {
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

