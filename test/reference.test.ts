import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { LlamaOciError } from "../src/errors.js";
import {
  DEFAULT_NAMESPACE,
  DOCKER_HUB,
  DOCKER_HUB_API_HOST,
  familiarReference,
  formatReference,
  parseReference,
  type Reference,
} from "../src/oci/name/index.js";

interface Vector {
  input: string;
  valid: boolean;
  registry: string | null;
  repository: string | null;
  tag: string | null;
  digest: string | null;
  api_host?: string;
  ai_repository?: string;
  error?: string;
  error_contains?: string;
  source: string;
  note?: string;
}

const { vectors } = JSON.parse(
  readFileSync(new URL("./fixtures/reference-vectors.json", import.meta.url), "utf8"),
) as { vectors: Vector[] };
const validVectors = vectors.filter((v) => v.valid);
const invalidVectors = vectors.filter((v) => !v.valid);

const HEX64 = "0123456789abcdef".repeat(4);
const DIGEST = `sha256:${HEX64}`;

/** The error parseReference throws for `input`; fails the test if it does not throw. */
function parseError(input: string): LlamaOciError {
  try {
    parseReference(input);
  } catch (error) {
    expect(error).toBeInstanceOf(LlamaOciError);
    return error as LlamaOciError;
  }
  throw new Error(`expected ${JSON.stringify(input)} to be rejected`);
}

function label(v: Vector): string {
  return v.input.length > 80 ? `${v.input.slice(0, 77)}...` : v.input;
}

describe("upstream vectors (test/fixtures/reference-vectors.json)", () => {
  it("cover valid and invalid cases from the upstream suites", () => {
    expect(vectors.length).toBeGreaterThanOrEqual(70);
    expect(validVectors.length).toBeGreaterThan(0);
    expect(invalidVectors.length).toBeGreaterThan(0);
    expect(vectors.filter((v) => v.ai_repository !== undefined).length).toBeGreaterThan(0);
    for (const v of vectors) {
      expect(v.source, v.input).toMatch(/\S/);
      if (!v.valid) expect(v.error_contains, v.input).toMatch(/\S/);
    }
  });

  it.each(validVectors.map((v) => [label(v), v] as const))("parses %s", (_, v) => {
    const ref = parseReference(v.input);
    // Docker keeps a registry's case as typed; llama-oci folds it (host names are case-insensitive, and mirrors,
    // the insecure list and credentials compare them so), except for a bare label that only its capitals mark.
    const canonical = (host: string | null | undefined) => (host && /[.:]|^localhost$/i.test(host) ? host.toLowerCase() : host);
    expect(ref.registry).toBe(canonical(v.registry));
    expect(ref.repository).toBe(v.ai_repository ?? v.repository);
    expect(ref.tag).toBe(v.tag ?? undefined);
    expect(ref.digest).toBe(v.digest ?? undefined);
    expect(ref.apiHost).toBe(canonical(v.api_host));
  });

  it.each(invalidVectors.map((v) => [label(v), v] as const))("rejects %s", (_, v) => {
    const error = parseError(v.input);
    expect(error.code).toBe("INVALID_REFERENCE");
    expect(error.message).toContain(v.error_contains);
    expect(error.message).not.toContain("\n");
    expect(error.hint).toContain("ai/smollm2:135M-Q4_0");
  });

  it("round-trips every valid vector through formatReference and familiarReference", () => {
    for (const v of validVectors) {
      const ref = parseReference(v.input);
      expect(parseReference(formatReference(ref)), v.input).toEqual(ref);
      expect(formatReference(parseReference(formatReference(ref))), v.input).toBe(formatReference(ref));
      expect(parseReference(familiarReference(ref)), v.input).toEqual(ref);
    }
  });
});

