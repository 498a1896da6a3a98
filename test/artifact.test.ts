import { describe, expect, it } from "vitest";
import { LlamaOciError } from "../src/errors.js";
import { modelFiles, safeRelativePath } from "../src/oci/model/index.js";
import { sha256Digest } from "../src/oci/name/index.js";
import { parseManifest, type Descriptor, type ImageManifest } from "../src/oci/model/index.js";

const d = (seed: string) => sha256Digest(Buffer.from(seed));

type LayerSpec = { type: string; seed: string; path?: string; title?: string };

/** Builds the manifest JSON as a registry would send it and parses it, so the tests go through the real parser. */
function manifest(config: string, layers: LayerSpec[], artifactType?: string): ImageManifest {
  const raw = {
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    ...(artifactType ? { artifactType } : {}),
    config: { mediaType: config, digest: d(`config-${config}`), size: 300 },
    layers: layers.map((layer) => {
      const annotations: Record<string, string> = {};
      if (layer.path !== undefined) annotations["org.cncf.model.filepath"] = layer.path;
      if (layer.title !== undefined) annotations["org.opencontainers.image.title"] = layer.title;
      return {
        mediaType: layer.type,
        digest: d(layer.seed),
        size: 1000,
        ...(Object.keys(annotations).length > 0 ? { annotations } : {}),
      };
    }),
  };
  const parsed = parseManifest(Buffer.from(JSON.stringify(raw)), "application/vnd.oci.image.manifest.v1+json");
  if (parsed.kind !== "manifest") throw new Error("expected a manifest");
  return parsed.manifest;
}

/** What a user looks at: kind, file name, shard and which blob lands there. */
function summary(files: { kind: string; filename: string; shard?: { index: number; count: number }; descriptor: Descriptor }[]) {
  return files.map((file) => ({
    kind: file.kind,
    filename: file.filename,
    blob: Object.entries(seeds).find(([, digest]) => digest === file.descriptor.digest)?.[0],
    ...(file.shard ? { shard: `${file.shard.index}/${file.shard.count}` } : {}),
  }));
}
const seeds: Record<string, string> = {};
for (const seed of ["s1", "s2", "s3", "w", "mm", "tpl", "lic", "lic2", "readme", "tok", "st"]) seeds[seed] = d(seed);

function thrown(fn: () => unknown): LlamaOciError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(LlamaOciError);
    return error as LlamaOciError;
  }
  throw new Error("expected an error");
}

const V01 = "application/vnd.docker.ai.model.config.v0.1+json";
const V02 = "application/vnd.docker.ai.model.config.v0.2+json";
const CNCF_CONFIG = "application/vnd.cncf.model.config.v1+json";
const CNCF_MANIFEST = "application/vnd.cncf.model.manifest.v1+json";
const GGUF = "application/vnd.docker.ai.gguf.v3";
const MMPROJ = "application/vnd.docker.ai.mmproj";
const TEMPLATE = "application/vnd.docker.ai.chat.template.jinja";
const LICENSE = "application/vnd.docker.ai.license";
const RAW = "application/vnd.cncf.model.weight.v1.raw";
const DOC = "application/vnd.cncf.model.doc.v1.raw";

