/** `llama-oci rm`: remove names from the cache, and whatever only they used; prints like `docker rmi`. */
import { parseArgs } from "node:util";
import { removeModels } from "../oci/cache/index.js";
import { formatError, UsageError } from "./output.js";
import type { CliContext } from "./context.js";

export const RM_USAGE = `Usage: llama-oci rm <reference>... [options]

Remove models from the cache. A model's files are deleted only when no other name still uses them.

  <reference>        a name as 'llama-oci ls' shows it (a bare name means docker.io/ai/<name>:latest);
                     repository@digest removes every name of that repository for that content;
                     a model ID (12 or more hex digits) removes the model whatever its names

Options:
  -f, --force        remove a model given by ID even when several names point at it
  --cache-dir <dir>  cache root (default: $LLAMA_CACHE, $XDG_CACHE_HOME/llama.cpp, ~/.cache/llama.cpp)
  -h, --help         show this help`;

export async function rmCommand(argv: string[], cli: CliContext): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      force: { type: "boolean", short: "f" },
      "cache-dir": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    cli.stdout.write(`${RM_USAGE}\n`);
    return 0;
  }
  if (positionals.length === 0) throw new UsageError("rm needs at least one reference");
  const outcomes = await removeModels(positionals, { cacheDir: values["cache-dir"], force: values.force, env: cli.env });
  let failed = false;
  for (const outcome of outcomes) {
    for (const name of outcome.untagged) cli.stdout.write(`Untagged: ${name}\n`);
    for (const digest of outcome.deleted) cli.stdout.write(`Deleted: ${digest}\n`);
    if (outcome.error) {
      failed = true;
      cli.stderr.write(`${formatError(outcome.error)}\n`);
    }
  }
  return failed ? 1 : 0;
}
