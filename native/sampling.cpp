#include "sampling.h"

#include <stdexcept>

#include "js-args.h"
#include "log.h"

namespace llama_oci {

SamplingOptions ReadSamplingOptions(const Napi::Object& object) {
  SamplingOptions options;
  options.temperature = static_cast<float>(NumberField(object, "temperature", options.temperature));
  options.topK = IntField(object, "topK", options.topK);
  options.topP = static_cast<float>(NumberField(object, "topP", options.topP));
  options.minP = static_cast<float>(NumberField(object, "minP", options.minP));
  options.repeatPenalty = static_cast<float>(NumberField(object, "repeatPenalty", options.repeatPenalty));
  options.repeatLastN = IntField(object, "repeatLastN", options.repeatLastN);
  options.frequencyPenalty = static_cast<float>(NumberField(object, "frequencyPenalty", options.frequencyPenalty));
  options.presencePenalty = static_cast<float>(NumberField(object, "presencePenalty", options.presencePenalty));
  // Any negative seed asks for a random one, as LLAMA_DEFAULT_SEED does.
  const double seed = NumberField(object, "seed", -1);
  options.seed = seed < 0 || seed >= 4294967295.0 ? LLAMA_DEFAULT_SEED : static_cast<uint32_t>(seed);
  Napi::Value grammar = object.Get("grammar");
  if (!grammar.IsUndefined() && !grammar.IsNull()) {
    if (!grammar.IsString()) throw Napi::TypeError::New(object.Env(), "grammar must be a string or null");
    options.hasGrammar = true;
    options.grammar = grammar.As<Napi::String>().Utf8Value();
    options.grammarRoot = StringField(object, "grammarRoot", "root");
    if (options.grammarRoot.empty()) options.grammarRoot = "root";
  }
  if (options.repeatPenalty <= 0) throw Napi::RangeError::New(object.Env(), "repeatPenalty must be greater than 0");
  return options;
}

Sampler::Sampler(const llama_vocab* vocab, const SamplingOptions& options, uint32_t contextSize) {
  llama_sampler_chain_params params = llama_sampler_chain_default_params();
  params.no_perf = true;
  chain_.reset(llama_sampler_chain_init(params));

  if (options.hasGrammar) {
    LogCapture capture;
    llama_sampler* grammar = llama_sampler_init_grammar(vocab, options.grammar.c_str(), options.grammarRoot.c_str());
    if (grammar == nullptr) {
      const std::string reason = capture.FirstError();
      throw std::runtime_error("invalid grammar" + (reason.empty() ? std::string() : ": " + reason));
    }
    llama_sampler_chain_add(chain_.get(), grammar);
  }

  const bool penalize =
      options.repeatPenalty != 1.0f || options.frequencyPenalty != 0.0f || options.presencePenalty != 0.0f;
  if (penalize && options.repeatLastN != 0) {
    // -1 means the whole context, as in llama.cpp's tools; more than the context can hold is the same thing.
    const auto context = static_cast<int32_t>(contextSize);
    const int32_t lastN = options.repeatLastN < 0 || options.repeatLastN > context ? context : options.repeatLastN;
    penalties_ = llama_sampler_init_penalties(llama_vocab_n_tokens(vocab), lastN, options.repeatPenalty,
                                              options.frequencyPenalty, options.presencePenalty);
    llama_sampler_chain_add(chain_.get(), penalties_);
  }

  if (options.temperature <= 0.0f) {
    llama_sampler_chain_add(chain_.get(), llama_sampler_init_greedy());
    return;
  }
  if (options.topK > 0) llama_sampler_chain_add(chain_.get(), llama_sampler_init_top_k(options.topK));
  if (options.topP > 0.0f && options.topP < 1.0f)
    llama_sampler_chain_add(chain_.get(), llama_sampler_init_top_p(options.topP, 1));
  if (options.minP > 0.0f) llama_sampler_chain_add(chain_.get(), llama_sampler_init_min_p(options.minP, 1));
  llama_sampler_chain_add(chain_.get(), llama_sampler_init_temp(options.temperature));
  llama_sampler_chain_add(chain_.get(), llama_sampler_init_dist(options.seed));
}

void Sampler::AcceptPrompt(llama_token token) {
  if (penalties_ != nullptr) llama_sampler_accept(penalties_, token);
}

llama_token Sampler::Sample(llama_context* ctx, int32_t index) {
  return llama_sampler_sample(chain_.get(), ctx, index);
}

}  // namespace llama_oci
