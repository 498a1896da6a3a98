import { describe, expect, it } from "vitest";
import { LlamaOciError } from "../src/errors.js";
import { digestHex, parseDigest, sha256Digest } from "../src/oci/name/index.js";
import { MAX_MANIFEST_BYTES, parseManifest, selectManifestFromIndex, type ImageIndex } from "../src/oci/model/index.js";
import {
  CNCF_MODEL_MANIFEST,
  DOCKER_GGUF,
  DOCKER_MANIFEST,
  DOCKER_MANIFEST_LIST,
  DOCKER_MODEL_CONFIG_V01,
  MANIFEST_ACCEPT,
  OCI_INDEX,
  OCI_MANIFEST,
} from "../src/oci/model/index.js";

const d = (seed: string) => sha256Digest(Buffer.from(seed));

function body(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

function modelManifest(extra: Record<string, unknown> = {}) {
  return {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: DOCKER_MODEL_CONFIG_V01, digest: d("config"), size: 123 },
    layers: [{ mediaType: DOCKER_GGUF, digest: d("gguf"), size: 4096 }],
    ...extra,
  };
}

function indexOf(manifests: unknown[]) {
  return { schemaVersion: 2, mediaType: OCI_INDEX, manifests };
}

function child(seed: string, extra: Record<string, unknown> = {}) {
  return { mediaType: OCI_MANIFEST, digest: d(seed), size: 500, ...extra };
}

function thrown(fn: () => unknown): LlamaOciError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(LlamaOciError);
    return error as LlamaOciError;
  }
  throw new Error("expected an error");
}

