// The sampler chain for one generation, built from NativeSamplingOptions with llama.cpp's samplers, in the order
// llama.cpp's common_sampler builds them, and its grammar applied lazily as common_sampler applies it.
#pragma once

#include <napi.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "llama.h"
#include "model.h"
#include "token-tree.h"

namespace llama_oci {

struct SamplingOptions {
  float temperature = 0.8f;
  int32_t topK = 40;
  float topP = 0.95f;
  float minP = 0.05f;
  float typicalP = 1.0f;        // 1 = off
  float topNSigma = -1.0f;      // <= 0 = off
  float xtcProbability = 0.0f;  // 0 = off
  float xtcThreshold = 0.1f;    // > 0.5 = off
  float repeatPenalty = 1.0f;
  int32_t repeatLastN = 64;
  float frequencyPenalty = 0.0f;
  float presencePenalty = 0.0f;
  float dryMultiplier = 0.0f;  // 0 = off
  float dryBase = 1.75f;
  int32_t dryAllowedLength = 2;
  int32_t dryPenaltyLastN = 64;  // -1 = the whole context
  std::vector<std::string> drySequenceBreakers = {"\n", ":", "\"", "*"};
  int32_t mirostat = 0;  // 0 = off, 1 = Mirostat, 2 = Mirostat 2.0
  float mirostatTau = 5.0f;
  float mirostatEta = 0.1f;
  std::vector<llama_logit_bias> logitBias;
  uint32_t seed = LLAMA_DEFAULT_SEED;
  bool hasGrammar = false;
  std::string grammar;
  std::string grammarRoot = "root";
  // Apply the grammar to every candidate before the chain instead of checking only the sampled token (slower; the
  // same tokens when greedy). Tests and benchmarks compare the two.
  bool grammarFirst = false;
  // Constrain the whole vocabulary through the model's TokenTree (false: every token, as llama.cpp does). Same tokens.
  bool grammarTree = true;
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

// Reads NativeSamplingOptions (JS thread); missing fields keep the defaults above. Throws Napi::TypeError or
// Napi::RangeError naming the field that is wrong (logit-bias tokens are checked against the vocabulary by Sampler).
SamplingOptions ReadSamplingOptions(const Napi::Object& object);

// The model's token tree when `options` have a grammar the Sampler can check through it (built on first use), else
// null: a generation without one never pays for building it.
const TokenTree* TokenTreeFor(ModelHandle& model, const SamplingOptions& options);

struct SamplerDeleter {
  void operator()(llama_sampler* sampler) const { llama_sampler_free(sampler); }
};

class Sampler {
 public:
  // Builds common_sampler's chain: logit bias -> penalties -> DRY -> top-n-sigma -> top-k -> typical-p -> top-p ->
  // min-p -> XTC -> temperature -> dist(seed); with Mirostat: logit bias -> temperature -> mirostat. Samplers that
  // are off are left out, and temperature <= 0 is greedy. Throws std::runtime_error with llama.cpp's parse error for
  // an invalid grammar, and for a logit-bias token outside the vocabulary. With `tokens` (the model's TokenTree), a
  // rejected choice constrains the vocabulary through the tree: the same tokens, far fewer of them checked.
  Sampler(const llama_vocab* vocab, const SamplingOptions& options, uint32_t contextSize,
          const TokenTree* tokens = nullptr);

  // Feeds a prompt token to the chain's history (penalties, DRY), not to the grammar, which constrains the output.
  void AcceptPrompt(llama_token token);
  // Samples from the logits of the token at `index` of the last decoded batch (-1: its last output) and records the
  // choice in the chain and the grammar. With a grammar, the chain samples first and only that token is checked
  // against the grammar; only when the grammar rejects it are all candidates constrained and sampled again.
  // Throws std::runtime_error when the grammar allows no token at all.
  llama_token Sample(llama_context* ctx, int32_t index = -1);

  // How often the grammar rejected the first choice and the whole vocabulary was constrained and sampled again.
  uint64_t resamples() const { return resamples_; }
  // Whether `token` is written out as its text although special (one of the preserved tokens).
  bool RendersSpecial(llama_token token) const { return preserved_.count(token) != 0; }

 private:
  void SetLogits(llama_context* ctx, int32_t index);
  // The grammar's verdict on every candidate (rejected ones get -inf), through the token tree when it can be used.
  void ConstrainAll(llama_sampler* grammar);
  void AcceptIntoGrammar(llama_token token);
  // After a rejection: points the candidates at the best scanTop_ tokens the grammar allows, best first; false when
  // that cannot be told from the best few hundred candidates.
  bool ScanTopAllowed(llama_sampler* grammar);
  llama_token Selected() const;
  bool GrammarApplies() const;

  // The samplers that change each logit on its own (logit bias, penalties, DRY), then the rest of the chain.
  std::unique_ptr<llama_sampler, SamplerDeleter> pointwise_;
  std::unique_ptr<llama_sampler, SamplerDeleter> chain_;
  std::unique_ptr<llama_sampler, SamplerDeleter> grammar_;
  // With thinking tags and a lazy grammar, the reasoning tracker runs beside the grammar (as llama.cpp's
  // common_sampler does): the grammar neither applies nor sees tokens while the model thinks.
  std::unique_ptr<llama_sampler, SamplerDeleter> reasoning_;
  std::set<llama_token> preserved_;
  bool grammarFirst_ = false;
  int32_t vocabSize_ = 0;
  std::vector<llama_token_data> candidates_;
  llama_token_data_array array_{nullptr, 0, -1, false};
  uint64_t resamples_ = 0;
  // The token tree, for an eager grammar without a thinking tracker (a lazy grammar replays buffered text when it
  // triggers, so what it has read is not known here); utf8_ follows the text the grammar accepted.
  const TokenTree* tree_ = nullptr;
  TreeScratch scratch_;
  // How many of the best allowed tokens the chain keeps after a rejection (greedy 1, top-k k; 0: no scan).
  size_t scanTop_ = 0;
  std::vector<llama_token_data> order_;
  std::vector<llama_token_data> probe_;
  std::vector<llama_token_data> subset_;
  Utf8State utf8_;
};

}  // namespace llama_oci
