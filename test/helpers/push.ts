/**
 * Pushes test fixtures with its own minimal HTTP (global fetch), independent of the library under test. Does the
 * auth dance itself: on a 401 it answers a Basic challenge with the target's credentials, or a Bearer challenge by
 * fetching a token from the realm (GET, Basic admin credentials, scope repository:<repo>:push,pull).
 */
import { createHash } from "node:crypto";

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";

export interface PushTarget {
  registryUrl: string;
  repository: string;
  auth?: { username: string; password: string };
}

export interface BlobSpec {
  mediaType: string;
  data: Buffer;
  annotations?: Record<string, string>;
}

export interface ArtifactSpec {
  config: BlobSpec;
  layers: BlobSpec[];
  artifactType?: string;
  annotations?: Record<string, string>;
  manifestMediaType?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export function digestOf(data: Buffer): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

export async function pushBlob(target: PushTarget, data: Buffer): Promise<{ digest: string; size: number }> {
  const digest = digestOf(data);
  const base = repoUrl(target);
  const head = await send(target, "HEAD", `${base}/blobs/${digest}`, {}, [200, 307, 404]);
  if (head.status !== 404) return { digest, size: data.length };

  const start = await send(target, "POST", `${base}/blobs/uploads/`, {}, [202]);
  const location = start.headers.get("location");
  if (!location) throw new Error(`push: upload start on ${target.repository} gave no Location`);
  const uploadUrl = new URL(location, start.url || `${base}/blobs/uploads/`);
  uploadUrl.searchParams.set("digest", digest);
  await send(target, "PUT", uploadUrl.toString(), { body: data, contentType: "application/octet-stream" }, [201]);
  return { digest, size: data.length };
}

export async function pushManifest(target: PushTarget, reference: string, body: Buffer, mediaType: string): Promise<string> {
  const res = await send(target, "PUT", `${repoUrl(target)}/manifests/${reference}`, { body, contentType: mediaType }, [201]);
  const digest = digestOf(body);
  const echoed = res.headers.get("docker-content-digest");
  if (echoed !== null && echoed !== digest) throw new Error(`push: registry computed ${echoed} for a manifest whose digest is ${digest}`);
  return digest;
}

export async function pushArtifact(target: PushTarget, tag: string, artifact: ArtifactSpec): Promise<{ digest: string; manifest: Buffer }> {
  const config = await pushDescriptor(target, artifact.config);
  const layers: Descriptor[] = [];
  for (const layer of artifact.layers) layers.push(await pushDescriptor(target, layer));
  const mediaType = artifact.manifestMediaType ?? OCI_MANIFEST;
  const manifest: Record<string, unknown> = { schemaVersion: 2, mediaType };
  if (artifact.artifactType !== undefined) manifest.artifactType = artifact.artifactType;
  manifest.config = config;
  manifest.layers = layers;
  if (artifact.annotations !== undefined) manifest.annotations = artifact.annotations;
  const body = Buffer.from(JSON.stringify(manifest));
  const digest = await pushManifest(target, tag, body, mediaType);
  return { digest, manifest: body };
}

export async function pushIndex(
  target: PushTarget,
  tag: string,
  manifests: { digest: string; size: number; mediaType: string; platform?: { os: string; architecture: string }; artifactType?: string }[],
): Promise<{ digest: string; index: Buffer }> {
  const index = { schemaVersion: 2, mediaType: OCI_INDEX, manifests };
  const body = Buffer.from(JSON.stringify(index));
  return { digest: await pushManifest(target, tag, body, OCI_INDEX), index: body };
}

async function pushDescriptor(target: PushTarget, spec: BlobSpec): Promise<Descriptor> {
  const { digest, size } = await pushBlob(target, spec.data);
  const descriptor: Descriptor = { mediaType: spec.mediaType, digest, size };
  if (spec.annotations !== undefined) descriptor.annotations = spec.annotations;
  return descriptor;
}

function repoUrl(target: PushTarget): string {
  return `${target.registryUrl.replace(/\/+$/, "")}/v2/${target.repository}`;
}

/** Authorization header per registry, repository and user, reused until a 401 asks for a new one. */
const authCache = new Map<string, string>();

async function send(
  target: PushTarget,
  method: string,
  url: string,
  options: { body?: Buffer; contentType?: string },
  expected: number[],
): Promise<Response> {
  const key = `${target.registryUrl}|${target.repository}|${target.auth?.username ?? ""}`;
  for (let attempt = 0; ; attempt++) {
    const headers: Record<string, string> = {};
    const authorization = authCache.get(key);
    if (authorization !== undefined) headers.authorization = authorization;
    if (options.contentType !== undefined) headers["content-type"] = options.contentType;
    const body = options.body && new Uint8Array(options.body.buffer as ArrayBuffer, options.body.byteOffset, options.body.length);
    const res = await fetch(url, { method, headers, body, redirect: "manual" });
    if (res.status === 401 && attempt === 0) {
      const challenge = res.headers.get("www-authenticate") ?? "";
      await res.body?.cancel();
      authCache.set(key, await answerChallenge(target, challenge));
      continue;
    }
    if (!expected.includes(res.status)) {
      const text = method === "HEAD" ? "" : await res.text();
      throw new Error(`push: ${method} ${url} answered ${res.status}: ${text.slice(0, 500)}`);
    }
    await res.body?.cancel();
    return res;
  }
}

async function answerChallenge(target: PushTarget, challenge: string): Promise<string> {
  const scheme = challenge.split(/\s/, 1)[0]!.toLowerCase();
  const basic = target.auth && `Basic ${Buffer.from(`${target.auth.username}:${target.auth.password}`).toString("base64")}`;
  if (scheme === "basic") {
    if (!basic) throw new Error(`push: ${target.registryUrl} wants Basic auth but the target has no credentials`);
    return basic;
  }
  if (scheme !== "bearer") throw new Error(`push: unexpected challenge "${challenge}"`);
  const params = Object.fromEntries([...challenge.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!.toLowerCase(), m[2]!]));
  if (!params.realm) throw new Error(`push: Bearer challenge without realm: "${challenge}"`);
  const tokenUrl = new URL(params.realm);
  if (params.service) tokenUrl.searchParams.set("service", params.service);
  tokenUrl.searchParams.append("scope", `repository:${target.repository}:push,pull`);
  const res = await fetch(tokenUrl, { headers: basic ? { authorization: basic } : {} });
  if (res.status !== 200) throw new Error(`push: token request answered ${res.status}: ${await res.text()}`);
  const body = (await res.json()) as { token?: string; access_token?: string };
  const token = body.access_token ?? body.token;
  if (!token) throw new Error("push: token response without a token");
  return `Bearer ${token}`;
}
