/**
 * Which credentials to use for a registry, with Docker CLI semantics: explicit ones, then DOCKER_AUTH_CONFIG,
 * then ~/.docker/config.json (a credential helper if one is configured for the registry, else `auths`), then
 * podman's auth.json files, then anonymous. A failing helper is warned about and means an anonymous pull, as
 * with `docker pull`.
 */
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { isAbort, LlamaOciError } from "../../errors.js";
import { createLogger, type Logger } from "../../log.js";
import { HUGGING_FACE, isDockerHub, registryName } from "../name/index.js";
import { fromExplicit, type Credential, type ExplicitCredentials } from "./credential.js";
import { runCredentialHelper } from "./credential-helper.js";
import {
  convertToHostname,
  decodeAuth,
  decodeAuthEntry,
  dockerConfigPath,
  isEmptyEntry,
  parseConfig,
  podmanAuthPaths,
  readConfigFile,
  type AuthEntry,
  type ConfigFile,
} from "./docker-config.js";

export interface CredentialOptions {
  /**
   * Default process.env: HOME, DOCKER_CONFIG, DOCKER_AUTH_CONFIG, REGISTRY_AUTH_FILE, XDG_RUNTIME_DIR, XDG_CONFIG_HOME,
   * PATH; for Hugging Face also HF_TOKEN, HF_TOKEN_PATH, HF_HOME, XDG_CACHE_HOME.
   */
  env?: NodeJS.ProcessEnv;
  /** Default env.HOME, else os.homedir(). */
  homeDir?: string;
  logger?: Logger;
  /** How long a credential helper may take; default 10000. */
  helperTimeoutMs?: number;
  /** The repository the credentials are for: podman's auth.json may hold keys scoped to a namespace or repository. */
  repository?: string;
  /** Credentials given through the API; they win over everything else. */
  explicit?: ExplicitCredentials;
  signal?: AbortSignal;
}

export const DOCKER_HUB_CREDENTIAL_KEY = "https://index.docker.io/v1/";
const ANONYMOUS: Credential = { kind: "anonymous" };

/** The key Docker stores a registry's credentials under: the Hub's legacy URL, else the canonical host[:port]. */
export function credentialKey(registry: string): string {
  return isDockerHub(registry) ? DOCKER_HUB_CREDENTIAL_KEY : (registryName(registry) ?? registry);
}

/** Whether a configuration key written by some tool names the registry whose credential key is `key`. */
function keyNames(configKey: string, key: string): boolean {
  return configKey === key || credentialKey(convertToHostname(configKey)) === key;
}

export async function resolveCredentials(registry: string, options: CredentialOptions = {}): Promise<Credential> {
  if (options.explicit) return fromExplicit(options.explicit);

  const env = options.env ?? process.env;
  const logger = options.logger ?? createLogger({ env });
  const home = options.homeDir ?? (env.HOME || homedir());
  const key = credentialKey(registry);

  const fromEnv = fromDockerAuthConfig(env, key, logger);
  if (fromEnv) return fromEnv;

  const config = await readConfigFile(dockerConfigPath(env, home), logger);
  if (config) {
    const helper = helperFor(config, key);
    if (helper) return fromHelper(helper, key, config.origin, env, logger, options);
    const entry = findAuthEntry(config, key, logger);
    if (entry) return entry;
  }

  for (const path of podmanAuthPaths(env, home)) {
    const file = await readConfigFile(path, logger);
    const entry = file && findPodmanEntry(file, registry, options.repository, logger);
    if (entry) return entry;
  }
  if (registryName(registry) === HUGGING_FACE) return (await fromHuggingFaceToken(env, home, logger)) ?? ANONYMOUS;
  return ANONYMOUS;
}

/**
 * For Hugging Face's hosts, the token the Hugging Face tools use: HF_TOKEN, else the CLI's token file
 * (HF_TOKEN_PATH, else $HF_HOME/token, default ~/.cache/huggingface/token), sent as a Bearer token.
 */
async function fromHuggingFaceToken(env: NodeJS.ProcessEnv, home: string, logger: Logger): Promise<Credential | undefined> {
  const fromEnv = env.HF_TOKEN?.trim();
  if (fromEnv) return { kind: "registryToken", registryToken: fromEnv, source: "HF_TOKEN" };
  const path = env.HF_TOKEN_PATH || join(env.HF_HOME || join(env.XDG_CACHE_HOME || join(home, ".cache"), "huggingface"), "token");
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== "ENOENT" && code !== "ENOTDIR") logger.warn(`ignoring ${path}: it cannot be read (${code ?? "unknown error"})`);
    return undefined;
  }
  const token = text.trim();
  return token ? { kind: "registryToken", registryToken: token, source: path } : undefined;
}

/** DOCKER_AUTH_CONFIG (docker CLI >= 28.3): exact key only, and only the `auth` field. */
function fromDockerAuthConfig(env: NodeJS.ProcessEnv, key: string, logger: Logger): Credential | undefined {
  const text = env.DOCKER_AUTH_CONFIG;
  if (!text) return undefined;
  const config = parseConfig(text, "DOCKER_AUTH_CONFIG", logger);
  const auths = config?.auths ?? [];
  const raw = (auths.find(([k]) => k === key) ?? auths.find(([k]) => credentialKey(k) === key))?.[1];
  if (typeof raw !== "object" || raw === null) return undefined;
  const auth = (raw as { auth?: unknown }).auth;
  if (typeof auth !== "string" || auth === "") return undefined;
  const decoded = decodeAuth(auth);
  if ("error" in decoded) {
    logger.warn(`ignoring DOCKER_AUTH_CONFIG auths["${key}"]: ${decoded.error}`);
    return undefined;
  }
  return { kind: "basic", username: decoded.username, password: decoded.password, source: "DOCKER_AUTH_CONFIG" };
}

