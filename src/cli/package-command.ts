/** `llama-oci package`: build a model artifact from local GGUF files into the cache, and push it with --push. */
import { parseArgs } from "node:util";
import { formatMB, shortDigest } from "./progress-format.js";
import { packageModel } from "../oci/package.js";
import { UsageError, jsonOutput } from "./output.js";
import type { CliContext } from "./context.js";
import { REGISTRY_FLAGS, REGISTRY_USAGE, registryOptions, startReporting } from "./registry-io.js";

export const PACKAGE_USAGE = `Usage: llama-oci package --gguf <file> [options] <reference>

Build a model artifact from local files and store it in the cache under <reference>, so that 'pull --offline',
'ls' and 'run' find it; with --push, also upload it. Prints <reference>@<digest>.

  <reference>                 [registry/]repository[:tag] to package to

Options:
  --gguf <file>               the GGUF file, or the first shard (<name>-00001-of-0000N.gguf) of a split model;
                              the other shards are found next to it (required)
  --mmproj <file>             multimodal projector (GGUF)
  --chat-template <file>      chat template (Jinja)
  -l, --license <file>        license file (repeatable)
  --context-size <n>          context size recorded in the config (default: the GGUF's context length)
  --format <docker|cncf>      Docker model artifact v0.1 (default) or CNCF ModelPack
  --push                      also push the artifact to its registry
${REGISTRY_USAGE}
  -q, --quiet                 no progress output
  --json                      print the whole result as JSON
  -v, --verbose               trace every HTTP exchange on stderr (also LLAMA_OCI_DEBUG=1)
  -h, --help                  show this help`;

export async function packageCommand(argv: string[], cli: CliContext): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      gguf: { type: "string" },
      mmproj: { type: "string" },
      "chat-template": { type: "string" },
      license: { type: "string", short: "l", multiple: true },
      "context-size": { type: "string" },
      format: { type: "string" },
      push: { type: "boolean" },
      ...REGISTRY_FLAGS,
      json: { type: "boolean" },
    },
  });
  if (values.help) {
    cli.stdout.write(`${PACKAGE_USAGE}\n`);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`package takes exactly one reference (got ${positionals.length})`);
  if (!values.gguf) throw new UsageError("--gguf <file> is required");
  const format = values.format ?? "docker";
  if (format !== "docker" && format !== "cncf") throw new UsageError(`--format must be docker or cncf (got ${JSON.stringify(format)})`);
  let contextSize: number | undefined;
  if (values["context-size"] !== undefined) {
    contextSize = Number(values["context-size"]);
    if (!/^\d+$/.test(values["context-size"]) || !Number.isSafeInteger(contextSize) || contextSize < 1) {
      throw new UsageError(`--context-size must be a positive integer (got ${JSON.stringify(values["context-size"])})`);
    }
  }

  const { renderer, reporting } = startReporting(cli, values);
  try {
    const result = await packageModel({
      reference: positionals[0]!,
      gguf: values.gguf,
      mmproj: values.mmproj,
      chatTemplate: values["chat-template"],
      licenses: values.license,
      contextSize,
      format: format,
      push: values.push,
      ...registryOptions(values),
      ...reporting,
      onFileAdded: (file) => {
        if (!values.quiet) cli.stderr.write(`${shortDigest(file.digest)}: Added ${file.filename} (${formatMB(file.size)})\n`);
      },
    });
    renderer.close();
    cli.stdout.write(values.json ? jsonOutput(result) : `${result.reference}@${result.digest}\n`);
    return 0;
  } finally {
    renderer.close();
  }
}
