/**
 * The human-readable form of an InspectResult: `key: value` lines in sections, and a table of the layers. Every value
 * comes from a registry or a model file, so each is made terminal-safe (util/terminal.ts) before it is laid out.
 */
import type { InspectResult } from "../oci/inspect.js";
import { formatParameterCount } from "../oci/model/index.js";
import { shortDigest } from "./progress-format.js";
import { terminalSafe } from "../util/terminal.js";
import { formatSize, formatTable } from "./human-format.js";

/** How much of a chat template the table shows; --json has all of it. */
const TEMPLATE_PREVIEW_CHARS = 60;

export function formatInspect(result: InspectResult): string {
  const out: string[] = [];
  const { gguf, config } = result;

  out.push(
    ...fields([
      ["Reference", result.reference],
      ["ID", result.id],
      ["Digest", result.digest],
      ["Index", result.indexDigest],
      ["Source", describeSource(result)],
      ["Format", result.format],
      ["Size", formatSize(result.size)],
    ]),
  );

  out.push("", terminalSafe(`Manifest (${result.manifest.mediaType}${result.manifest.artifactType ? `, artifact ${result.manifest.artifactType}` : ""})`));
  const rows = [
    ["config", config.mediaType, formatSize(config.size), shortDigest(config.digest), "-"],
    ...result.layers.map((layer, i) => [String(i + 1), layer.mediaType, formatSize(layer.size), shortDigest(layer.digest), layer.filename ?? "-"]),
  ];
  out.push(
    ...formatTable(["LAYER", "MEDIA TYPE", "SIZE", "DIGEST", "FILE"], rows.map((row) => row.map(terminalSafe)))
      .split("\n")
      .map((line) => `  ${line}`),
  );

  const s = config.summary;
  const configLines = fields([
    ["name", s.name],
    ["family", s.family],
    ["format", s.format],
    ["architecture", s.architecture],
    ["parameters", s.parameters],
    ["quantization", s.quantization],
    ["size", s.size],
    ["context size", s.contextSize === undefined ? undefined : String(s.contextSize)],
    ["created", s.created],
    ["gguf metadata", s.gguf ? `${Object.keys(s.gguf).length} keys` : undefined],
  ]);
  out.push("", "Config", ...(configLines.length > 0 ? configLines.map((line) => `  ${line}`) : ["  (no model facts)"]));

  const heads = gguf.headCount === undefined ? undefined : `${gguf.headCount}${gguf.headCountKv === undefined ? "" : ` (${gguf.headCountKv} KV)`}`;
  out.push(
    "",
    "GGUF",
    ...fields([
      ["architecture", gguf.architecture],
      ["name", gguf.name],
      ["parameters", `${formatParameterCount(gguf.parameterCount)} (${gguf.parameterCount})`],
      ["quantization", gguf.quantization === undefined ? undefined : `${gguf.quantization}${describeFileType(result)}`],
      ["tensor type", gguf.dominantTensorType === undefined ? undefined : `${gguf.dominantTensorType} (most parameters)`],
      ["context length", numberText(gguf.contextLength)],
      ["embedding length", numberText(gguf.embeddingLength)],
      ["layers", numberText(gguf.blockCount)],
      ["attention heads", heads],
      ["vocabulary", gguf.vocabularySize === undefined ? undefined : `${gguf.vocabularySize} tokens`],
      ["tensors", String(gguf.tensorCount)],
      ["shards", String(gguf.shards)],
      ["GGUF version", String(gguf.version)],
      ["header size", formatSize(gguf.headerBytes)],
      ["chat template", gguf.chatTemplate === undefined ? "none" : previewTemplate(gguf.chatTemplate)],
    ]).map((line) => `  ${line}`),
  );
  return `${out.join("\n")}\n`;
}

function describeSource(result: InspectResult): string {
  if (result.source === "cache") return `cache${result.pulledAt ? ` (pulled ${result.pulledAt})` : ""}`;
  const weights = result.layers.filter((layer) => layer.kind === "gguf").reduce((sum, layer) => sum + layer.size, 0);
  return `registry (read ${formatSize(result.bytesTransferred)}: the config and the GGUF header of ${formatSize(weights)} of weights)`;
}

function describeFileType(result: InspectResult): string {
  if (result.gguf.fileType !== undefined) return ` (general.file_type ${result.gguf.fileType})`;
  return result.gguf.quantizationGuessed ? " (guessed from the tensor types)" : "";
}

function previewTemplate(template: string): string {
  const flat = template.replace(/\s+/g, " ").trim();
  if (flat.length <= TEMPLATE_PREVIEW_CHARS) return JSON.stringify(flat);
  return `${JSON.stringify(flat.slice(0, TEMPLATE_PREVIEW_CHARS))}… (${template.length} characters; --json shows all)`;
}

function fields(rows: [string, string | undefined][]): string[] {
  const shown = rows.filter((row): row is [string, string] => row[1] !== undefined);
  const width = Math.max(0, ...shown.map(([key]) => key.length + 1));
  return shown.map(([key, value]) => `${`${key}:`.padEnd(width)}  ${terminalSafe(value)}`);
}

function numberText(value: number | undefined): string | undefined {
  return value === undefined ? undefined : String(value);
}
