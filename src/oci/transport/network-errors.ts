/**
 * What went wrong below HTTP (refused, reset, timed out, TLS) and what that means: the one list of connection
 * error codes, read through an error's cause chain, deciding what is worth a retry and what may fall back to http.
 */
import { LlamaOciError } from "../../errors.js";

/** The connection was refused or dropped: nothing (or no TLS server) answered, or it went away. */
const DROPPED = ["ECONNREFUSED", "ECONNRESET", "EPIPE", "UND_ERR_SOCKET", "UND_ERR_CLOSED"];
/** Worth another attempt: dropped, stalled, or a name or route that may come back. */
const TRANSIENT: ReadonlySet<string> = new Set([
  ...DROPPED,
  "ETIMEDOUT",
  "EAI_AGAIN",
  "ENETUNREACH",
  "EHOSTUNREACH",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
  "ERR_STREAM_PREMATURE_CLOSE",
]);
/** An https attempt that met no TLS server: dropped, or plain HTTP spoken back. */
const NOT_TLS: ReadonlySet<string> = new Set([...DROPPED, "ERR_SSL_WRONG_VERSION_NUMBER", "ERR_SSL_PACKET_LENGTH_TOO_LONG", "ERR_SSL_HTTP_REQUEST"]);
const NOT_TLS_MESSAGE = /wrong version number|packet length too long|http request/i;
/** TLS verification failures: OpenSSL's X509 codes and Node's host name check. */
const CERTIFICATE = /CERT|SELF_SIGNED|UNABLE_TO_(GET_ISSUER|VERIFY_LEAF)|HOSTNAME_MISMATCH|INVALID_CA/;

/** The error and its causes, at most five deep. */
function* causeChain(error: unknown): Generator<{ code?: string; message?: string; value: unknown }> {
  let current: unknown = error;
  for (let depth = 0; current && depth < 5; depth++) {
    const { code, message } = current as { code?: unknown; message?: unknown };
    yield { code: typeof code === "string" ? code : undefined, message: typeof message === "string" ? message : undefined, value: current };
    current = (current as { cause?: unknown }).cause;
  }
}

export function describeNetworkError(error: unknown): string {
  const err = error as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const code = err?.code ?? err?.cause?.code;
  // OpenSSL messages end in a newline; a trace or error line must stay one line.
  const message = (err?.cause?.message ?? err?.message ?? String(error)).replace(/\s+/g, " ").trim();
  return code ? `${code}: ${message}` : message;
}

export function networkError(url: string, error: unknown): LlamaOciError {
  const host = safeHost(url);
  if (isCertificateError(error)) {
    return new LlamaOciError("NETWORK", `the TLS certificate of ${host} is not trusted: ${describeNetworkError(error)}`, {
      hint: "if the registry uses a private CA, set NODE_EXTRA_CA_CERTS to its certificate file (PEM)",
      cause: error,
    });
  }
  return new LlamaOciError("NETWORK", `cannot reach ${host}: ${describeNetworkError(error)}`, {
    hint: "check the network, proxy settings (HTTPS_PROXY, NO_PROXY) and the registry address",
    cause: error,
  });
}

function isCertificateError(error: unknown): boolean {
  for (const { code } of causeChain(error)) if (code && CERTIFICATE.test(code)) return true;
  return false;
}

function safeHost(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return "<invalid url>";
  }
}

/** Whether a failure is worth another attempt: dropped or stalled connections, not bad input. */
export function isTransientNetworkError(error: unknown): boolean {
  for (const { code, value } of causeChain(error)) {
    if (code && TRANSIENT.has(code)) return true;
    if (value instanceof LlamaOciError && value.code === "NETWORK") return true;
  }
  return false;
}

/** Whether an https attempt failed because no TLS server answered (nothing listening, or plain HTTP spoken back). */
export function isNotTlsFailure(error: unknown): boolean {
  for (const { code, message } of causeChain(error)) {
    if (code && NOT_TLS.has(code)) return true;
    if (message !== undefined && NOT_TLS_MESSAGE.test(message)) return true;
  }
  return false;
}
