// NativeContext.embed: one pass over the tokens in an embeddings context, then the pooled vector of sequence 0
// (or the last token's vector when the context does no pooling), optionally L2-normalised; with rank pooling (a
// reranker), the classifier's scores as they are.
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "batch.h"
#include "context.h"
#include "js-args.h"
#include "task.h"

namespace llama_oci {

namespace {

class EmbedTask : public Task {
 public:
  EmbedTask(ContextPtr context, std::vector<llama_token> tokens, bool normalize, AbortFlag abort)
      : context_(std::move(context)), tokens_(std::move(tokens)), normalize_(normalize) {
    stop_.user = std::move(abort);
  }

 protected:
  void Run() override {
    ContextSession session(context_, stop_);
    ContextHandle& context = *context_;
    if (!context.embeddings) throw std::runtime_error("this context was not created with embeddings: true");
    const llama_model* model = context.model->model;
    if (llama_model_has_encoder(model) && llama_model_has_decoder(model)) {
      throw std::runtime_error("embeddings of encoder-decoder models (such as T5) are not supported");
    }
    if (tokens_.empty()) throw std::runtime_error("cannot embed an empty input (pass at least one token)");
    CheckTokens(context.vocab(), tokens_);
    // Pooling needs the whole sequence in one micro-batch.
    const size_t limit = std::min(context.ubatchSize, context.contextSize);
    if (tokens_.size() > limit) {
      throw std::runtime_error("input of " + std::to_string(tokens_.size()) +
                               " tokens does not fit the embedding context's batch of " + std::to_string(limit) +
                               " tokens (raise contextSize, batchSize and ubatchSize)");
    }
    if (session.StopRequested()) throw std::runtime_error("embedding aborted");

    context.ClearMemory();
    const enum llama_pooling_type pooling = llama_pooling_type(context.ctx);
    Batch batch(static_cast<int32_t>(tokens_.size()));
    for (size_t i = 0; i < tokens_.size(); i++) {
      batch.Add(tokens_[i], static_cast<llama_pos>(i), pooling != LLAMA_POOLING_TYPE_NONE || i + 1 == tokens_.size());
    }
    const bool encoderOnly = llama_model_has_encoder(model) && !llama_model_has_decoder(model);
    const int32_t rc = encoderOnly ? llama_encode(context.ctx, batch.get()) : llama_decode(context.ctx, batch.get());
    if (rc != 0) {
      context.ClearMemory();
      if (rc == 2) throw std::runtime_error("embedding aborted");
      throw std::runtime_error("cannot compute the embedding: " + DecodeError(rc));
    }
    const float* values = pooling == LLAMA_POOLING_TYPE_NONE ? llama_get_embeddings_ith(context.ctx, -1)
                                                             : llama_get_embeddings_seq(context.ctx, 0);
    if (values == nullptr) {
      context.ClearMemory();
      throw std::runtime_error("the model returned no embedding for this input");
    }
    const int32_t size = pooling == LLAMA_POOLING_TYPE_RANK ? static_cast<int32_t>(llama_model_n_cls_out(model))
                                                            : llama_model_n_embd_out(model);
    vector_.assign(values, values + size);
    context.ClearMemory();

    // A reranker's (rank pooling) output is its classifier's scores: normalising them would leave only their signs.
    if (normalize_ && pooling != LLAMA_POOLING_TYPE_RANK) {
      double sum = 0;
      for (float v : vector_) sum += static_cast<double>(v) * v;
      const double norm = std::sqrt(sum);
      if (norm > 0) {
        for (float& v : vector_) v = static_cast<float>(v / norm);
      }
    }
  }

  Napi::Value Result(Napi::Env env) override {
    auto array = Napi::Float32Array::New(env, vector_.size());
    std::copy(vector_.begin(), vector_.end(), array.Data());
    return array;
  }

 private:
  ContextPtr context_;
  std::vector<llama_token> tokens_;
  bool normalize_;
  std::vector<float> vector_;
};

}  // namespace

Napi::Promise StartEmbed(Napi::Env env, const ContextPtr& context, std::vector<llama_token> tokens, bool normalize,
                         AbortFlag abort) {
  return Task::Start(env, std::make_unique<EmbedTask>(context, std::move(tokens), normalize, std::move(abort)));
}

}  // namespace llama_oci