describe("parseReference: the ai/ default and Docker Hub names", () => {
  it("puts a bare name in ai/ on Docker Hub with tag latest", () => {
    const ref = parseReference("smollm2");
    expect(ref).toEqual({ registry: DOCKER_HUB, repository: "ai/smollm2", tag: "latest", apiHost: DOCKER_HUB_API_HOST });
    expect(formatReference(ref)).toBe("docker.io/ai/smollm2:latest");
    expect(familiarReference(ref)).toBe("ai/smollm2:latest");
    expect(DEFAULT_NAMESPACE).toBe("ai");
  });

  it("keeps an explicit ai/ name and its tag", () => {
    const ref = parseReference("ai/smollm2:135M-Q4_0");
    expect(ref).toEqual({ registry: "docker.io", repository: "ai/smollm2", tag: "135M-Q4_0", apiHost: "registry-1.docker.io" });
    expect(formatReference(ref)).toBe("docker.io/ai/smollm2:135M-Q4_0");
    expect(familiarReference(ref)).toBe("ai/smollm2:135M-Q4_0");
  });

  it("puts docker.io/<name> and index.docker.io/<name> in ai/ too", () => {
    expect(parseReference("docker.io/smollm2:360M").repository).toBe("ai/smollm2");
    expect(parseReference("index.docker.io/smollm2").repository).toBe("ai/smollm2");
  });

  it("keeps an explicit library/ name, and shows it with library/", () => {
    const ref = parseReference("docker.io/library/x");
    expect(ref.repository).toBe("library/x");
    expect(formatReference(ref)).toBe("docker.io/library/x:latest");
    expect(familiarReference(ref)).toBe("library/x:latest");
    expect(parseReference("library/x").repository).toBe("library/x");
  });

  it("maps index.docker.io and registry-1.docker.io to docker.io with the registry-1 API host", () => {
    for (const input of ["index.docker.io/ai/x", "registry-1.docker.io/ai/x", "docker.io/ai/x", "ai/x"]) {
      const ref = parseReference(input);
      expect(ref.registry, input).toBe("docker.io");
      expect(ref.repository, input).toBe("ai/x");
      expect(ref.apiHost, input).toBe("registry-1.docker.io");
      expect(formatReference(ref), input).toBe("docker.io/ai/x:latest");
    }
  });

  it("adds no namespace on other registries", () => {
    expect(parseReference("ghcr.io/model").repository).toBe("model");
    expect(parseReference("localhost:5000/model").repository).toBe("model");
  });
});

describe("parseReference: registries, tags and digests", () => {
  it("keeps a registry with a port and a digest", () => {
    const ref = parseReference(`registry.example.com:5000/team/model@${DIGEST}`);
    expect(ref).toEqual({
      registry: "registry.example.com:5000",
      repository: "team/model",
      digest: DIGEST,
      apiHost: "registry.example.com:5000",
    });
    expect(ref.tag).toBeUndefined();
    expect(formatReference(ref)).toBe(`registry.example.com:5000/team/model@${DIGEST}`);
    expect(familiarReference(ref)).toBe(`registry.example.com:5000/team/model@${DIGEST}`);
  });

  it("keeps only the digest when both a tag and a digest are given", () => {
    const ref = parseReference(`ai/smollm2:135M-Q4_0@${DIGEST}`);
    expect(ref.tag).toBeUndefined();
    expect(ref.digest).toBe(DIGEST);
    expect(formatReference(ref)).toBe(`docker.io/ai/smollm2@${DIGEST}`);
  });

  it("accepts sha512 digests and rejects sha384 as unsupported", () => {
    expect(parseReference(`ai/x@sha512:${"ab".repeat(64)}`).digest).toBe(`sha512:${"ab".repeat(64)}`);
    expect(parseError(`ai/x@sha384:${"ab".repeat(48)}`).message).toContain("unsupported digest algorithm");
  });

  it("accepts IPv6 literals in brackets, with and without a port", () => {
    expect(parseReference("[::1]:5000/team/model:q4")).toMatchObject({ registry: "[::1]:5000", apiHost: "[::1]:5000", tag: "q4" });
    expect(parseReference("[fd00::2]/m").registry).toBe("[fd00::2]");
    expect(parseError("[::1:5000/m").message).toContain("invalid registry host");
  });

  it("takes localhost as a registry only when a path follows", () => {
    expect(parseReference("localhost/m")).toMatchObject({ registry: "localhost", repository: "m" });
    expect(parseReference("localhost:5000")).toMatchObject({ registry: "docker.io", repository: "ai/localhost", tag: "5000" });
  });

  it("rejects a dotted first component that is not a valid host (Docker would read it as a registry-less path)", () => {
    expect(parseError("foo_bar.com/app").message).toBe(
      'invalid reference "foo_bar.com/app": invalid registry host "foo_bar.com"',
    );
  });

  it("accepts a 128-character tag and rejects 129", () => {
    expect(parseReference(`ai/x:${"T".repeat(128)}`).tag).toBe("T".repeat(128));
    expect(parseError(`ai/x:${"T".repeat(129)}`).message).toContain("tag too long (max 128 characters)");
    expect(parseError("ai/x:").message).toContain("tag must not be empty");
    expect(parseError("ai/x:.hidden").message).toContain('invalid tag ".hidden"');
  });

  it("limits the repository path to 255 characters, counting the ai/ it adds but not the registry", () => {
    expect(parseReference(`example.com/${"a".repeat(255)}`).repository).toHaveLength(255);
    expect(parseReference("a".repeat(252)).repository).toBe(`ai/${"a".repeat(252)}`);
    expect(parseError("a".repeat(253)).message).toContain("name too long (max 255 characters)");
  });

  it("rejects a bare 64-hex string but accepts it under docker.io/", () => {
    expect(parseError(HEX64).message).toContain("64-character hexadecimal");
    expect(parseReference(`docker.io/${HEX64}`).repository).toBe(`ai/${HEX64}`);
  });
});

