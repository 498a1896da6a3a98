/**
 * Per-registry TLS, as Docker and podman read it: in `/etc/docker/certs.d/<host[:port]>/`,
 * `/etc/containers/certs.d/<host[:port]>/` and `$HOME/.config/containers/certs.d/<host[:port]>/`, `*.crt` files are
 * extra CA certificates for that registry (added to the default ones) and each `<name>.cert` with its `<name>.key` a
 * client certificate to present.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { rootCertificates } from "node:tls";
import { LlamaOciError } from "../../errors.js";

export interface RegistryTls {
  /** The default CAs plus the registry's own; absent when it has none. */
  ca?: string[];
  cert?: string;
  key?: string;
  /** The folders that were read, for traces. */
  sources: string[];
}

/** The certs.d folders searched, in order; a later one adds to an earlier one. */
export function certsDirs(env: NodeJS.ProcessEnv): string[] {
  const home = env.HOME || homedir();
  return ["/etc/docker/certs.d", "/etc/containers/certs.d", join(home, ".config", "containers", "certs.d")];
}

/** The TLS settings certs.d holds for `hostPort` (as in the URL: host[:port], IPv6 in brackets), or undefined. */
export function registryTls(hostPort: string, env: NodeJS.ProcessEnv): RegistryTls | undefined {
  const cas: string[] = [];
  let pair: { cert: string; key: string } | undefined;
  const sources: string[] = [];
  for (const root of certsDirs(env)) {
    const dir = join(root, hostPort);
    let names: string[];
    try {
      names = readdirSync(dir).sort();
    } catch {
      continue;
    }
    sources.push(dir);
    for (const name of names) {
      const path = join(dir, name);
      if (name.endsWith(".crt")) cas.push(read(path));
      if (name.endsWith(".cert")) {
        const keyPath = join(dir, `${name.slice(0, -".cert".length)}.key`);
        if (!existsSync(keyPath)) {
          throw new LlamaOciError("INVALID_ARGUMENT", `client certificate ${path} has no key beside it (${keyPath})`, {
            hint: "put the certificate's private key next to it as <name>.key, or remove the .cert file",
          });
        }
        pair ??= { cert: read(path), key: read(keyPath) };
      }
    }
  }
  if (sources.length === 0 || (cas.length === 0 && !pair)) return undefined;
  const tls: RegistryTls = { sources };
  if (cas.length > 0) tls.ca = [...rootCertificates, ...extraCertificates(env), ...cas];
  if (pair) Object.assign(tls, pair);
  return tls;
}

/** NODE_EXTRA_CA_CERTS, which an explicit `ca` list would otherwise drop. */
function extraCertificates(env: NodeJS.ProcessEnv): string[] {
  const file = env.NODE_EXTRA_CA_CERTS;
  if (!file) return [];
  try {
    return [readFileSync(file, "utf8")];
  } catch {
    return [];
  }
}

function read(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    throw new LlamaOciError("INVALID_ARGUMENT", `cannot read ${path}: ${(error as Error).message}`, {
      hint: "check the file's permissions in the certs.d folder",
    });
  }
}
