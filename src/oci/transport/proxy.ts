/**
 * Which requests go through HTTP_PROXY / HTTPS_PROXY: all but those NO_PROXY exempts (`*`, host names and their
 * subdomains, host:port, IP addresses and CIDR ranges such as 10.0.0.0/8 or fd00::/8) and loopback registries,
 * which never go through a proxy, as with Docker and skopeo.
 */
import { BlockList, isIP } from "node:net";
import { isLoopbackHost } from "../name/index.js";

export interface ProxySettings {
  httpProxy?: string;
  httpsProxy?: string;
  noProxy: NoProxy;
}

export interface NoProxy {
  all: boolean;
  /** Host names (lowercase, no leading dot) with an optional port (0: any). */
  hosts: { host: string; port: number }[];
  addresses: BlockList;
}

const DEFAULT_PORTS: Record<string, number> = { "http:": 80, "https:": 443 };

/** The proxy settings in `env`, lower-case names first as curl reads them. */
export function proxySettings(env: NodeJS.ProcessEnv): ProxySettings {
  const httpProxy = env.http_proxy || env.HTTP_PROXY || undefined;
  const httpsProxy = env.https_proxy || env.HTTPS_PROXY || httpProxy;
  return { httpProxy, httpsProxy, noProxy: parseNoProxy(env.no_proxy ?? env.NO_PROXY ?? "") };
}

export function parseNoProxy(value: string): NoProxy {
  const rules: NoProxy = { all: false, hosts: [], addresses: new BlockList() };
  for (const raw of value.split(/[,\s]+/)) {
    const entry = raw.trim().toLowerCase();
    if (entry === "") continue;
    if (entry === "*") {
      rules.all = true;
      continue;
    }
    const slash = entry.indexOf("/");
    if (slash !== -1) {
      const address = stripBrackets(entry.slice(0, slash));
      const prefix = Number(entry.slice(slash + 1));
      const family = isIP(address);
      if (family !== 0 && Number.isInteger(prefix) && prefix >= 0 && prefix <= (family === 4 ? 32 : 128)) {
        rules.addresses.addSubnet(address, prefix, family === 4 ? "ipv4" : "ipv6");
      }
      continue;
    }
    const bare = stripBrackets(entry);
    if (isIP(bare) !== 0) {
      rules.addresses.addAddress(bare, isIP(bare) === 4 ? "ipv4" : "ipv6");
      continue;
    }
    const match = /^(.+):(\d+)$/.exec(entry);
    const host = (match ? match[1]! : entry).replace(/^\*?\./, "");
    const port = match ? Number(match[2]) : 0;
    if (isIP(stripBrackets(host)) !== 0 && port !== 0) {
      // An address with a port: keep it as a host rule so the port is honoured.
      rules.hosts.push({ host: stripBrackets(host), port });
    } else {
      rules.hosts.push({ host, port });
    }
  }
  return rules;
}

/** Whether a request to `url` goes straight to its origin. */
export function bypassesProxy(url: URL, rules: NoProxy): boolean {
  if (isLoopbackHost(url.host)) return true;
  if (rules.all) return true;
  const host = stripBrackets(url.hostname.toLowerCase());
  const port = Number(url.port) || DEFAULT_PORTS[url.protocol] || 0;
  const family = isIP(host);
  if (family !== 0 && rules.addresses.check(host, family === 4 ? "ipv4" : "ipv6")) return true;
  return rules.hosts.some((rule) => (rule.port === 0 || rule.port === port) && (host === rule.host || host.endsWith(`.${rule.host}`)));
}

function stripBrackets(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}