describe("modelFiles", () => {
  it("names a single-file v0.1 model by position", () => {
    const result = modelFiles(
      manifest(V01, [
        { type: GGUF, seed: "w" },
        { type: LICENSE, seed: "lic" },
        { type: LICENSE, seed: "lic2" },
        { type: MMPROJ, seed: "mm" },
        { type: TEMPLATE, seed: "tpl" },
      ]),
    );
    expect(result.format).toBe("docker-v0.1");
    expect(summary(result.files)).toEqual([
      { kind: "gguf", filename: "model.gguf", blob: "w" },
      { kind: "license", filename: "LICENSE", blob: "lic" },
      { kind: "license", filename: "LICENSE-2", blob: "lic2" },
      { kind: "mmproj", filename: "mmproj-model.gguf", blob: "mm" },
      { kind: "chat-template", filename: "template.jinja", blob: "tpl" },
    ]);
  });

  it("names a 3-shard v0.1 model as llama.cpp expects, in layer order", () => {
    const result = modelFiles(
      manifest(V01, [
        { type: GGUF, seed: "s1" },
        { type: LICENSE, seed: "lic" },
        { type: GGUF, seed: "s2" },
        { type: GGUF, seed: "s3" },
      ]),
    );
    expect(summary(result.files)).toEqual([
      { kind: "gguf", filename: "model-00001-of-00003.gguf", blob: "s1", shard: "1/3" },
      { kind: "gguf", filename: "model-00002-of-00003.gguf", blob: "s2", shard: "2/3" },
      { kind: "gguf", filename: "model-00003-of-00003.gguf", blob: "s3", shard: "3/3" },
      { kind: "license", filename: "LICENSE", blob: "lic" },
    ]);
  });

  it("keeps v0.2 annotated names and orders shards by their numbers", () => {
    const result = modelFiles(
      manifest(V02, [
        { type: GGUF, seed: "s2", path: "Qwen3-Q4_K_M-00002-of-00003.gguf" },
        { type: GGUF, seed: "s1", path: "Qwen3-Q4_K_M-00001-of-00003.gguf" },
        { type: GGUF, seed: "s3", path: "Qwen3-Q4_K_M-00003-of-00003.gguf" },
        { type: "application/vnd.docker.ai.model.file", seed: "tok", path: "tokenizer.json" },
        { type: TEMPLATE, seed: "tpl", path: "./templates/chat.jinja" },
        { type: LICENSE, seed: "lic", path: "LICENSE.txt" },
      ]),
    );
    expect(result.format).toBe("docker-v0.2");
    expect(summary(result.files)).toEqual([
      { kind: "gguf", filename: "Qwen3-Q4_K_M-00001-of-00003.gguf", blob: "s1", shard: "1/3" },
      { kind: "gguf", filename: "Qwen3-Q4_K_M-00002-of-00003.gguf", blob: "s2", shard: "2/3" },
      { kind: "gguf", filename: "Qwen3-Q4_K_M-00003-of-00003.gguf", blob: "s3", shard: "3/3" },
      { kind: "chat-template", filename: "templates/chat.jinja", blob: "tpl" },
      { kind: "license", filename: "LICENSE.txt", blob: "lic" },
    ]);
  });

  it("keeps a single annotated v0.2 file name", () => {
    const result = modelFiles(manifest(V02, [{ type: GGUF, seed: "w", path: "gguf/SmolLM2-360M-Q4_K_M.gguf" }]));
    expect(summary(result.files)).toEqual([{ kind: "gguf", filename: "gguf/SmolLM2-360M-Q4_K_M.gguf", blob: "w" }]);
  });

  it("renames annotated shards that do not follow llama.cpp's split pattern", () => {
    const result = modelFiles(
      manifest(V02, [
        { type: GGUF, seed: "s1", path: "weights/big-part-a.gguf" },
        { type: GGUF, seed: "s2", path: "weights/big-part-b.gguf" },
      ]),
    );
    expect(summary(result.files)).toEqual([
      { kind: "gguf", filename: "weights/big-part-a-00001-of-00002.gguf", blob: "s1", shard: "1/2" },
      { kind: "gguf", filename: "weights/big-part-a-00002-of-00002.gguf", blob: "s2", shard: "2/2" },
    ]);
  });

  it("renames shards whose numbers do not match the layer count", () => {
    const result = modelFiles(
      manifest(V02, [
        { type: GGUF, seed: "s1", path: "m-00001-of-00004.gguf" },
        { type: GGUF, seed: "s2", path: "m-00002-of-00004.gguf" },
      ]),
    );
    expect(result.files.map((file) => file.filename)).toEqual(["m-00001-of-00002.gguf", "m-00002-of-00002.gguf"]);
  });

  it("renames shards with different prefixes after the first", () => {
    const result = modelFiles(
      manifest(V02, [
        { type: GGUF, seed: "s1", path: "a-00001-of-00002.gguf" },
        { type: GGUF, seed: "s2", path: "b-00002-of-00002.gguf" },
      ]),
    );
    expect(result.files.map((file) => file.filename)).toEqual(["a-00001-of-00002.gguf", "a-00002-of-00002.gguf"]);
  });

  it("puts every shard in the first shard's folder", () => {
    const result = modelFiles(
      manifest(V02, [
        { type: GGUF, seed: "s1", path: "x/m-00001-of-00002.gguf" },
        { type: GGUF, seed: "s2", path: "y/m-00002-of-00002.gguf" },
      ]),
    );
    expect(result.files.map((file) => file.filename)).toEqual(["x/m-00001-of-00002.gguf", "x/m-00002-of-00002.gguf"]);
  });

  it("reads CNCF ModelPack weight.v1.raw layers and finds the projector by name", () => {
    const result = modelFiles(
      manifest(
        CNCF_CONFIG,
        [
          { type: RAW, seed: "mm", path: "mmproj-gemma3-f16.gguf" },
          { type: RAW, seed: "w", path: "gemma3-4b-Q4_K_M.gguf" },
          { type: RAW, seed: "st", path: "model.safetensors" },
          { type: "application/vnd.cncf.model.weight.config.v1.raw", seed: "tok", path: "tokenizer.json" },
          { type: DOC, seed: "readme", path: "README.md" },
          { type: DOC, seed: "lic", path: "LICENSE" },
        ],
        CNCF_MANIFEST,
      ),
    );
    expect(result.format).toBe("cncf-modelpack");
    expect(summary(result.files)).toEqual([
      { kind: "gguf", filename: "gemma3-4b-Q4_K_M.gguf", blob: "w" },
      { kind: "mmproj", filename: "mmproj-gemma3-f16.gguf", blob: "mm" },
      { kind: "license", filename: "LICENSE", blob: "lic" },
    ]);
  });

  it("recognises ModelPack by artifactType alone", () => {
    const result = modelFiles(manifest("application/vnd.oci.empty.v1+json", [{ type: RAW, seed: "w", path: "m.gguf" }], CNCF_MANIFEST));
    expect(result.format).toBe("cncf-modelpack");
  });

  it("reads the legacy DMR weight.v1.gguf type, falling back to the image title", () => {
    const result = modelFiles(
      manifest(CNCF_CONFIG, [{ type: "application/vnd.cncf.model.weight.v1.gguf", seed: "w", title: "llama.gguf" }]),
    );
    expect(result.format).toBe("cncf-modelpack");
    expect(summary(result.files)).toEqual([{ kind: "gguf", filename: "llama.gguf", blob: "w" }]);
  });

  it("prefers org.cncf.model.filepath over the image title", () => {
    const result = modelFiles(manifest(V02, [{ type: GGUF, seed: "w", path: "a.gguf", title: "b.gguf" }]));
    expect(result.files[0]!.filename).toBe("a.gguf");
  });

  it("reads the pre-release Docker types", () => {
    const result = modelFiles(
      manifest("application/vnd.docker.ai.model.config.v1+json", [
        { type: "application/vnd.docker.ai.model.file.v1+gguf", seed: "w" },
        { type: LICENSE, seed: "lic" },
      ]),
    );
    expect(result.format).toBe("docker-pre-release");
    expect(summary(result.files)).toEqual([
      { kind: "gguf", filename: "model.gguf", blob: "w" },
      { kind: "license", filename: "LICENSE", blob: "lic" },
    ]);
  });

  it("accepts both mmproj spellings", () => {
    for (const type of [MMPROJ, "application/vnd.docker.ai.gguf.v3.mmproj"]) {
      const result = modelFiles(manifest(V01, [{ type: GGUF, seed: "w" }, { type, seed: "mm" }]));
      expect(summary(result.files)).toEqual([
        { kind: "gguf", filename: "model.gguf", blob: "w" },
        { kind: "mmproj", filename: "mmproj-model.gguf", blob: "mm" },
      ]);
    }
  });

  it("takes any layer type containing gguf in an unknown artifact, but not a LoRA adapter", () => {
    const result = modelFiles(
      manifest("application/vnd.oci.image.config.v1+json", [
        { type: "application/vnd.example.model.gguf", seed: "w" },
        { type: "application/vnd.docker.ai.gguf.v3.lora", seed: "s2" },
      ]),
    );
    expect(result.format).toBe("generic-gguf");
    expect(summary(result.files)).toEqual([{ kind: "gguf", filename: "model.gguf", blob: "w" }]);
  });

  it("fails with a clear error when there is no GGUF layer", () => {
    const error = thrown(() =>
      modelFiles(
        manifest(CNCF_CONFIG, [
          { type: RAW, seed: "st", path: "model.safetensors" },
          { type: RAW, seed: "mm", path: "mmproj.gguf" },
        ]),
      ),
    );
    expect(error.code).toBe("UNSUPPORTED_ARTIFACT");
    expect(error.message).toMatch(/^no GGUF layer in /);
    expect(error.message).toContain(RAW);
    expect(error.hint).toMatch(/GGUF/);
  });

  it("fails when two layers get the same file name, ignoring case", () => {
    const error = thrown(() =>
      modelFiles(
        manifest(V02, [
          { type: GGUF, seed: "w", path: "model.gguf" },
          { type: LICENSE, seed: "lic", path: "Model.GGUF" },
        ]),
      ),
    );
    expect(error.code).toBe("UNSUPPORTED_ARTIFACT");
    expect(error.message).toMatch(/layer 1 .* and layer 2 .* "Model.GGUF"/);
  });

  it("fails when a file name is also another file's folder", () => {
    const error = thrown(() =>
      modelFiles(
        manifest(V02, [
          { type: GGUF, seed: "w", path: "x" },
          { type: LICENSE, seed: "lic", path: "x/LICENSE" },
        ]),
      ),
    );
    expect(error.message).toMatch(/folder "x"/);
  });

  it.each([
    ["../x.gguf", /leaves the model folder/],
    ["/etc/passwd", /absolute/],
    ["a/../../b.gguf", /leaves the model folder/],
    ["C:\\x.gguf", /backslash|drive/],
    ["C:x.gguf", /drive/],
    ["a//b.gguf", /empty path segment/],
  ])("refuses the layer path %s and names the layer", (path, reason) => {
    const error = thrown(() =>
      modelFiles(
        manifest(V02, [
          { type: GGUF, seed: "w", path: "ok.gguf" },
          { type: GGUF, seed: "s2", path },
        ]),
      ),
    );
    expect(error.code).toBe("UNSUPPORTED_ARTIFACT");
    expect(error.message).toContain(`layer 2 (${d("s2").slice(0, 19)}`);
    expect(error.message).toContain(JSON.stringify(path));
    expect(error.message).toMatch(reason);
  });
});

describe("safeRelativePath", () => {
  it("normalises ./ segments and keeps nested paths", () => {
    expect(safeRelativePath("./model.gguf")).toBe("model.gguf");
    expect(safeRelativePath("a/./b/c.gguf")).toBe("a/b/c.gguf");
    expect(safeRelativePath("..hidden.gguf")).toBe("..hidden.gguf");
  });

  it.each([
    ["../x.gguf"],
    ["/etc/passwd"],
    ["a/../../b.gguf"],
    ["a/../b.gguf"],
    ["C:\\x.gguf"],
    ["c:/x.gguf"],
    ["dir\\x.gguf"],
    ["x.gguf:stream"],
    ["a\u0000.gguf"],
    [""],
    ["."],
    ["a//b"],
    ["a/"],
    ["//server/share/x.gguf"],
  ])("rejects %j", (path) => {
    const error = thrown(() => safeRelativePath(path));
    expect(error.code).toBe("UNSUPPORTED_ARTIFACT");
    expect(error.message).toContain("unsafe file path");
  });
});
