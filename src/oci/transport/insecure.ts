/**
 * Which registries may be reached over plain HTTP: loopback ones (as Docker allows) and the ones the user lists
 * with --insecure-registry / LLAMA_OCI_INSECURE_REGISTRIES. For those, HTTPS is still tried first. Entries and
 * registries are compared in name/host.ts's canonical form, so case never matters.
 */
import { LlamaOciError } from "../../errors.js";
import { isLoopbackHost, parseHostPort } from "../name/index.js";

export const INSECURE_ENV = "LLAMA_OCI_INSECURE_REGISTRIES";

/**
 * Entries are host[:port], optionally written as a URL (scheme and path are dropped); an entry without a port
 * matches every port of that host. An entry that is no host[:port] is an error naming it.
 */
export function parseInsecureList(value: string | undefined, source = INSECURE_ENV): string[] {
  const entries: string[] = [];
  for (const raw of (value ?? "").split(",")) {
    const trimmed = raw.trim().replace(/^[a-z][a-z0-9+.-]*:\/\//i, "").replace(/\/.*$/, "");
    if (trimmed === "") continue;
    const parsed = parseHostPort(trimmed);
    if (!parsed) {
      throw new LlamaOciError("INVALID_ARGUMENT", `invalid ${source} entry ${JSON.stringify(raw.trim())}: it is not a registry host[:port]`, {
        hint: "list registries as host or host:port, e.g. registry.example.com:5000",
      });
    }
    if (!entries.includes(parsed.hostPort)) entries.push(parsed.hostPort);
  }
  return entries;
}

export function allowsPlainHttp(hostPort: string, insecure: readonly string[]): boolean {
  if (isLoopbackHost(hostPort)) return true;
  const target = parseHostPort(hostPort);
  if (!target) return false;
  return insecure.some((entry) => {
    const listed = parseHostPort(entry);
    return listed !== undefined && listed.host === target.host && (listed.port === undefined || listed.port === target.port);
  });
}
