// Preloaded into the measured `llama-oci pull` process (node -r): when it exits, writes its peak resident set size
// and CPU time to the file named by LLAMA_OCI_BENCH_RSS_FILE, as JSON { rss (bytes), userS, systemS }.
const { writeFileSync } = require("node:fs");
process.on("exit", () => {
  const file = process.env.LLAMA_OCI_BENCH_RSS_FILE;
  if (!file) return;
  const usage = process.resourceUsage();
  writeFileSync(file, JSON.stringify({ rss: usage.maxRSS * 1024, userS: usage.userCPUTime / 1e6, systemS: usage.systemCPUTime / 1e6 }));
});
