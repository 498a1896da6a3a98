/** `llama-oci tag`: give a cached model a second name; prints nothing on success, as `docker tag`. */
import { parseArgs } from "node:util";
import { tagModel } from "../oci/cache/index.js";
import { UsageError } from "./output.js";
import type { CliContext } from "./context.js";

export const TAG_USAGE = `Usage: llama-oci tag <source> <target> [options]

Give a cached model a second name. Afterwards 'llama-oci pull <target> --offline' finds it, 'ls' lists both
names, and removing one name keeps the model for the other. Nothing is downloaded or uploaded.

  <source>           a cached name, repository@digest or model ID
  <target>           the new name: [registry/]repository[:tag]

Options:
  --cache-dir <dir>  cache root (default: $LLAMA_CACHE, $XDG_CACHE_HOME/llama.cpp, ~/.cache/llama.cpp)
  -h, --help         show this help`;

export async function tagCommand(argv: string[], cli: CliContext): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      "cache-dir": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    cli.stdout.write(`${TAG_USAGE}\n`);
    return 0;
  }
  if (positionals.length !== 2) throw new UsageError(`tag takes a source and a target (got ${positionals.length} arguments)`);
  await tagModel(positionals[0]!, positionals[1]!, { cacheDir: values["cache-dir"], env: cli.env });
  return 0;
}
