/** What every group of routes gets from the server it is part of. */
import type { FastifyRequest } from "fastify";
import type { ServerMetrics } from "./metrics.js";
import type { ModelManager } from "./models.js";
import type { ResolvedServeOptions } from "./options.js";

export interface ServerParts {
  models: ModelManager;
  metrics: ServerMetrics;
  options: ResolvedServeOptions;
  /** Counts a streamed (hijacked) response in the request metrics once it ends; fastify's onResponse does not see those. */
  recordStream(request: FastifyRequest, status: number): void;
  /** The version /api/version reports. */
  version: string;
}