/**
 * credHelpers[key] (an entry that is present wins, even when empty, as in the CLI), for the Hub also
 * credHelpers["docker.io"] as containers/image writes it, else credsStore.
 */
function helperFor(config: ConfigFile, key: string): { suffix: string; setting: string } | undefined {
  const others = [...config.credHelpers.keys()].filter((k) => k !== key && credentialKey(k) === key);
  for (const k of [key, ...others]) {
    const suffix = config.credHelpers.get(k);
    if (suffix !== undefined) return suffix === "" ? undefined : { suffix, setting: `credHelpers["${k}"]` };
  }
  return config.credsStore ? { suffix: config.credsStore, setting: '"credsStore"' } : undefined;
}

async function fromHelper(
  helper: { suffix: string; setting: string },
  key: string,
  configPath: string,
  env: NodeJS.ProcessEnv,
  logger: Logger,
  options: CredentialOptions,
): Promise<Credential> {
  const program = `docker-credential-${helper.suffix}`;
  const source = `credential helper ${program}`;
  let answer: { username: string; secret: string } | null;
  try {
    answer = await runCredentialHelper(helper.suffix, key, { env, timeoutMs: options.helperTimeoutMs, signal: options.signal });
  } catch (error) {
    if (isAbort(error)) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    const hint = error instanceof LlamaOciError && error.hint ? ` (${error.hint})` : "";
    logger.warn(
      `${reason}${hint}; pulling ${key} anonymously. Fix the helper, or remove ${helper.setting} from ${configPath} and log in again.`,
    );
    return ANONYMOUS;
  }
  if (answer === null) return ANONYMOUS;
  if (answer.username === "<token>") {
    return answer.secret ? { kind: "identityToken", identityToken: answer.secret, source } : ANONYMOUS;
  }
  if (!answer.username && !answer.secret) return ANONYMOUS;
  return { kind: "basic", username: answer.username, password: answer.secret, source };
}

/** The CLI's file store: the exact key, else the first key whose hostname part is the key. */
function findAuthEntry(config: ConfigFile, key: string, logger: Logger): Credential | undefined {
  const exact = config.auths.filter(([k]) => k === key);
  const byHostname = config.auths.filter(([k]) => k !== key && keyNames(k, key));
  return firstUsable(config, [...exact, ...byHostname], logger);
}

/**
 * containers-auth.json(5): a key names a registry, or a namespace or repository in it (`quay.io/org`,
 * `registry.example.com/team/repo`); the most specific key that covers the repository wins, then the registry's own.
 * Keys are compared after stripping a scheme (and then the path, as in the legacy `https://host/v1/` form), with the
 * registry part canonical (name/host.ts).
 */
function findPodmanEntry(file: ConfigFile, registry: string, repository: string | undefined, logger: Logger): Credential | undefined {
  const canonical = normalizePodmanKey(registry);
  const segments = repository === undefined ? [] : repository.split("/");
  const wanted = [...segments.map((_, i) => `${canonical}/${segments.slice(0, segments.length - i).join("/")}`), canonical];
  for (const key of wanted) {
    const exact = file.auths.filter(([k]) => k === key);
    const normalized = file.auths.filter(([k]) => k !== key && normalizePodmanKey(k) === key);
    const found = firstUsable(file, [...exact, ...normalized], logger);
    if (found) return found;
  }
  return undefined;
}

function normalizePodmanKey(key: string): string {
  let stripped = key.replace(/^https?:\/\//, "");
  if (stripped !== key) stripped = stripped.split("/", 1)[0]!;
  const slash = stripped.indexOf("/");
  const host = slash === -1 ? stripped : stripped.slice(0, slash);
  return `${registryName(host) ?? host}${slash === -1 ? "" : stripped.slice(slash)}`;
}

/** Empty entries (`{}`, written by `docker login` when a helper holds the secret) and bad ones are skipped. */
function firstUsable(file: ConfigFile, candidates: Array<[string, unknown]>, logger: Logger): Credential | undefined {
  for (const [key, raw] of candidates) {
    const source = `${file.origin} auths["${key}"]`;
    const entry = decodeAuthEntry(raw);
    if ("error" in entry) {
      logger.warn(`ignoring ${source}: ${entry.error}`);
      continue;
    }
    if (isEmptyEntry(entry)) continue;
    const credential = toCredential(entry, source);
    if (credential) return credential;
  }
  return undefined;
}

/** A registry token is used as is; an identity token goes to the token server; else user and password. */
function toCredential(entry: AuthEntry, source: string): Credential | undefined {
  if (entry.registryToken) return { kind: "registryToken", registryToken: entry.registryToken, source };
  if (entry.identityToken) {
    return entry.username
      ? { kind: "identityToken", username: entry.username, identityToken: entry.identityToken, source }
      : { kind: "identityToken", identityToken: entry.identityToken, source };
  }
  if (entry.username) return { kind: "basic", username: entry.username, password: entry.password ?? "", source };
  return undefined;
}
