/** `llama-oci prune`: delete what no tag uses and stale partial downloads; prints each item and the total. */
import { parseArgs } from "node:util";
import { pruneCache, type PrunedKind } from "../oci/cache/index.js";
import { formatSize } from "./human-format.js";
import { UsageError } from "./output.js";
import type { CliContext } from "./context.js";

export const PRUNE_USAGE = `Usage: llama-oci prune [options]

Delete from the cache what no tag uses (models, manifests, blobs, e.g. after 'rm' was interrupted or a tag was
pulled again and now points to a newer model), partial downloads untouched for 7 days, and locks left by
processes that died.

Options:
  --dry-run          list what would be deleted, delete nothing
  --cache-dir <dir>  cache root (default: $LLAMA_CACHE, $XDG_CACHE_HOME/llama.cpp, ~/.cache/llama.cpp)
  -h, --help         show this help`;

const KIND_NAMES: Record<PrunedKind, string> = {
  model: "model",
  manifest: "manifest",
  blob: "blob",
  lock: "stale lock",
  partial: "partial download",
};

export async function pruneCommand(argv: string[], cli: CliContext): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      "dry-run": { type: "boolean" },
      "cache-dir": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    cli.stdout.write(`${PRUNE_USAGE}\n`);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`prune takes no arguments (got ${positionals.join(" ")})`);
  const result = await pruneCache({ cacheDir: values["cache-dir"], dryRun: values["dry-run"], env: cli.env });
  const verb = result.dryRun ? "Would delete" : "Deleted";
  for (const item of result.items) {
    cli.stdout.write(`${verb} ${KIND_NAMES[item.kind]}: ${item.digest}${item.size > 0 ? ` (${formatSize(item.size)})` : ""}\n`);
  }
  if (result.kept.length > 0) {
    cli.stderr.write(`note: ${result.kept.length} unused blob(s) newer than 7 days kept because a pull is running; prune again later\n`);
  }
  const total = result.dryRun ? "Total space that would be reclaimed" : "Total reclaimed space";
  cli.stdout.write(`${total}: ${formatSize(result.freedBytes)}\n`);
  return 0;
}
