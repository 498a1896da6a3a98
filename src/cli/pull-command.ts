/** `llama-oci pull <ref>`: progress on stderr; the model path (or --json result) on stdout. */
import { parseArgs } from "node:util";
import { pull } from "../oci/pull.js";
import { UsageError, jsonOutput } from "./output.js";
import type { CliContext } from "./context.js";
import { PULL_FLAGS, PULL_USAGE_LINES, pullOptions, REGISTRY_FLAGS, REGISTRY_USAGE, startReporting } from "./registry-io.js";

export const PULL_USAGE = `Usage: llama-oci pull <reference> [options]

Pull a GGUF model from an OCI registry into the cache and print its path.

  <reference>                 [registry/]repository[:tag|@digest]; a bare name means docker.io/ai/<name>

Options:
${REGISTRY_USAGE}
${PULL_USAGE_LINES}
  -q, --quiet                 no progress output
  --json                      print the whole result as JSON instead of the path
  -v, --verbose               trace every HTTP exchange on stderr (also LLAMA_OCI_DEBUG=1)
  -h, --help                  show this help`;

export async function pullCommand(argv: string[], cli: CliContext): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { ...REGISTRY_FLAGS, ...PULL_FLAGS, json: { type: "boolean" } },
  });
  if (values.help) {
    cli.stdout.write(`${PULL_USAGE}\n`);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`pull takes exactly one reference (got ${positionals.length})`);

  const { renderer, reporting } = startReporting(cli, values);
  try {
    const result = await pull(positionals[0]!, {
      ...pullOptions(values),
      ...reporting,
    });
    renderer.close();
    cli.stdout.write(values.json ? jsonOutput(result) : `${result.path}\n`);
    return 0;
  } finally {
    renderer.close();
  }
}
