#include "sampling.h"

#include <cctype>
#include <climits>
#include <stdexcept>

// llama.cpp's common library: tokenizing the template's words, regex_escape, the reasoning-budget tracker.
#include <common.h>
#include <reasoning-budget.h>

#include "js-args.h"
#include "log.h"

namespace llama_oci {

namespace {

std::vector<std::string> StringList(const Napi::Object& object, const char* key) {
  std::vector<std::string> out;
  Napi::Value value = object.Get(key);
  if (value.IsUndefined() || value.IsNull()) return out;
  if (!value.IsArray()) throw Napi::TypeError::New(object.Env(), std::string(key) + " must be an array of strings");
  auto array = value.As<Napi::Array>();
  for (uint32_t i = 0; i < array.Length(); i++) {
    Napi::Value item = array.Get(i);
    if (!item.IsString()) throw Napi::TypeError::New(object.Env(), std::string(key) + " must be an array of strings");
    out.push_back(item.As<Napi::String>().Utf8Value());
  }
  return out;
}

// The text's tokens as the template wrote it (special tokens parsed), without BOS.
std::vector<llama_token> Tokens(const llama_vocab* vocab, const std::string& text) {
  return common_tokenize(vocab, text, false, true);
}

std::string Pieces(const llama_vocab* vocab, const std::vector<llama_token>& tokens, size_t from = 0) {
  std::string out;
  for (size_t i = from; i < tokens.size(); i++) {
    char piece[256];
    const int32_t n = llama_token_to_piece(vocab, tokens[i], piece, sizeof(piece), 0, true);
    if (n > 0) out.append(piece, static_cast<size_t>(n));
  }
  return out;
}

// Tokens whose pieces spell exactly `text`. A tokenizer that puts a space before the first word (SentencePiece's
// dummy prefix) would add one that is not in the text, so then the text is tokenized after a newline and the
// tokens of that newline (and space) are left out.
std::vector<llama_token> TextTokens(const llama_vocab* vocab, const std::string& text) {
  if (text.empty()) return {};
  std::vector<llama_token> tokens = Tokens(vocab, text);
  const std::string spelled = Pieces(vocab, tokens);
  if (spelled == text) return tokens;
  if (spelled == " " + text && Pieces(vocab, {tokens.front()}) == " ") return {tokens.begin() + 1, tokens.end()};
  tokens = Tokens(vocab, "\n" + text);
  std::string prefix;
  for (size_t i = 0; i < tokens.size(); i++) {
    if ((prefix == "\n" || prefix == " \n") && Pieces(vocab, tokens, i) == text)
      return {tokens.begin() + static_cast<std::ptrdiff_t>(i), tokens.end()};
    prefix += Pieces(vocab, {tokens[i]});
    if (prefix.size() > 2) break;
  }
  throw std::runtime_error(
      "the template's generation prompt cannot be spelled in this model's tokens, so the tool-call "
      "grammar cannot start after it");
}

}  // namespace

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
  options.grammarLazy = BoolField(object, "grammarLazy", false);
  Napi::Value triggers = object.Get("grammarTriggers");
  if (triggers.IsArray()) {
    auto array = triggers.As<Napi::Array>();
    for (uint32_t i = 0; i < array.Length(); i++) {
      Napi::Value item = array.Get(i);
      if (!item.IsObject()) throw Napi::TypeError::New(object.Env(), "grammarTriggers must hold { type, value }");
      auto trigger = item.As<Napi::Object>();
      options.grammarTriggers.push_back({StringField(trigger, "type", "word"), StringField(trigger, "value", "")});
    }
  } else if (!triggers.IsUndefined() && !triggers.IsNull()) {
    throw Napi::TypeError::New(object.Env(), "grammarTriggers must be an array");
  }
  options.grammarPrefill = StringField(object, "grammarPrefill", "");
  options.thinkingStart = StringField(object, "thinkingStart", "");
  options.thinkingEnd = StringList(object, "thinkingEnd");
  options.preservedTokens = StringList(object, "preservedTokens");
  if (options.repeatPenalty <= 0) throw Napi::RangeError::New(object.Env(), "repeatPenalty must be greater than 0");
  return options;
}

