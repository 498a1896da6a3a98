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

export async function makeSelfSignedCert(commonName = "127.0.0.1"): Promise<SelfSignedCert> {
  const dir = await makeTempDir("llama-oci-tls");
  const certPath = join(dir, "cert.pem");
  const keyPath = join(dir, "key.pem");
  try {
    await run("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", keyPath, "-out", certPath, "-days", "2", "-subj", `/CN=${commonName}`,
      "-addext", "subjectAltName=IP:127.0.0.1",
      "-addext", "basicConstraints=critical,CA:TRUE",
    ]);
  } catch (error) {
    await removeDir(dir);
    throw error;
  }
  return { certPath, keyPath, remove: () => removeDir(dir) };
}
