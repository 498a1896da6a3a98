/** `llama-oci ls`: the cached models, one row per tag, as `docker model ls` shows them. */
import { parseArgs } from "node:util";
import { listModels } from "../oci/cache/index.js";
import { formatAge, formatSize, formatTable } from "./human-format.js";
import { UsageError, jsonOutput } from "./output.js";
import type { CliContext } from "./context.js";

export const LS_USAGE = `Usage: llama-oci ls [options]

List the models in the cache: one row per tag, newest first. The size counts every file of the model
(all shards, projector, chat template, licenses).

Options:
  --json             print a JSON array: reference, id, digest, size (bytes), pulledAt (ISO 8601), path
  --cache-dir <dir>  cache root (default: $LLAMA_CACHE, $XDG_CACHE_HOME/llama.cpp, ~/.cache/llama.cpp)
  -h, --help         show this help`;

export async function lsCommand(argv: string[], cli: CliContext): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      json: { type: "boolean" },
      "cache-dir": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    cli.stdout.write(`${LS_USAGE}\n`);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`ls takes no arguments (got ${positionals.join(" ")})`);
  const models = await listModels({ cacheDir: values["cache-dir"], env: cli.env });
  if (values.json) {
    cli.stdout.write(jsonOutput(models));
    return 0;
  }
  const now = Date.now();
  const rows = models.map((m) => [m.reference, m.id, formatSize(m.size), formatAge(m.pulledAt, now)]);
  cli.stdout.write(`${formatTable(["MODEL NAME", "MODEL ID", "SIZE", "PULLED"], rows)}\n`);
  return 0;
}
