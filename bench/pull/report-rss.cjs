// Preloaded into the measured `llama-oci pull` process (node -r): writes its peak resident set size (bytes)
// to the file named by LLAMA_OCI_BENCH_RSS_FILE when it exits.
const { writeFileSync } = require("node:fs");
process.on("exit", () => {
  const file = process.env.LLAMA_OCI_BENCH_RSS_FILE;
  if (file) writeFileSync(file, String(process.resourceUsage().maxRSS * 1024));
});
