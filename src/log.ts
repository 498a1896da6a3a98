/**
 * Where warnings and HTTP traces go. Passed explicitly to whoever needs it; nothing here is global.
 * Messages handed to a Logger must already be free of credentials: see redactUrl.
 */
export interface Logger {
  /** Something the user should know, e.g. a failing credential helper or a fallback to the cache. */
  warn(message: string): void;
  /** A trace line, shown only with --verbose / LLAMA_OCI_DEBUG=1. */
  debug(message: string): void;
  readonly debugEnabled: boolean;
}

export interface LoggerOptions {
  verbose?: boolean;
  onWarning?: (message: string) => void;
  onDebug?: (message: string) => void;
  env?: NodeJS.ProcessEnv;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const env = options.env ?? process.env;
  const debugEnabled = options.verbose ?? isTruthy(env.LLAMA_OCI_DEBUG);
  const warn = options.onWarning ?? ((message: string) => process.stderr.write(`warning: ${message}\n`));
  const debug = options.onDebug ?? ((message: string) => process.stderr.write(`debug: ${message}\n`));
  return {
    debugEnabled,
    warn,
    debug: debugEnabled ? debug : () => {},
  };
}

export const silentLogger: Logger = { debugEnabled: false, warn: () => {}, debug: () => {} };

export function isTruthy(value: string | undefined): boolean {
  return value !== undefined && /^(1|true|yes|on)$/i.test(value.trim());
}

const SECRET_QUERY_KEYS = /^(sig|signature|token|access_token|x-amz-signature|x-amz-credential|x-amz-security-token|verify|key|x-goog-signature|x-goog-credential|se|sp|sv|password|refresh_token|code)$/i;

/** A URL fit for logs: no user info, and query values that may be secrets (signed CDN URLs) replaced by "***". */
export function redactUrl(input: string | URL): string {
  let url: URL;
  try {
    url = new URL(String(input));
  } catch {
    return "<invalid url>";
  }
  url.username = "";
  url.password = "";
  for (const key of [...url.searchParams.keys()]) {
    if (SECRET_QUERY_KEYS.test(key)) url.searchParams.set(key, "***");
  }
  return url.toString();
}
