/**
 * A self-signed certificate for https://127.0.0.1 made by `openssl` (subjectAltName IP:127.0.0.1), for a registry
 * served over TLS. Clients trust it only when told to, e.g. with NODE_EXTRA_CA_CERTS=<certPath>.
 */
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { makeTempDir, removeDir } from "./tmp.js";

const run = promisify(execFile);

export interface SelfSignedCert {
  /** PEM certificate; also its own CA. */
  certPath: string;
  /** PEM private key (unencrypted). */
  keyPath: string;
  remove(): Promise<void>;
}

/** `dnsNames` are added to the subjectAltName beside IP:127.0.0.1. */
export async function makeSelfSignedCert(commonName = "127.0.0.1", dnsNames: string[] = []): Promise<SelfSignedCert> {
  const dir = await makeTempDir("llama-oci-tls");
  const certPath = join(dir, "cert.pem");
  const keyPath = join(dir, "key.pem");
  try {
    await run("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", keyPath, "-out", certPath, "-days", "2", "-subj", `/CN=${commonName}`,
      "-addext", `subjectAltName=${["IP:127.0.0.1", ...dnsNames.map((name) => `DNS:${name}`)].join(",")}`,
      "-addext", "basicConstraints=critical,CA:TRUE",
    ]);
  } catch (error) {
    await removeDir(dir);
    throw error;
  }
  return { certPath, keyPath, remove: () => removeDir(dir) };
}

export interface ClientCert {
  /** The CA a registry is told to demand client certificates from. */
  caPath: string;
  /** A client certificate signed by it, and its key. */
  certPath: string;
  keyPath: string;
  remove(): Promise<void>;
}

/** A client-certificate CA and one client certificate it signed, made by `openssl`. */
export async function makeClientCert(): Promise<ClientCert> {
  const dir = await makeTempDir("llama-oci-client-tls");
  const caPath = join(dir, "client-ca.pem");
  const caKey = join(dir, "client-ca.key");
  const certPath = join(dir, "client.cert");
  const keyPath = join(dir, "client.key");
  const csr = join(dir, "client.csr");
  try {
    await run("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", caKey, "-out", caPath, "-days", "2", "-subj", "/CN=test client CA",
      "-addext", "basicConstraints=critical,CA:TRUE",
    ]);
    await run("openssl", ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", keyPath, "-out", csr, "-subj", "/CN=test client"]);
    await run("openssl", ["x509", "-req", "-in", csr, "-CA", caPath, "-CAkey", caKey, "-CAcreateserial", "-out", certPath, "-days", "2"]);
  } catch (error) {
    await removeDir(dir);
    throw error;
  }
  return { caPath, certPath, keyPath, remove: () => removeDir(dir) };
}
