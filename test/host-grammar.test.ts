// One host[:port] grammar and one case rule (src/oci/name/host.ts): a registry spelled with capitals in a
// reference is the same registry for mirrors, the insecure-registry list, credentials and the cache.
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { LlamaOciError } from "../src/errors.js";
import { resolveCredentials, credentialKey } from "../src/oci/authn/index.js";
import { parseHostPort, parseReference, registryName } from "../src/oci/name/index.js";
import { parseRegistryMirrors, pullEndpoints } from "../src/oci/remote/index.js";
import { allowsPlainHttp, parseInsecureList } from "../src/oci/transport/index.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

describe("the host[:port] grammar", () => {
  it.each([
    ["Registry.Example.com:5000", "registry.example.com:5000"],
    ["[FD00::1]:5000", "[fd00::1]:5000"],
    ["LOCALHOST", "localhost"],
    ["127.0.0.1:5000", "127.0.0.1:5000"],
  ])("canonicalizes %s to %s", (input, canonical) => {
    expect(parseHostPort(input)?.hostPort).toBe(canonical);
    expect(registryName(input)).toBe(canonical);
  });

  it.each(["", "host:", "host:80a", "-bad.example", "bad-.example", "a..b", "[::1", "[zz::1]", "host/path", "host name"])(
    "rejects %j",
    (input) => {
      expect(parseHostPort(input)).toBeUndefined();
    },
  );

  it("folds every Docker Hub name, in any case, into docker.io", () => {
    for (const name of ["docker.io", "Docker.IO", "index.docker.io", "REGISTRY-1.docker.io"]) expect(registryName(name)).toBe("docker.io");
    expect(parseReference("Index.Docker.io/ai/smollm2").registry).toBe("docker.io");
    expect(credentialKey("Registry-1.Docker.io")).toBe("https://index.docker.io/v1/");
  });

  it("keeps a bare label that only its capitals mark as a registry, so the name still parses back the same", () => {
    const ref = parseReference("Foo/bar");
    expect(ref.registry).toBe("Foo");
    expect(parseReference(`${ref.registry}/${ref.repository}:${ref.tag!}`)).toEqual(ref);
  });

  it("refuses an insecure-registry entry that is no host[:port], naming it", () => {
    const error = (() => {
      try {
        parseInsecureList("good.example, bad host:5000");
      } catch (e) {
        return e as LlamaOciError;
      }
      throw new Error("accepted");
    })();
    expect(error.code).toBe("INVALID_ARGUMENT");
    expect(error.message).toContain('"bad host:5000"');
  });
});

describe("a reference spelled with capitals", () => {
  let root: string;
  beforeEach(async () => {
    root = await makeTempDir("llama-oci-host-case");
  });
  afterEach(async () => {
    await removeDir(root);
  });

  it("gets the mirror, the insecure-registry entry and the credentials configured in lowercase (and vice versa)", async () => {
    const ref = parseReference("Registry.Example.com:5000/team/model:v1");
    expect(ref.registry).toBe("registry.example.com:5000");
    expect(ref.apiHost).toBe("registry.example.com:5000");

    for (const key of ["registry.example.com:5000", "REGISTRY.EXAMPLE.COM:5000"]) {
      const endpoints = pullEndpoints(ref, parseRegistryMirrors([`${key}=https://mirror.example.net`], "test"));
      expect(endpoints.map((e) => e.kind)).toEqual(["mirror", "origin"]);
      expect(endpoints[0]!.label).toBe("https://mirror.example.net");
    }

    expect(allowsPlainHttp(ref.apiHost, parseInsecureList("registry.example.com:5000"))).toBe(true);
    expect(allowsPlainHttp(ref.apiHost, parseInsecureList("http://REGISTRY.example.COM/"))).toBe(true);
    expect(allowsPlainHttp("Registry.Example.com:5000", parseInsecureList("registry.example.com:5000"))).toBe(true);

    // `docker login Registry.Example.com:5000` may have stored the key as typed; a helper may be keyed either way.
    const home = join(root, "home");
    const bin = join(root, "bin");
    await mkdir(join(home, ".docker"), { recursive: true });
    await mkdir(bin, { recursive: true });
    const auth = Buffer.from("typed-user:typed-pass").toString("base64");
    await writeFile(join(home, ".docker", "config.json"), JSON.stringify({ auths: { "Registry.Example.com:5000": { auth } } }));
    const env = { HOME: home, PATH: `${bin}:${process.env.PATH ?? "/usr/bin:/bin"}` };
    const logger = { debugEnabled: false, warn: () => {}, debug: () => {} };
    expect(await resolveCredentials(ref.registry, { env, logger })).toMatchObject({ kind: "basic", username: "typed-user" });

    const helper = join(bin, "docker-credential-upper");
    await writeFile(helper, `#!/bin/sh\nread url\nprintf '{"ServerURL":"%s","Username":"helper-user","Secret":"s"}' "$url"\n`);
    await chmod(helper, 0o755);
    await writeFile(join(home, ".docker", "config.json"), JSON.stringify({ credHelpers: { "REGISTRY.example.com:5000": "upper" } }));
    expect(await resolveCredentials(ref.registry, { env, logger })).toMatchObject({ kind: "basic", username: "helper-user" });
  });
});
