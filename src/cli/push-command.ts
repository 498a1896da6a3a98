/** `llama-oci push <ref>`: upload a cached model to its registry; progress on stderr, <ref>@<digest> on stdout. */
import { parseArgs } from "node:util";
import { createProgressRenderer } from "../oci/progress-renderer.js";
import { pushModel } from "../oci/push.js";
import { UsageError } from "./output.js";
import type { CliContext } from "./context.js";

export const PUSH_USAGE = `Usage: llama-oci push <reference> [options]

Upload a cached model (packaged, pulled or tagged) to the registry its reference names. Blobs the registry has
are skipped, blobs in another repository of the same registry are mounted, large blobs go up in chunks.
Credentials come from Docker's configuration, as for pulls ('docker login <registry>'). Prints <reference>@<digest>.

  <reference>                 [registry/]repository[:tag] of a cached model

Options:
  --cache-dir <dir>           cache root (default: $LLAMA_CACHE, $XDG_CACHE_HOME/llama.cpp, ~/.cache/llama.cpp)
  --insecure-registry <host>  allow plain HTTP for this registry (repeatable; also LLAMA_OCI_INSECURE_REGISTRIES)
  -q, --quiet                 no progress output
  --json                      print the whole result as JSON
  -v, --verbose               trace every HTTP exchange on stderr (also LLAMA_OCI_DEBUG=1)
  -h, --help                  show this help`;

export async function pushCommand(argv: string[], cli: CliContext): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      "cache-dir": { type: "string" },
      "insecure-registry": { type: "string", multiple: true },
      quiet: { type: "boolean", short: "q" },
      json: { type: "boolean" },
      verbose: { type: "boolean", short: "v" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    cli.stdout.write(`${PUSH_USAGE}\n`);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`push takes exactly one reference (got ${positionals.length})`);

  const renderer = createProgressRenderer({ stream: cli.stderr, quiet: values.quiet, env: cli.env });
  try {
    const result = await pushModel(positionals[0]!, {
      cacheDir: values["cache-dir"],
      insecureRegistries: values["insecure-registry"],
      verbose: values.verbose || undefined,
      env: cli.env,
      signal: cli.signal,
      onProgress: renderer.onProgress,
      onWarning: (message) => renderer.onProgress({ type: "warning", message }),
      onDebug: (message) => cli.stderr.write(`debug: ${message}\n`),
    });
    renderer.close();
    cli.stdout.write(values.json ? `${JSON.stringify(result, null, 2)}\n` : `${result.reference}@${result.digest}\n`);
    return 0;
  } finally {
    renderer.close();
  }
}
