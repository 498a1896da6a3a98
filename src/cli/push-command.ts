/** `llama-oci push <ref>`: upload a cached model to its registry; progress on stderr, <ref>@<digest> on stdout. */
import { parseArgs } from "node:util";
import { pushModel } from "../oci/push.js";
import { UsageError, jsonOutput } from "./output.js";
import type { CliContext } from "./context.js";
import { REGISTRY_FLAGS, REGISTRY_USAGE, registryOptions, startReporting } from "./registry-io.js";

export const PUSH_USAGE = `Usage: llama-oci push <reference> [options]

Upload a cached model (packaged, pulled or tagged) to the registry its reference names. Blobs the registry has
are skipped, blobs in another repository of the same registry are mounted, large blobs go up in chunks.
Credentials come from Docker's configuration, as for pulls ('docker login <registry>'). Prints <reference>@<digest>.

  <reference>                 [registry/]repository[:tag] of a cached model

Options:
${REGISTRY_USAGE}
  -q, --quiet                 no progress output
  --json                      print the whole result as JSON
  -v, --verbose               trace every HTTP exchange on stderr (also LLAMA_OCI_DEBUG=1)
  -h, --help                  show this help`;

export async function pushCommand(argv: string[], cli: CliContext): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { ...REGISTRY_FLAGS, json: { type: "boolean" } },
  });
  if (values.help) {
    cli.stdout.write(`${PUSH_USAGE}\n`);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`push takes exactly one reference (got ${positionals.length})`);

  const { renderer, reporting } = startReporting(cli, values);
  try {
    const result = await pushModel(positionals[0]!, {
      ...registryOptions(values),
      ...reporting,
    });
    renderer.close();
    cli.stdout.write(values.json ? jsonOutput(result) : `${result.reference}@${result.digest}\n`);
    return 0;
  } finally {
    renderer.close();
  }
}
