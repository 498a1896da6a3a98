/**
 * Docker `config.json` and containers `auth.json` files: locating, reading and decoding them. Both share one
 * format ({"auths": {...}, "credHelpers": {...}, "credsStore": "..."}). Nothing here decides which credential
 * applies; see credentials.ts.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../../log.js";
import { isObject } from "../../util/objects.js";

/** One `auths` entry, decoded. Fields are absent when empty. */
export interface AuthEntry {
  username?: string;
  password?: string;
  identityToken?: string;
  registryToken?: string;
}

export interface ConfigFile {
  /** Where it came from, for messages: a path, or the name of an environment variable. */
  origin: string;
  /** `auths` in file order: key and the raw entry (decode with decodeAuthEntry). */
  auths: Array<[key: string, entry: unknown]>;
  credHelpers: Map<string, string>;
  credsStore?: string;
}

/** `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
export function dockerConfigPath(env: NodeJS.ProcessEnv, homeDir: string): string {
  const dir = env.DOCKER_CONFIG ? env.DOCKER_CONFIG : join(homeDir, ".docker");
  return join(dir, "config.json");
}

/**
 * containers/image search order: REGISTRY_AUTH_FILE alone when it is set (as podman and skopeo read it), else the
 * runtime dir, then the config dir.
 */
export function podmanAuthPaths(env: NodeJS.ProcessEnv, homeDir: string): string[] {
  if (env.REGISTRY_AUTH_FILE) return [env.REGISTRY_AUTH_FILE];
  const paths: string[] = [];
  if (env.XDG_RUNTIME_DIR) paths.push(join(env.XDG_RUNTIME_DIR, "containers", "auth.json"));
  const configHome = env.XDG_CONFIG_HOME ? env.XDG_CONFIG_HOME : join(homeDir, ".config");
  paths.push(join(configHome, "containers", "auth.json"));
  return paths;
}

/** A missing file is no error (undefined, silently); an unreadable or malformed one is warned about and ignored. */
export async function readConfigFile(path: string, logger: Logger): Promise<ConfigFile | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    logger.warn(`ignoring ${path}: it cannot be read (${code ?? "unknown error"})`);
    return undefined;
  }
  return parseConfig(text, path, logger);
}

export function parseConfig(text: string, origin: string, logger: Logger): ConfigFile | undefined {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    // The parser's message may quote the file's text, secrets included, so it is not repeated here.
    logger.warn(`ignoring ${origin}: it is not valid JSON; fix or remove it to use its credentials`);
    return undefined;
  }
  if (!isObject(json)) {
    logger.warn(`ignoring ${origin}: it is not a JSON object`);
    return undefined;
  }
  const auths = isObject(json.auths) ? Object.entries(json.auths) : [];
  const credHelpers = new Map<string, string>();
  if (isObject(json.credHelpers)) {
    for (const [key, helper] of Object.entries(json.credHelpers)) {
      if (typeof helper === "string") credHelpers.set(key, helper);
    }
  }
  const credsStore = typeof json.credsStore === "string" && json.credsStore !== "" ? json.credsStore : undefined;
  return { origin, auths, credHelpers, credsStore };
}

/**
 * Decodes an `auths` entry. `auth` (base64 of user:pass) wins over `username`/`password`, as in the Docker CLI.
 * Returns an error string (free of secrets) for an entry that cannot be decoded.
 */
export function decodeAuthEntry(raw: unknown): AuthEntry | { error: string } {
  if (!isObject(raw)) return { error: "the entry is not a JSON object" };
  const entry: AuthEntry = {};
  const auth = stringField(raw, "auth");
  if (auth !== undefined) {
    const decoded = decodeAuth(auth);
    if ("error" in decoded) return decoded;
    entry.username = decoded.username;
    entry.password = decoded.password;
  } else {
    entry.username = stringField(raw, "username");
    entry.password = stringField(raw, "password");
  }
  entry.identityToken = stringField(raw, "identitytoken");
  entry.registryToken = stringField(raw, "registrytoken");
  for (const key of Object.keys(entry) as Array<keyof AuthEntry>) {
    if (entry[key] === undefined) delete entry[key];
  }
  return entry;
}

export function isEmptyEntry(entry: AuthEntry): boolean {
  return !entry.username && !entry.password && !entry.identityToken && !entry.registryToken;
}

/**
 * The `auth` field: base64 of `user:pass`, split at the first colon, NULs trimmed from the password (Docker's
 * decodeAuth). Unpadded base64 is accepted, as ggcr does.
 */
export function decodeAuth(auth: string): { username: string; password: string } | { error: string } {
  const compact = auth.replace(/[\r\n]/g, "");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(compact) || compact.length % 4 === 1 || (compact.includes("=") && compact.length % 4 !== 0)) {
    return { error: 'its "auth" field is not valid base64' };
  }
  const decoded = Buffer.from(compact, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon <= 0) return { error: 'its "auth" field does not decode to user:password' };
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1).replace(/^\0+|\0+$/g, "") };
}

/**
 * Docker's ConvertToHostname: the host[:port] of a URL-like key (scheme and path stripped), else the key up to
 * its first `/`. `https://::1:6555/v2/` gives `[::1]:6555`, as Go's url.Parse + net.JoinHostPort do.
 */
export function convertToHostname(key: string): string {
  const schemeEnd = key.indexOf("://");
  if (schemeEnd > 0 && /^[A-Za-z][A-Za-z0-9+.-]*$/.test(key.slice(0, schemeEnd))) {
    let authority = key.slice(schemeEnd + 3);
    const end = authority.search(/[/?#]/);
    if (end >= 0) authority = authority.slice(0, end);
    authority = authority.slice(authority.lastIndexOf("@") + 1);
    const hostPort = splitHostPort(authority);
    if (hostPort && hostPort.host !== "") {
      if (hostPort.port === "") return hostPort.host;
      return hostPort.host.includes(":") ? `[${hostPort.host}]:${hostPort.port}` : `${hostPort.host}:${hostPort.port}`;
    }
  }
  const slash = key.indexOf("/");
  return slash >= 0 ? key.slice(0, slash) : key;
}

/** Go's url.URL Hostname()/Port() split; undefined where url.Parse would fail (a non-numeric port). */
function splitHostPort(authority: string): { host: string; port: string } | undefined {
  let host = authority;
  let port = "";
  if (host.startsWith("[")) {
    const close = host.indexOf("]");
    if (close < 0) return undefined;
    const rest = host.slice(close + 1);
    if (rest !== "" && !/^:\d*$/.test(rest)) return undefined;
    port = rest.slice(1);
    host = host.slice(1, close);
    return { host, port };
  }
  const colon = host.lastIndexOf(":");
  if (colon >= 0) {
    if (!/^\d*$/.test(host.slice(colon + 1))) return undefined;
    port = host.slice(colon + 1);
    host = host.slice(0, colon);
  }
  return { host, port };
}

function stringField(object: Record<string, unknown>, key: string): string | undefined {
  const value = object[key];
  return typeof value === "string" && value !== "" ? value : undefined;
}