describe("digest", () => {
  it("hashes bytes to a sha256 digest", () => {
    expect(sha256Digest(Buffer.from("abc"))).toBe("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    expect(sha256Digest(new Uint8Array([]))).toBe("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  });

  it("parses sha256 and sha512 digests", () => {
    const hex256 = "a".repeat(64);
    expect(parseDigest(`sha256:${hex256}`)).toEqual({ algorithm: "sha256", hex: hex256 });
    expect(parseDigest(`sha512:${"0".repeat(128)}`)).toEqual({ algorithm: "sha512", hex: "0".repeat(128) });
    expect(digestHex(`sha256:${hex256}`)).toBe(hex256);
  });

  it.each([
    ["uppercase hex", `sha256:${"A".repeat(64)}`],
    ["short hex", `sha256:${"a".repeat(63)}`],
    ["long hex", `sha256:${"a".repeat(65)}`],
    ["sha256 length for sha512", `sha512:${"a".repeat(64)}`],
    ["unknown algorithm", `md5:${"a".repeat(32)}`],
    ["no algorithm", "a".repeat(64)],
    ["path in hex", `sha256:../../${"a".repeat(58)}`],
    ["empty", ""],
  ])("rejects %s", (_, digest) => {
    const error = thrown(() => parseDigest(digest));
    expect(error.code).toBe("INVALID_ARGUMENT");
    expect(error.message).toMatch(/invalid digest/);
  });
});

describe("MANIFEST_ACCEPT", () => {
  it("names the OCI and Docker manifest and index types", () => {
    const types = MANIFEST_ACCEPT.split(",").map((type) => type.trim());
    expect(types.sort()).toEqual([DOCKER_MANIFEST_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST].sort());
  });
});

describe("parseManifest", () => {
  it("parses an OCI image manifest and keeps descriptor fields", () => {
    const raw = modelManifest({
      artifactType: "application/vnd.example+json",
      annotations: { "org.opencontainers.image.created": "2025-01-01T00:00:00Z" },
      layers: [
        {
          mediaType: DOCKER_GGUF,
          digest: d("gguf"),
          size: 4096,
          annotations: { "org.cncf.model.filepath": "model.gguf" },
          urls: ["https://example.test/blob"],
        },
      ],
    });
    const parsed = parseManifest(body(raw), OCI_MANIFEST);
    expect(parsed.kind).toBe("manifest");
    if (parsed.kind !== "manifest") return;
    expect(parsed.mediaType).toBe(OCI_MANIFEST);
    expect(parsed.manifest.config).toEqual({ mediaType: DOCKER_MODEL_CONFIG_V01, digest: d("config"), size: 123 });
    expect(parsed.manifest.layers).toEqual(raw.layers);
    expect(parsed.manifest.artifactType).toBe("application/vnd.example+json");
    expect(parsed.manifest.annotations).toEqual((raw as { annotations?: unknown }).annotations);
  });

  it("ignores Content-Type parameters and case", () => {
    const parsed = parseManifest(body(modelManifest()), "Application/vnd.oci.image.manifest.v1+json; charset=utf-8");
    expect(parsed).toMatchObject({ kind: "manifest", mediaType: OCI_MANIFEST });
  });

  it("takes the kind from Content-Type when the body has no mediaType", () => {
    const { mediaType: _, ...noType } = modelManifest();
    expect(parseManifest(body(noType), `${OCI_MANIFEST};charset=utf-8`)).toMatchObject({ kind: "manifest", mediaType: OCI_MANIFEST });
    const { mediaType: __, ...index } = indexOf([child("a")]);
    expect(parseManifest(body(index), DOCKER_MANIFEST_LIST)).toMatchObject({ kind: "index", mediaType: DOCKER_MANIFEST_LIST });
  });

  it("falls back to the body's shape when neither names a known type", () => {
    const { mediaType: _, ...noType } = modelManifest();
    expect(parseManifest(body(noType), "application/json")).toMatchObject({ kind: "manifest", mediaType: OCI_MANIFEST });
    const { mediaType: __, ...index } = indexOf([child("a")]);
    expect(parseManifest(body(index), undefined)).toMatchObject({ kind: "index", mediaType: OCI_INDEX });
  });

  it("uses the body's mediaType when Content-Type is generic", () => {
    expect(parseManifest(body(indexOf([child("a")])), "application/octet-stream")).toMatchObject({ kind: "index", mediaType: OCI_INDEX });
  });

  it("rejects a body mediaType that disagrees with Content-Type", () => {
    const error = thrown(() => parseManifest(body(modelManifest()), OCI_INDEX));
    expect(error.code).toBe("UNSUPPORTED_ARTIFACT");
    expect(error.message).toContain(OCI_MANIFEST);
    expect(error.message).toContain(OCI_INDEX);
  });

  it("parses a Docker schema 2 manifest", () => {
    const parsed = parseManifest(body(modelManifest({ mediaType: DOCKER_MANIFEST })), DOCKER_MANIFEST);
    expect(parsed).toMatchObject({ kind: "manifest", mediaType: DOCKER_MANIFEST });
  });

  it("rejects schema 1 manifests by Content-Type, mediaType or shape", () => {
    const schema1 = {
      schemaVersion: 1,
      name: "library/busybox",
      tag: "latest",
      architecture: "amd64",
      fsLayers: [{ blobSum: d("layer") }],
      history: [],
    };
    for (const type of [
      "application/vnd.docker.distribution.manifest.v1+prettyjws",
      "application/vnd.docker.distribution.manifest.v1+json",
      undefined,
    ]) {
      const error = thrown(() => parseManifest(body(schema1), type));
      expect(error.code).toBe("UNSUPPORTED_ARTIFACT");
      expect(error.message).toMatch(/schema 1/);
      expect(error.hint).toBeTruthy();
    }
    const { schemaVersion: _, ...noVersion } = schema1;
    expect(thrown(() => parseManifest(body(noVersion), "application/json")).message).toMatch(/schema 1/);
  });

  it("rejects unknown manifest media types", () => {
    const error = thrown(() => parseManifest(body(modelManifest({ mediaType: "application/vnd.oci.artifact.manifest.v1+json" })), undefined));
    expect(error.code).toBe("UNSUPPORTED_ARTIFACT");
    expect(error.message).toContain("application/vnd.oci.artifact.manifest.v1+json");
  });

  it("rejects a document that is neither manifest nor index", () => {
    const error = thrown(() => parseManifest(body({ schemaVersion: 2, hello: "world" }), "application/json"));
    expect(error.message).toMatch(/neither an image manifest nor an image index/);
  });

  it("rejects bodies that are not JSON objects or are too large", () => {
    expect(thrown(() => parseManifest(Buffer.from("<html>login</html>"), "text/html")).message).toMatch(/not valid JSON/);
    expect(thrown(() => parseManifest(Buffer.from("[1,2]"), OCI_MANIFEST)).message).toMatch(/not a JSON object/);
    const huge = Buffer.alloc(MAX_MANIFEST_BYTES + 1, 0x20);
    expect(thrown(() => parseManifest(huge, OCI_MANIFEST)).message).toMatch(/more than/);
  });

  it("requires schemaVersion 2", () => {
    expect(thrown(() => parseManifest(body(modelManifest({ schemaVersion: 3 })), OCI_MANIFEST)).message).toMatch(/schemaVersion 3/);
  });

  it("rejects a manifest type whose body is an index, and the reverse", () => {
    const { mediaType: _, ...index } = indexOf([child("a")]);
    expect(thrown(() => parseManifest(body(index), OCI_MANIFEST)).message).toMatch(/no config.*looks like an image index/);
    const { mediaType: __, ...manifest } = modelManifest();
    expect(thrown(() => parseManifest(body(manifest), OCI_INDEX)).message).toMatch(/no "manifests" list.*looks like an image manifest/);
  });

  it.each([
    ["a bad layer digest", { digest: "sha256:XYZ" }, /layers\[0\].*invalid digest "sha256:XYZ"/],
    ["a missing digest", { digest: undefined }, /layers\[0\] has no digest/],
    ["a negative size", { size: -1 }, /layers\[0\] has size -1/],
    ["a fractional size", { size: 1.5 }, /layers\[0\] has size 1.5/],
    ["a string size", { size: "10" }, /layers\[0\] has size "10"/],
    ["a missing mediaType", { mediaType: undefined }, /layers\[0\] has no mediaType/],
    ["non-string annotations", { annotations: { a: 1 } }, /layers\[0\].annotations\["a"\] is not a string/],
  ])("rejects a descriptor with %s", (_, change, pattern) => {
    const layer = { mediaType: DOCKER_GGUF, digest: d("gguf"), size: 1, ...change };
    const error = thrown(() => parseManifest(body(modelManifest({ layers: [layer] })), OCI_MANIFEST));
    expect(error.code).toBe("UNSUPPORTED_ARTIFACT");
    expect(error.message).toMatch(pattern);
  });

  it("validates the config descriptor and index children", () => {
    const badConfig = modelManifest({ config: { mediaType: DOCKER_MODEL_CONFIG_V01, digest: d("c"), size: -5 } });
    expect(thrown(() => parseManifest(body(badConfig), OCI_MANIFEST)).message).toMatch(/config has size -5/);
    const badChild = indexOf([child("a"), child("b", { digest: "sha256:abc" })]);
    expect(thrown(() => parseManifest(body(badChild), OCI_INDEX)).message).toMatch(/manifests\[1\].*invalid digest/);
  });

  it("parses an index with platforms and artifact types", () => {
    const raw = indexOf([
      child("arm", { platform: { os: "linux", architecture: "arm64", variant: "v8" } }),
      child("model", { artifactType: CNCF_MODEL_MANIFEST }),
    ]);
    const parsed = parseManifest(body(raw), OCI_INDEX);
    expect(parsed.kind).toBe("index");
    if (parsed.kind !== "index") return;
    expect(parsed.index.manifests).toEqual(raw.manifests);
  });
});

describe("selectManifestFromIndex", () => {
  const index = (manifests: ImageIndex["manifests"]): ImageIndex => ({ schemaVersion: 2, manifests });
  const linux = (architecture: string, variant?: string) => ({ os: "linux", architecture, ...(variant ? { variant } : {}) });

  it("prefers a child whose artifactType is a model type", () => {
    const chosen = selectManifestFromIndex(
      index([
        child("amd64", { platform: linux("amd64") }),
        child("model", { artifactType: CNCF_MODEL_MANIFEST }),
      ]),
    );
    expect(chosen.digest).toBe(d("model"));
    const docker = selectManifestFromIndex(
      index([child("amd64", { platform: linux("amd64") }), child("docker", { artifactType: DOCKER_MODEL_CONFIG_V01 })]),
    );
    expect(docker.digest).toBe(d("docker"));
  });

  it("recognises a model child by its org.cncf.model annotations", () => {
    const chosen = selectManifestFromIndex(
      index([child("amd64", { platform: linux("amd64") }), child("model", { annotations: { "org.cncf.model.filepath": "m.gguf" } })]),
    );
    expect(chosen.digest).toBe(d("model"));
  });

  it("takes linux/amd64 among other platforms", () => {
    const chosen = selectManifestFromIndex(
      index([
        child("arm64", { platform: linux("arm64") }),
        child("armv7", { platform: linux("arm", "v7") }),
        child("amd64", { platform: linux("amd64") }),
        child("amd64-second", { platform: linux("amd64") }),
      ]),
    );
    expect(chosen.digest).toBe(d("amd64"));
  });

  it("treats a platform-less child as linux/amd64", () => {
    const chosen = selectManifestFromIndex(index([child("windows", { platform: { os: "windows", architecture: "amd64" } }), child("plain")]));
    expect(chosen.digest).toBe(d("plain"));
  });

  it("skips buildx attestation manifests", () => {
    const attestation = child("att", { annotations: { "vnd.docker.reference.type": "attestation-manifest" } });
    const error = thrown(() => selectManifestFromIndex(index([attestation, child("arm64", { platform: linux("arm64") })])));
    expect(error.code).toBe("UNSUPPORTED_ARTIFACT");
  });

  it("fails listing the platforms when nothing fits", () => {
    const error = thrown(() =>
      selectManifestFromIndex(
        index([
          child("arm64", { platform: linux("arm64") }),
          child("armv7", { platform: linux("arm", "v7") }),
          child("win", { platform: { os: "windows", architecture: "amd64" } }),
        ]),
      ),
    );
    expect(error.code).toBe("UNSUPPORTED_ARTIFACT");
    expect(error.message).toContain("linux/arm64, linux/arm/v7, windows/amd64");
    expect(error.hint).toMatch(/digest/);
  });

  it("fails on an empty index", () => {
    expect(thrown(() => selectManifestFromIndex(index([]))).message).toMatch(/no manifests/);
  });
});