Sampler::Sampler(const llama_vocab* vocab, const SamplingOptions& options, uint32_t contextSize) : vocab_(vocab) {
  llama_sampler_chain_params params = llama_sampler_chain_default_params();
  params.no_perf = true;
  chain_.reset(llama_sampler_chain_init(params));

  // Preserved words that are one token each (as llama-server keeps them).
  for (const auto& word : options.preservedTokens) {
    const auto ids = Tokens(vocab, word);
    if (ids.size() == 1) preserved_.insert(ids[0]);
  }

  if (options.hasGrammar) {
    LogCapture capture;
    llama_sampler* grammar = nullptr;
    if (options.grammarLazy) {
      // llama-server's reading of the triggers: a word that is one token triggers on that token, any other word
      // on its text, a pattern as it is, a full pattern anchored at both ends.
      std::vector<std::string> patterns;
      std::vector<llama_token> tokens;
      for (const auto& trigger : options.grammarTriggers) {
        if (trigger.type == "word" || trigger.type == "token") {
          const auto ids = Tokens(vocab, trigger.value);
          if (ids.size() == 1) {
            tokens.push_back(ids[0]);
            preserved_.insert(ids[0]);
          } else {
            patterns.push_back(regex_escape(trigger.value));
          }
        } else if (trigger.type == "pattern") {
          patterns.push_back(trigger.value);
        } else if (trigger.type == "patternFull") {
          const std::string& p = trigger.value;
          patterns.push_back(p.empty() ? "^$" : (p.front() != '^' ? "^" : "") + p + (p.back() != '$' ? "$" : ""));
        } else {
          throw std::runtime_error("unknown grammar trigger type \"" + trigger.type + "\"");
        }
      }
      if (patterns.empty() && tokens.empty()) throw std::runtime_error("a lazy grammar needs at least one trigger");
      std::vector<const char*> cPatterns;
      for (const auto& pattern : patterns) cPatterns.push_back(pattern.c_str());
      grammar =
          llama_sampler_init_grammar_lazy_patterns(vocab, options.grammar.c_str(), options.grammarRoot.c_str(),
                                                   cPatterns.data(), cPatterns.size(), tokens.data(), tokens.size());
    } else {
      grammar = llama_sampler_init_grammar(vocab, options.grammar.c_str(), options.grammarRoot.c_str());
    }
    if (grammar == nullptr) {
      const std::string reason = capture.FirstError();
      throw std::runtime_error("invalid grammar" + (reason.empty() ? std::string() : ": " + reason));
    }
    std::unique_ptr<llama_sampler, SamplerDeleter> owned(grammar);

    // What the template already wrote of the answer (e.g. "<think>" or a tool-call opener) is fed to an eager
    // grammar, so that it constrains what follows (common_sampler_init's prefill).
    // A lazy grammar is not fed (a trigger starts it), but the thinking tracker is: "<think>" may be in the prompt.
    const bool tracksThinking = options.grammarLazy && !options.thinkingStart.empty() && !options.thinkingEnd.empty();
    const std::vector<llama_token> prefill =
        !options.grammarLazy || tracksThinking ? TextTokens(vocab, options.grammarPrefill) : std::vector<llama_token>();
    if (!options.grammarLazy) {
      try {
        for (llama_token token : prefill) llama_sampler_accept(owned.get(), token);
      } catch (const std::exception& e) {
        throw std::runtime_error(std::string("the grammar does not accept the template's generation prompt: ") +
                                 e.what());
      }
    }

    if (tracksThinking) {
      std::vector<llama_tokens> ends;
      // Spelled as the template writes them, the way the generation prompt is (no tokenizer's leading space).
      for (const auto& tag : options.thinkingEnd) {
        if (!tag.empty()) ends.push_back(TextTokens(vocab, tag));
      }
      reasoning_.reset(common_reasoning_budget_init(vocab, {TextTokens(vocab, options.thinkingStart)}, ends,
                                                    ends.empty() ? llama_tokens() : ends.front(), INT_MAX));
      for (llama_token token : prefill) llama_sampler_accept(reasoning_.get(), token);
      grammar_ = std::move(owned);
    } else {
      llama_sampler_chain_add(chain_.get(), owned.release());
    }
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
  // A media placeholder (vision.h) is no token: llama-server leaves image positions out of the penalties too.
  if (penalties_ != nullptr && token >= 0) llama_sampler_accept(penalties_, token);
}

llama_token Sampler::Sample(llama_context* ctx, int32_t index) {
  if (reasoning_) return SampleWithReasoning(ctx, index);
  return llama_sampler_sample(chain_.get(), ctx, index);
}

bool Sampler::GrammarApplies() const {
  const auto state = common_reasoning_budget_get_state(reasoning_.get());
  return state == REASONING_BUDGET_IDLE || state == REASONING_BUDGET_DONE;
}

// common_sampler_sample and common_sampler_accept with the grammar applied first, for a lazy grammar beside the
// reasoning tracker: while the model thinks the grammar is neither applied nor fed.
llama_token Sampler::SampleWithReasoning(llama_context* ctx, int32_t index) {
  const float* logits = llama_get_logits_ith(ctx, index);
  if (logits == nullptr) throw std::runtime_error("no logits to sample from");
  const int32_t vocabSize = llama_vocab_n_tokens(vocab_);
  candidates_.resize(static_cast<size_t>(vocabSize));
  for (llama_token id = 0; id < vocabSize; id++) candidates_[static_cast<size_t>(id)] = {id, logits[id], 0.0f};
  llama_token_data_array array = {candidates_.data(), candidates_.size(), -1, false};

  llama_sampler_apply(reasoning_.get(), &array);
  const bool grammarApplies = GrammarApplies();
  if (grammarApplies) llama_sampler_apply(grammar_.get(), &array);
  llama_sampler_apply(chain_.get(), &array);
  if (array.selected < 0 || static_cast<size_t>(array.selected) >= array.size) {
    throw std::runtime_error("the samplers selected no token");
  }
  const llama_token token = array.data[array.selected].id;

  llama_sampler_accept(reasoning_.get(), token);
  if (!grammarApplies && common_reasoning_budget_get_state(reasoning_.get()) == REASONING_BUDGET_DONE) {
    // The thoughts just ended: the end tag may hold a trigger the grammar must see.
    if (const llama_tokens* end = common_reasoning_budget_get_end_match(reasoning_.get())) {
      for (llama_token t : *end) llama_sampler_accept(grammar_.get(), t);
    }
  }
  if (grammarApplies) llama_sampler_accept(grammar_.get(), token);
  llama_sampler_accept(chain_.get(), token);
  return token;
}

}  // namespace llama_oci
