/**
 * The distribution-spec blob upload protocol for one repository: HEAD to find a blob the registry already has, a
 * cross-repository mount (POST ?mount=&from=), and uploads: one PUT for a small blob, or PATCH requests of
 * chunkSize bytes (Content-Range) then a closing PUT ?digest= for a large one, reading the file one chunk at a
 * time. Every request after the first goes to the Location the registry answered last. These requests are not
 * retried one by one: push.ts retries a blob's whole upload (from its HEAD) with the same policy.
 */
import { open, type FileHandle } from "node:fs/promises";
import { LlamaOciError } from "../../errors.js";
import type { Logger } from "../../log.js";
import {
  headerValue,
  loginCommand,
  parseScopes,
  parseWwwAuthenticate,
  preferredChallenge,
  pullScope,
  pushScope,
  type HttpRequest,
  type HttpResponse,
  type RegistryTransport,
} from "../transport/index.js";

export interface UploadTarget {
  /** Upload Locations on another origin go through client.http, without Authorization. */
  client: RegistryTransport;
  repository: string;
  logger: Logger;
  signal?: AbortSignal;
}

export interface BlobUpload {
  digest: string;
  size: number;
  /** The file holding the blob's bytes. */
  path: string;
  /** Blobs larger than this go up in PATCH requests of this many bytes; smaller ones in one PUT. */
  chunkSize: number;
  /** An upload session the registry already opened (a mount it answered with 202). */
  location?: string;
  onProgress?: (uploaded: number) => void;
}

const OCTET_STREAM = "application/octet-stream";

/** Whether the repository already holds the blob. */
export async function blobExists(target: UploadTarget, digest: string): Promise<boolean> {
  const what = `blob ${digest}`;
  const response = await target.client.request(`/v2/${target.repository}/blobs/${digest}`, {
    method: "HEAD",
    scopes: [pushScope(target.repository)],
    what,
    signal: target.signal,
    retry: false,
    // A CDN's signed URL may refuse HEAD; the redirect itself says the registry has the blob.
    followRedirects: false,
  });
  await response.body.dump().catch(() => {});
  // A registry that serves blobs from a CDN answers HEAD with a redirect: the blob is there.
  if (response.status === 200 || (response.status >= 300 && response.status < 400)) return true;
  if (response.status === 404) return false;
  throw await pushError(target, response, what);
}

export type MountResult = { mounted: true } | { mounted: false; location?: string };

/**
 * Asks the registry to link a blob from another repository of its own. 201: done, no bytes move. 202: the
 * registry would not (or could not) mount and opened an ordinary upload instead, returned as its location.
 */
export async function mountBlob(target: UploadTarget, digest: string, from: string): Promise<MountResult> {
  const query = new URLSearchParams({ mount: digest, from });
  const response = await target.client.request(`/v2/${target.repository}/blobs/uploads/?${query}`, {
    method: "POST",
    headers: { "content-length": "0" },
    scopes: [pushScope(target.repository), pullScope(from)],
    what: `mount of blob ${digest} from ${from}`,
    signal: target.signal,
    retry: false,
  });
  const location = headerValue(response.headers, "location");
  await response.body.dump().catch(() => {});
  if (response.status === 201) return { mounted: true };
  if (response.status === 202 && location) return { mounted: false, location: new URL(location, response.url).toString() };
  target.logger.debug(`mount of ${digest} from ${from} answered ${response.status}; uploading instead`);
  return { mounted: false };
}

/** Uploads a blob's bytes from its file; resolves once the registry has committed it under its digest. */
export async function uploadBlob(target: UploadTarget, upload: BlobUpload): Promise<void> {
  const what = `upload of blob ${upload.digest}`;
  const opened = upload.location ?? (await startUpload(target, what));
  const file = await open(upload.path, "r");
  try {
    const whole = upload.size <= upload.chunkSize;
    const location = whole ? opened : await patchChunks(target, upload, file, opened, what);
    const body = whole ? await readChunk(file, 0, upload.size) : Buffer.alloc(0);
    const url = new URL(location);
    url.searchParams.set("digest", upload.digest);
    const response = await send(target, url.toString(), { method: "PUT", headers: { "content-type": OCTET_STREAM }, body }, what);
    if (response.status !== 201) throw await pushError(target, response, what);
    await response.body.dump().catch(() => {});
    const stored = headerValue(response.headers, "docker-content-digest");
    if (stored !== undefined && stored !== upload.digest) {
      throw new LlamaOciError("DIGEST_MISMATCH", `${target.client.registry} stored blob ${upload.digest} as ${stored}`, {
        hint: "the cached file may be damaged; run 'llama-oci pull --verify' on the model, then push again",
      });
    }
    upload.onProgress?.(upload.size);
  } finally {
    await file.close();
  }
}

