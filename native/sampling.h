// The sampler chain for one generation, built from NativeSamplingOptions with llama.cpp's samplers.
#pragma once

#include <napi.h>

#include <memory>
#include <string>

#include "llama.h"

namespace llama_oci {

struct SamplingOptions {
  float temperature = 0.8f;
  int32_t topK = 40;
  float topP = 0.95f;
  float minP = 0.05f;
  float repeatPenalty = 1.0f;
  int32_t repeatLastN = 64;
  float frequencyPenalty = 0.0f;
  float presencePenalty = 0.0f;
  uint32_t seed = LLAMA_DEFAULT_SEED;
  bool hasGrammar = false;
  std::string grammar;
  std::string grammarRoot = "root";
};

// Reads NativeSamplingOptions (JS thread); missing fields keep the defaults above.
SamplingOptions ReadSamplingOptions(const Napi::Object& object);

struct SamplerDeleter {
  void operator()(llama_sampler* sampler) const { llama_sampler_free(sampler); }
};

class Sampler {
 public:
  // Builds: [grammar] -> penalties -> top-k -> top-p -> min-p -> temperature -> dist(seed), or greedy when
  // temperature <= 0. Throws std::runtime_error with llama.cpp's parse error for an invalid grammar.
  Sampler(const llama_vocab* vocab, const SamplingOptions& options, uint32_t contextSize);

  // Feeds a prompt token to the repetition penalties only (the grammar constrains the output, not the prompt).
  void AcceptPrompt(llama_token token);
  // Samples from the logits of the token at `index` of the last decoded batch (-1: its last output) and records the
  // choice in every sampler.
  llama_token Sample(llama_context* ctx, int32_t index = -1);

 private:
  std::unique_ptr<llama_sampler, SamplerDeleter> chain_;
  llama_sampler* penalties_ = nullptr;  // owned by chain_
};

}  // namespace llama_oci
