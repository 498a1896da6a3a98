/**
 * Reranking as llama-server serves it: POST /v1/rerank (and /rerank, /v1/reranking, /reranking) with Jina's body
 * `{ model, query, documents, top_n, return_documents }`, answering `{ model, object: "list", usage, results }`
 * with `{ index, relevance_score }` best first; a body with `texts` instead of `documents` is Hugging Face TEI's
 * shape and gets TEI's answer, an array of `{ index, score }`. The model must be a reranker (rank pooling).
 */
import type { FastifyInstance } from "fastify";
import { badRequest, HttpError } from "./http-errors.js";
import { RERANK_BODY } from "./schemas.js";
import type { ServerParts } from "./server-parts.js";
import { clientGone } from "./streams.js";

type Document = string | { text: string };

interface RerankBody {
  model?: string | null;
  query: string;
  documents?: Document[] | null;
  texts?: string[] | null;
  top_n?: number | null;
  return_documents?: boolean | null;
  return_text?: boolean | null;
}

export const RERANK_PATHS = ["/v1/rerank", "/rerank", "/v1/reranking", "/reranking"] as const;

export function rerankRoutes(app: FastifyInstance, parts: ServerParts): void {
  for (const path of RERANK_PATHS) {
    app.post(path, { schema: { body: RERANK_BODY } }, async (request, reply) => {
      const body = request.body as RerankBody;
      const tei = body.texts != null;
      const documents = (tei ? body.texts! : (body.documents ?? [])).map((d) => (typeof d === "string" ? d : d.text));
      const param = tei ? "texts" : "documents";
      if (documents.length === 0) throw badRequest(`${param} must be a non-empty array of strings`, param);
      const signal = clientGone(request, reply);
      const lease = await parts.models.acquire(body.model ?? undefined, signal);
      try {
        const loaded = lease.model;
        const problem = loaded.model.rerankProblem();
        if (problem !== undefined) throw badRequest(`${loaded.name} cannot rerank: ${problem}`, "model");
        const limit = loaded.embedder.limit;
        const inputs: Int32Array[] = [];
        for (const [i, document] of documents.entries()) {
          const tokens = await loaded.model.rerankPrompt(body.query, document);
          if (tokens.length > limit) {
            throw new HttpError(400, `the query and ${param}[${i}] are ${tokens.length} tokens but the reranker takes at most ${limit}`, {
              param: `${param}[${i}]`,
              code: "context_length_exceeded",
            });
          }
          inputs.push(tokens);
        }
        const vectors = await loaded.embedder.embedAll(inputs, signal);
        const promptTokens = inputs.reduce((sum, t) => sum + t.length, 0);
        parts.metrics.promptTokens.inc({ model: loaded.name }, promptTokens);
        const ranked = vectors
          .map((vector, index) => ({ index, score: vector[0] ?? Number.NaN }))
          .sort((a, b) => b.score - a.score || a.index - b.index)
          .slice(0, body.top_n ?? documents.length);
        if (tei) {
          return ranked.map(({ index, score }) => ({ index, score, ...(body.return_text === true ? { text: documents[index] } : {}) }));
        }
        return {
          model: body.model ?? loaded.name,
          object: "list",
          usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
          results: ranked.map(({ index, score }) => ({
            index,
            relevance_score: score,
            ...(body.return_documents === true ? { document: { text: documents[index] } } : {}),
          })),
        };
      } finally {
        lease.release();
      }
    });
  }
}
