/**
 * The one registry host grammar: `host[:port]`, the host being DNS-like labels, an IPv4 address or a bracketed IPv6
 * literal. References, mirror keys, the insecure-registry list and credential lookups all parse hosts here, so they
 * agree on what is valid and on case: host names are case-insensitive, so the canonical form is lowercase.
 */
import { isIP } from "node:net";

export const DOCKER_HUB = "docker.io";
export const DOCKER_HUB_API_HOST = "registry-1.docker.io";
/** Every name Docker Hub goes by; all of them mean DOCKER_HUB. */
const DOCKER_HUB_ALIASES: ReadonlySet<string> = new Set([DOCKER_HUB, "index.docker.io", DOCKER_HUB_API_HOST]);

/** Hugging Face's registry API for its GGUF repositories (the one Ollama pulls `hf.co/<user>/<repo>:<quant>` from). */
export const HUGGING_FACE = "hf.co";
const HUGGING_FACE_ALIASES: ReadonlySet<string> = new Set([HUGGING_FACE, "huggingface.co", "www.huggingface.co"]);
/** The Ollama library's registry; `ollama.com` names it too. */
export const OLLAMA_REGISTRY = "registry.ollama.ai";
const OLLAMA_ALIASES: ReadonlySet<string> = new Set([OLLAMA_REGISTRY, "ollama.com", "www.ollama.com"]);

/** Other registries' own rules for the names in them. */
export interface RegistryRules {
  /** Repository names keep their capitals (Hugging Face's do); everywhere else they must be lowercase. */
  keepsCase: boolean;
  /** The namespace a one-component repository name gets ("ai" on Docker Hub, as Docker Model Runner does). */
  defaultNamespace?: string;
}

export function registryRules(registry: string): RegistryRules {
  if (registry === DOCKER_HUB) return { keepsCase: false, defaultNamespace: "ai" };
  if (registry === HUGGING_FACE) return { keepsCase: true };
  if (registry === OLLAMA_REGISTRY) return { keepsCase: false, defaultNamespace: "library" };
  return { keepsCase: false };
}

const HOST_LABEL = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;
const IPV6_LITERAL = /^\[[a-f0-9:]+\]$/;
const PORT = /^[0-9]+$/;

export interface HostPort {
  /** Lowercase host; an IPv6 literal keeps its brackets. */
  host: string;
  port?: string;
  /** host[:port], canonical. */
  hostPort: string;
}

/** Parses `host[:port]`; undefined when `text` is not one. */
export function parseHostPort(text: string): HostPort | undefined {
  const lower = text.toLowerCase();
  let host = lower;
  let port: string | undefined;
  if (lower.startsWith("[")) {
    const close = lower.indexOf("]");
    if (close === -1) return undefined;
    host = lower.slice(0, close + 1);
    const rest = lower.slice(close + 1);
    if (rest !== "") {
      if (!rest.startsWith(":")) return undefined;
      port = rest.slice(1);
    }
    if (!IPV6_LITERAL.test(host)) return undefined;
  } else {
    const colon = lower.indexOf(":");
    if (colon !== -1) {
      host = lower.slice(0, colon);
      port = lower.slice(colon + 1);
    }
    if (!host.split(".").every((label) => HOST_LABEL.test(label))) return undefined;
  }
  if (port !== undefined && !PORT.test(port)) return undefined;
  return port === undefined ? { host, hostPort: host } : { host, port, hostPort: `${host}:${port}` };
}

/**
 * The registry a host[:port] names: "docker.io" for any of Docker Hub's names, else the canonical (lowercase)
 * host[:port]. One exception keeps the spelling: a bare single label such as "Foo", which only its capitals mark as
 * a registry (Docker's rule); lowercased it would read as a Docker Hub namespace.
 */
export function registryName(text: string): string | undefined {
  const parsed = parseHostPort(text);
  if (!parsed) return undefined;
  if (DOCKER_HUB_ALIASES.has(parsed.hostPort)) return DOCKER_HUB;
  if (HUGGING_FACE_ALIASES.has(parsed.hostPort)) return HUGGING_FACE;
  if (OLLAMA_ALIASES.has(parsed.hostPort)) return OLLAMA_REGISTRY;
  const bareLabel = parsed.port === undefined && !parsed.host.includes(".") && !parsed.host.startsWith("[") && parsed.host !== "localhost";
  return bareLabel ? text : parsed.hostPort;
}

/** Whether `text` is one of Docker Hub's names, in any case. */
export function isDockerHub(text: string): boolean {
  return DOCKER_HUB_ALIASES.has(text.toLowerCase());
}

/** The host of a host[:port], without brackets: "[::1]:5000" gives "::1". */
export function hostnameOf(hostPort: string): string {
  const parsed = parseHostPort(hostPort);
  const host = parsed?.host ?? hostPort.toLowerCase();
  return host.startsWith("[") ? host.slice(1, -1) : host;
}

/** localhost, *.localhost, 127.0.0.0/8 and ::1: the registries Docker lets through over plain HTTP. */
export function isLoopbackHost(hostPort: string): boolean {
  const host = hostnameOf(hostPort);
  if (host === "localhost" || host.endsWith(".localhost")) return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  return host === "::1" || host === "0:0:0:0:0:0:0:1";
}
