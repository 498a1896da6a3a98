/**
 * The registry connection pull, push and inspect all open: credentials resolved for that host (explicit ones, else
 * Docker's and podman's configuration), then the authenticated transport, plain HTTP only where allowed.
 */
import type { Logger } from "../../log.js";
import { describeCredential, resolveCredentials, type ExplicitCredentials } from "../authn/index.js";
import { INSECURE_ENV, parseInsecureList, RegistryTransport, type HttpClient } from "../transport/index.js";

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
  /** The repository the connection is for (podman's auth.json may scope credentials to it). */
  repository?: string;
  /** host[:port] to talk to. */
  apiHost: string;
  /** Only this scheme (a mirror URL's); default HTTPS, with plain HTTP where allowed. */
  scheme?: "https" | "http";
  http: HttpClient;
  logger: Logger;
  env: NodeJS.ProcessEnv;
  explicit?: ExplicitCredentials;
  insecureRegistries?: readonly string[];
  credentialHelperTimeoutMs?: number;
  signal?: AbortSignal;
}

export async function connectRegistry(options: ConnectOptions): Promise<RegistryTransport> {
  const { registry, logger, env } = options;
  const insecureRegistries = [
    ...parseInsecureList((options.insecureRegistries ?? []).join(","), "insecure registry"),
    ...parseInsecureList(env[INSECURE_ENV]),
  ];
  const credential = await resolveCredentials(registry, {
    env,
    logger,
    explicit: options.explicit,
    repository: options.repository,
    helperTimeoutMs: options.credentialHelperTimeoutMs,
    signal: options.signal,
  });
  logger.debug(`credentials for ${registry}: ${describeCredential(credential)}`);
  return new RegistryTransport({
    registry,
    apiHost: options.apiHost,
    scheme: options.scheme,
    credential,
    http: options.http,
    logger,
    insecureRegistries,
  });
}
