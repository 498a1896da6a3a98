// The sampler chain for one generation, built from NativeSamplingOptions with llama.cpp's samplers.
#pragma once

#include <napi.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

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
  // A tool-call grammar from the chat template (common_chat_params): a lazy one applies from the moment one of its
  // triggers appears in the output; an eager one from the start, after the generation prompt the template already
  // wrote (grammarPrefill), which is fed to the grammar first.
  bool grammarLazy = false;
  struct Trigger {
    std::string type;  // "token", "word", "pattern", "patternFull"
    std::string value;
  };
  std::vector<Trigger> grammarTriggers;
  std::string grammarPrefill;
  // Thinking tags: a lazy grammar is off while the model thinks, so a trigger inside the thoughts is not a call.
  std::string thinkingStart;
  std::vector<std::string> thinkingEnd;
  // Words that are single tokens and must come out as text even when special (tool-call markers).
  std::vector<std::string> preservedTokens;
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
  // Whether `token` is written out as its text although special (one of the preserved tokens).
  bool RendersSpecial(llama_token token) const { return preserved_.count(token) != 0; }

 private:
  llama_token SampleWithReasoning(llama_context* ctx, int32_t index);
  bool GrammarApplies() const;

  const llama_vocab* vocab_;
  std::unique_ptr<llama_sampler, SamplerDeleter> chain_;
  llama_sampler* penalties_ = nullptr;  // owned by chain_
  // With thinking tags and a lazy grammar, the grammar and the reasoning tracker run beside the chain (as
  // llama.cpp's common_sampler does): the grammar neither applies nor sees tokens while the model thinks.
  std::unique_ptr<llama_sampler, SamplerDeleter> grammar_;
  std::unique_ptr<llama_sampler, SamplerDeleter> reasoning_;
  std::vector<llama_token_data> candidates_;
  std::set<llama_token> preserved_;
};

}  // namespace llama_oci
