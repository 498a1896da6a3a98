/**
 * Which registries may be reached over plain HTTP: loopback ones (as Docker allows) and the ones the user lists
 * with --insecure-registry / LLAMA_OCI_INSECURE_REGISTRIES. For those, HTTPS is still tried first.
 */
import { isIP } from "node:net";

export function hostnameOf(hostPort: string): string {
  if (hostPort.startsWith("[")) return hostPort.slice(1, hostPort.indexOf("]"));
  const colon = hostPort.lastIndexOf(":");
  return colon > 0 && hostPort.indexOf(":") === colon ? hostPort.slice(0, colon) : hostPort;
}

export function isLoopbackHost(hostPort: string): boolean {
  const host = hostnameOf(hostPort).toLowerCase();
  if (host === "localhost" || host.endsWith(".localhost")) return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  if (isIP(host) === 6) return host === "::1" || host === "0:0:0:0:0:0:0:1";
  return false;
}

/** Entries are host[:port]; an entry without a port matches every port of that host. */
export function parseInsecureList(value: string | undefined): string[] {
  return (value ?? "")
    .split(",")
    .map((entry) => entry.trim().replace(/^[a-z]+:\/\//i, "").replace(/\/.*$/, "").toLowerCase())
    .filter(Boolean);
}

export function allowsPlainHttp(hostPort: string, insecure: readonly string[]): boolean {
  if (isLoopbackHost(hostPort)) return true;
  const target = hostPort.toLowerCase();
  const host = hostnameOf(target);
  return insecure.some((entry) => entry === target || (!entry.includes(":") && entry === host) || entry === `[${host}]`);
}