describe("parseReference: error messages", () => {
  it.each([
    ["Foo/Bar", 'invalid reference "Foo/Bar": repository name must be lowercase'],
    ["", 'invalid reference "": repository name must not be empty'],
    [":latest", 'invalid reference ":latest": repository name must not be empty'],
    [`example.com/${"a".repeat(256)}`, "repository name too long (max 255 characters)"],
    ["ai/x@sha256:abc123", "invalid checksum digest length (sha256 takes 64 hex characters, got 6)"],
    [`ai/x@sha256:${HEX64.toUpperCase()}`, "invalid checksum digest format (hex must be lowercase)"],
    ["ai/x@latest", "invalid checksum digest format"],
    ["ai/x@md5:d41d8cd98f00b204e9800998ecf8427e", 'unsupported digest algorithm "md5" (use sha256 or sha512)'],
    ["ai//x", "repository name has an empty path component"],
    ["ai/x-", 'invalid path component "x-"'],
    ["https://hub.docker.com/r/ai/smollm2", 'invalid registry host "https:"'],
    ["ai/smollm2 ", "reference must not contain whitespace"],
  ])("%j -> %s", (input, expected) => {
    const error = parseError(input);
    expect(error.code).toBe("INVALID_REFERENCE");
    expect(error.message).toContain(expected);
    expect(error.hint).toBe("use the form [registry/]repository[:tag|@sha256:digest], e.g. ai/smollm2:135M-Q4_0");
  });

  it("keeps the message on one line and short for hostile input", () => {
    const error = parseError(`ai/x\n${"y".repeat(10_000)}`);
    expect(error.message).not.toContain("\n");
    expect(error.message.length).toBeLessThan(500);
  });

  it("rejects a non-string input with an INVALID_REFERENCE error", () => {
    const error = (() => {
      try {
        parseReference(undefined as unknown as string);
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(LlamaOciError);
    expect((error as LlamaOciError).code).toBe("INVALID_REFERENCE");
  });
});

describe("familiarReference", () => {
  const hub = (repository: string, tag = "latest"): Reference => ({
    registry: DOCKER_HUB,
    repository,
    tag,
    apiHost: DOCKER_HUB_API_HOST,
  });

  it("strips docker.io/ but keeps the namespace", () => {
    expect(familiarReference(hub("ai/smollm2", "135M-Q4_0"))).toBe("ai/smollm2:135M-Q4_0");
    expect(familiarReference(hub("team/sub/model"))).toBe("team/sub/model:latest");
  });

  it("keeps docker.io/ where dropping it would change the meaning", () => {
    expect(familiarReference(hub("my.org/model"))).toBe("docker.io/my.org/model:latest");
    expect(familiarReference(hub("localhost/model"))).toBe("docker.io/localhost/model:latest");
    expect(familiarReference(hub("model"))).toBe("docker.io/model:latest");
    expect(parseReference(familiarReference(parseReference("docker.io/my.org/model"))).registry).toBe("docker.io");
  });

  it("keeps other registries", () => {
    expect(familiarReference(parseReference("ghcr.io/o/m:v1"))).toBe("ghcr.io/o/m:v1");
  });
});
