/**
 * Manifests from a registry: HEAD to learn what a tag points to, GET (size-capped, digest-checked) for the body,
 * and a reference resolved to its model manifest through model/resolve.ts.
 */
import { LlamaOciError } from "../../errors.js";
import { digestOf } from "../name/index.js";
import {
  MANIFEST_ACCEPT,
  MAX_MANIFEST_BYTES,
  parseManifest,
  resolveModelManifest,
  type ManifestDocument,
  type Platform,
  type ResolvedModel,
} from "../model/index.js";
import { headerValue, pullScope, readLimited, type RegistryTransport } from "../transport/index.js";

export type FetchedManifest = ManifestDocument;

/**
 * The digest a tag points to, from a HEAD (which Docker Hub does not count against pull limits); undefined when the
 * registry does not say (404, or no Docker-Content-Digest), so the caller may GET. Any other answer (429, 401, 403,
 * 5xx after retries) is an error: a HEAD that was refused must never turn into a GET that counts.
 */
export async function headManifest(
  client: RegistryTransport,
  repository: string,
  reference: string,
  signal?: AbortSignal,
): Promise<{ digest: string; mediaType?: string } | undefined> {
  const response = await client.request(`/v2/${repository}/manifests/${reference}`, {
    method: "HEAD",
    headers: { accept: MANIFEST_ACCEPT },
    scopes: [pullScope(repository)],
    what: `${repository}:${reference}`,
    signal,
  });
  if (response.status !== 200 && response.status !== 404) throw await client.error(response, `${client.registry}/${repository}:${reference}`);
  await response.body.dump().catch(() => {});
  const digest = headerValue(response.headers, "docker-content-digest");
  if (response.status !== 200 || !digest) return undefined;
  return { digest, mediaType: headerValue(response.headers, "content-type") };
}

export async function fetchManifest(
  client: RegistryTransport,
  repository: string,
  reference: string,
  what: string,
  signal?: AbortSignal,
): Promise<FetchedManifest> {
  const response = await client.request(`/v2/${repository}/manifests/${reference}`, {
    headers: { accept: MANIFEST_ACCEPT },
    scopes: [pullScope(repository)],
    what,
    signal,
  });
  if (response.status !== 200) throw await client.error(response, what);
  const body = await readLimited(response, MAX_MANIFEST_BYTES, () => tooLarge(what));
  const digest = digestOf(body, reference.startsWith("sha512:") ? "sha512" : "sha256");
  if (reference.includes(":") && reference !== digest) {
    throw new LlamaOciError("DIGEST_MISMATCH", `the manifest served for ${what} has digest ${digest}`, {
      hint: "the registry returned different content than the requested digest; nothing was cached",
    });
  }
  const contentType = headerValue(response.headers, "content-type");
  const parsed = parseManifest(body, contentType);
  return { body, digest, mediaType: parsed.mediaType, parsed };
}

function tooLarge(what: string): LlamaOciError {
  return new LlamaOciError("UNSUPPORTED_ARTIFACT", `the manifest of ${what} is larger than ${MAX_MANIFEST_BYTES} bytes`, {
    hint: "this does not look like a model artifact",
  });
}

/** The manifest `reference` (a tag or digest) names, and the model manifest in it when it is an index. */
export async function fetchModelManifest(
  client: RegistryTransport,
  repository: string,
  reference: string,
  what: string,
  signal?: AbortSignal,
  platform?: Platform,
): Promise<ResolvedModel> {
  const top = await fetchManifest(client, repository, reference, what, signal);
  return resolveModelManifest(top, (digest) => fetchManifest(client, repository, digest, `${what} (manifest ${digest})`, signal), what, platform);
}