/** Sends the file in PATCH requests of chunkSize bytes; returns the Location to close the upload at. */
async function patchChunks(target: UploadTarget, upload: BlobUpload, file: FileHandle, location: string, what: string): Promise<string> {
  for (let offset = 0; offset < upload.size; ) {
    const length = Math.min(upload.chunkSize, upload.size - offset);
    const end = offset + length - 1;
    const chunk = await readChunk(file, offset, length);
    const headers = { "content-type": OCTET_STREAM, "content-range": `${offset}-${end}` };
    const response = await send(target, location, { method: "PATCH", headers, body: chunk }, what);
    if (response.status !== 202) throw await pushError(target, response, what);
    await response.body.dump().catch(() => {});
    const range = headerValue(response.headers, "range");
    if (range !== undefined && !rangeEndsAt(range, end)) {
      throw new LlamaOciError("REGISTRY", `${target.client.registry} acknowledged ${range} of ${upload.digest} after receiving bytes 0-${end}`, {
        hint: "the registry lost part of the upload; push again",
      });
    }
    location = nextLocation(response, location);
    offset += length;
    upload.onProgress?.(offset);
  }
  return location;
}

/** PUT of a manifest under a tag or digest. Returns the digest the registry reports (or undefined). */
export async function putManifest(target: UploadTarget, reference: string, body: Buffer, mediaType: string): Promise<string | undefined> {
  const what = `manifest ${target.repository}:${reference}`;
  const response = await target.client.request(`/v2/${target.repository}/manifests/${reference}`, {
    method: "PUT",
    headers: { "content-type": mediaType },
    body,
    scopes: [pushScope(target.repository)],
    what,
    signal: target.signal,
  });
  if (response.status !== 201 && response.status !== 200) throw await pushError(target, response, what);
  await response.body.dump().catch(() => {});
  return headerValue(response.headers, "docker-content-digest");
}

async function startUpload(target: UploadTarget, what: string): Promise<string> {
  const response = await target.client.request(`/v2/${target.repository}/blobs/uploads/`, {
    method: "POST",
    headers: { "content-length": "0" },
    scopes: [pushScope(target.repository)],
    what,
    signal: target.signal,
    retry: false,
  });
  if (response.status !== 202) throw await pushError(target, response, what);
  await response.body.dump().catch(() => {});
  const location = headerValue(response.headers, "location");
  if (!location) throw new LlamaOciError("REGISTRY", `${target.client.registry} opened an upload without a Location`);
  return new URL(location, response.url).toString();
}

/** A request to an upload Location: through the client (with auth) on the registry's origin, plainly elsewhere. */
async function send(target: UploadTarget, location: string, init: HttpRequest, what: string): Promise<HttpResponse> {
  const url = new URL(location);
  const base = target.client.baseUrl;
  if (base !== undefined && url.origin === new URL(base).origin) {
    return target.client.request(`${url.pathname}${url.search}`, { ...init, scopes: [pushScope(target.repository)], what, signal: target.signal, retry: false });
  }
  return target.client.http.send(url.toString(), { ...init, signal: target.signal, retry: false }, "none (other origin)");
}

function nextLocation(response: HttpResponse, current: string): string {
  const location = headerValue(response.headers, "location");
  return location ? new URL(location, response.url).toString() : current;
}

/** "0-1023" (or "bytes=0-1023") ends at `end`. */
function rangeEndsAt(range: string, end: number): boolean {
  const match = /(\d+)-(\d+)\s*$/.exec(range);
  return match !== null && Number(match[2]) === end;
}

async function readChunk(file: FileHandle, position: number, length: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(length);
  let filled = 0;
  while (filled < length) {
    const { bytesRead } = await file.read(buffer, filled, length - filled, position + filled);
    if (bytesRead === 0) {
      throw new LlamaOciError("CACHE", `a cached blob ended after ${position + filled} bytes; ${position + length} expected`, {
        hint: "the cache is damaged; pull the model again",
      });
    }
    filled += bytesRead;
  }
  return buffer;
}

/** Why a push request failed, worded for pushing: who must log in, or that the account may not push here. */
export async function pushError(target: UploadTarget, response: HttpResponse, what: string): Promise<LlamaOciError> {
  const { client, repository } = target;
  const { credential } = client;
  const registry = client.registry;
  const repo = `${registry}/${repository}`;
  if (response.status === 401 && credential.kind === "anonymous") {
    await response.body.dump().catch(() => {});
    return new LlamaOciError("UNAUTHORIZED", `${registry} requires authentication to push to ${repo}`, {
      hint: `log in with '${loginCommand(registry)}' (llama-oci uses Docker's credentials), or pass credentials`,
      status: 401,
    });
  }
  const challenge = preferredChallenge(parseWwwAuthenticate(response.headers["www-authenticate"]));
  const insufficient = response.status === 401 && challenge?.scheme === "bearer" && challenge.params.error === "insufficient_scope";
  if (response.status === 403 || insufficient) {
    await response.body.dump().catch(() => {});
    const needed = insufficient ? parseScopes(challenge.params.scope).join(" ") : "";
    const who = credential.kind === "anonymous" ? "anonymous users" : `the credentials from ${credential.source}`;
    return new LlamaOciError("DENIED", `${registry} denied push access to ${repo} for ${who}${needed ? ` (needs ${needed})` : ""}`, {
      hint: `check the repository name and that your account may push to it; '${loginCommand(registry)}' logs in as another user`,
      status: response.status,
    });
  }
  return client.error(response, what);
}
