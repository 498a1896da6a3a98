/**
 * Registry mirrors for pulls. A plain URL entry mirrors Docker Hub, as the Docker daemon's `registry-mirrors`
 * does; a `HOST=URL` entry mirrors the registry HOST, as a `[[registry.mirror]]` of containers' registries.conf
 * does. A pull tries the mirrors of its reference's registry in order, then the registry itself. The mirror's
 * URL scheme is the one used (http:// is allowed explicitly), and the repository path is the reference's own.
 */
import { LlamaOciError } from "../../errors.js";
import { DOCKER_HUB, registryName, type Reference } from "../name/index.js";

export const MIRRORS_ENV = "LLAMA_OCI_REGISTRY_MIRRORS";

export interface RegistryMirror {
  /** The registry whose references it serves: "docker.io" or host[:port]. */
  registry: string;
  /** scheme://host[:port] of the mirror. */
  url: string;
  /** host[:port] of the mirror: where requests go and whose credentials are used. */
  host: string;
  scheme: "http" | "https";
}

/** One place a pull can be served from: a mirror, or the reference's own registry (the origin). */
export interface PullEndpoint {
  kind: "mirror" | "origin";
  /** Registry name for the client and its credentials: the mirror's host[:port], or the reference's registry. */
  registry: string;
  /** host[:port] to connect to. */
  apiHost: string;
  /** Set for mirrors: only this scheme is used. The origin tries https, then http where plain HTTP is allowed. */
  scheme?: "http" | "https";
  repository: string;
  /** For messages: the mirror URL, or the registry name. */
  label: string;
}


/**
 * Parses mirror entries; each may itself hold several entries separated by commas. Blank entries are skipped and
 * repeats dropped. `source` names where they came from (a flag, an option, the environment) for error messages.
 */
export function parseRegistryMirrors(entries: readonly string[], source: string): RegistryMirror[] {
  const mirrors: RegistryMirror[] = [];
  for (const raw of entries.flatMap((entry) => entry.split(","))) {
    const entry = raw.trim();
    if (entry === "") continue;
    const mirror = parseEntry(entry, source);
    if (!mirrors.some((m) => m.registry === mirror.registry && m.url === mirror.url)) mirrors.push(mirror);
  }
  return mirrors;
}

/** The mirrors from the `registryMirrors` option (or --registry-mirror) first, then LLAMA_OCI_REGISTRY_MIRRORS. */
export function configuredMirrors(fromOptions: readonly string[] | undefined, env: NodeJS.ProcessEnv): RegistryMirror[] {
  const all = [...parseRegistryMirrors(fromOptions ?? [], "registry mirror"), ...parseRegistryMirrors([env[MIRRORS_ENV] ?? ""], MIRRORS_ENV)];
  return all.filter((m, i) => all.findIndex((o) => o.registry === m.registry && o.url === m.url) === i);
}

/** Where a pull of `ref` is tried, in order: the mirrors configured for its registry, then the registry itself. */
export function pullEndpoints(ref: Reference, mirrors: readonly RegistryMirror[]): PullEndpoint[] {
  const fromMirrors = mirrors
    .filter((m) => m.registry === ref.registry)
    .map((m): PullEndpoint => ({ kind: "mirror", registry: m.host, apiHost: m.host, scheme: m.scheme, repository: ref.repository, label: m.url }));
  return [...fromMirrors, { kind: "origin", registry: ref.registry, apiHost: ref.apiHost, repository: ref.repository, label: ref.registry }];
}

function parseEntry(entry: string, source: string): RegistryMirror {
  const eq = entry.indexOf("=");
  const schemeAt = entry.indexOf("://");
  const keyed = eq !== -1 && (schemeAt === -1 || eq < schemeAt);
  const registry = keyed ? normalizeRegistry(entry.slice(0, eq).trim(), entry, source) : DOCKER_HUB;
  const location = parseMirrorUrl(keyed ? entry.slice(eq + 1).trim() : entry, entry, source);
  return { registry, ...location };
}

function normalizeRegistry(host: string, entry: string, source: string): string {
  const registry = registryName(host);
  if (registry === undefined) throw invalid(entry, source, `${JSON.stringify(host)} is not a registry host[:port]`);
  return registry;
}

function parseMirrorUrl(value: string, entry: string, source: string): Omit<RegistryMirror, "registry"> {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) {
    throw invalid(entry, source, "the mirror URL needs a scheme, https:// or http://");
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalid(entry, source, "the mirror URL does not parse");
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw invalid(entry, source, `unsupported scheme ${url.protocol.slice(0, -1)} (use https:// or http://)`);
  }
  if (url.username !== "" || url.password !== "") {
    throw invalid(entry, source, "the mirror URL must not hold credentials; log in to the mirror host instead (docker login)");
  }
  if ((url.pathname !== "" && url.pathname !== "/") || url.search !== "" || url.hash !== "") {
    throw invalid(entry, source, "the mirror URL must be scheme://host[:port] with no path, query or fragment");
  }
  const scheme = url.protocol === "http:" ? "http" : "https";
  return { url: `${scheme}://${url.host}`, host: url.host, scheme };
}

function invalid(entry: string, source: string, problem: string): LlamaOciError {
  return new LlamaOciError("INVALID_ARGUMENT", `invalid ${source} entry ${JSON.stringify(redactEntry(entry))}: ${problem}`, {
    hint: 'use https://mirror.example.com for Docker Hub, or registry.example.com=https://mirror.example.com for another registry',
  });
}

/** The entry without any user:password@ it may hold, so a rejected entry never echoes a secret. */
function redactEntry(entry: string): string {
  return entry.replace(/(:\/\/)[^/@]*@/g, "$1***@");
}
