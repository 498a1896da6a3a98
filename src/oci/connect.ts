/**
 * One registry connection as pull, push and inspect all open it: credentials resolved for that host (Docker,
 * then podman configuration, or the explicit ones), and a RegistryClient that may use plain HTTP where allowed.
 */
import type { Logger } from "../log.js";
import { describeCredential, resolveCredentials, type Credential, type ExplicitCredentials } from "./credentials.js";
import { parseInsecureList } from "./plain-http.js";
import { RegistryClient } from "./registry-client.js";
import type { Transport } from "./transport.js";

/** The options every registry operation (pull, push, inspect) takes. */
export interface RegistryAccessOptions {
  /** Cache root; default LLAMA_CACHE, else $XDG_CACHE_HOME/llama.cpp, else ~/.cache/llama.cpp. */
  cacheDir?: string;
  /** Registries (host[:port]) that may be reached over plain HTTP; loopback ones always may. */
  insecureRegistries?: string[];
  /** Credentials for this registry, used instead of the Docker / podman configuration. */
  credentials?: ExplicitCredentials;
  signal?: AbortSignal;
  /** Trace every HTTP exchange (also LLAMA_OCI_DEBUG=1). */
  verbose?: boolean;
  onWarning?: (message: string) => void;
  onDebug?: (message: string) => void;
  /** Environment to read configuration from; default process.env. */
  env?: NodeJS.ProcessEnv;
  /** How long a docker-credential helper may take (default 10 s). */
  credentialHelperTimeoutMs?: number;
}

export interface ConnectOptions {
  /** Canonical registry name: where credentials are looked up. */
  registry: string;
  /** host[:port] to talk to. */
  apiHost: string;
  /** Only this scheme (a mirror URL's); default HTTPS, with plain HTTP where allowed. */
  scheme?: "https" | "http";
  transport: Transport;
  logger: Logger;
  env: NodeJS.ProcessEnv;
  explicit?: ExplicitCredentials;
  insecureRegistries?: readonly string[];
  credentialHelperTimeoutMs?: number;
  signal?: AbortSignal;
}

export async function connectRegistry(options: ConnectOptions): Promise<{ client: RegistryClient; credential: Credential }> {
  const { registry, logger, env } = options;
  const credential = await resolveCredentials(registry, {
    env,
    logger,
    explicit: options.explicit,
    helperTimeoutMs: options.credentialHelperTimeoutMs,
    signal: options.signal,
  });
  logger.debug(`credentials for ${registry}: ${describeCredential(credential)}`);
  const client = new RegistryClient({
    registry,
    apiHost: options.apiHost,
    scheme: options.scheme,
    credential,
    transport: options.transport,
    logger,
    insecureRegistries: [...(options.insecureRegistries ?? []), ...parseInsecureList(env.LLAMA_OCI_INSECURE_REGISTRIES)],
  });
  return { client, credential };
}
