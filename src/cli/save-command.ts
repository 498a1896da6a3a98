/** `llama-oci save <ref> oci:<dir>[:<tag>]`: write a cached model into an OCI image layout folder. */
import { parseArgs } from "node:util";
import { isLayoutReference, saveModel } from "../oci/layout/index.js";
import type { CliContext } from "./context.js";
import { jsonOutput, UsageError } from "./output.js";
import { formatSize } from "./human-format.js";

export const SAVE_USAGE = `Usage: llama-oci save <reference> oci:<dir>[:<tag>] [options]

Write a cached model (its manifest, config and every layer) into an OCI image layout folder, to carry it to a
machine without network on a disk: 'llama-oci pull oci:<dir>:<tag>' there (or 'skopeo copy oci:<dir>:<tag> ...')
reads it back, verified. An existing layout keeps its other models; the same tag is replaced.

  <reference>                 a cached name, repository@digest or model ID
  oci:<dir>[:<tag>]           the folder, and the name of the model in it (default: the reference's tag)

Options:
  --cache-dir <dir>           cache root (default: $LLAMA_CACHE, $XDG_CACHE_HOME/llama.cpp, ~/.cache/llama.cpp)
  --json                      print the result as JSON
  -h, --help                  show this help`;

export async function saveCommand(argv: string[], cli: CliContext): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { "cache-dir": { type: "string" }, json: { type: "boolean" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    cli.stdout.write(`${SAVE_USAGE}\n`);
    return 0;
  }
  if (positionals.length !== 2) throw new UsageError(`save takes a reference and an oci:<dir>[:<tag>] target (got ${positionals.length} arguments)`);
  const [reference, target] = positionals as [string, string];
  if (!isLayoutReference(target)) throw new UsageError(`the target must be oci:<dir>[:<tag>] (got ${JSON.stringify(target)})`);
  const result = await saveModel(reference, target, { cacheDir: values["cache-dir"], env: cli.env });
  cli.stdout.write(values.json ? jsonOutput(result) : `oci:${result.dir}:${result.tag} (${result.digest}, ${formatSize(result.bytesWritten)} written)\n`);
  return 0;
}
