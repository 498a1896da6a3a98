#include "sampling.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <stdexcept>

// llama.cpp's common library: tokenizing the template's words, regex_escape, the reasoning-budget tracker.
#include <common.h>
#include <reasoning-budget.h>

#include "js-args.h"
#include "log.h"

namespace llama_oci {

namespace {

std::vector<std::string> StringArrayField(const Napi::Object& object, const char* key,
                                          const std::vector<std::string>& fallback) {
  Napi::Value value = object.Get(key);
  if (value.IsUndefined() || value.IsNull()) return fallback;
  const std::string wrong = std::string(key) + " must be an array of strings";
  if (!value.IsArray()) throw Napi::TypeError::New(object.Env(), wrong);
  auto array = value.As<Napi::Array>();
  std::vector<std::string> out;
  for (uint32_t i = 0; i < array.Length(); i++) {
    Napi::Value item = array.Get(i);
    if (!item.IsString()) throw Napi::TypeError::New(object.Env(), wrong);
    out.push_back(item.As<Napi::String>().Utf8Value());
  }
  return out;
}

// [[token, bias], ...]; a bias of -Infinity bans the token.
std::vector<llama_logit_bias> LogitBiasField(const Napi::Object& object) {
  Napi::Value value = object.Get("logitBias");
  std::vector<llama_logit_bias> out;
  if (value.IsUndefined() || value.IsNull()) return out;
  const char* wrong = "logitBias must be an array of [token, bias] pairs";
  if (!value.IsArray()) throw Napi::TypeError::New(object.Env(), wrong);
  auto array = value.As<Napi::Array>();
  for (uint32_t i = 0; i < array.Length(); i++) {
    Napi::Value item = array.Get(i);
    if (!item.IsArray() || item.As<Napi::Array>().Length() != 2) throw Napi::TypeError::New(object.Env(), wrong);
    Napi::Value token = item.As<Napi::Array>().Get(0u);
    Napi::Value bias = item.As<Napi::Array>().Get(1u);
    if (!token.IsNumber() || !bias.IsNumber()) throw Napi::TypeError::New(object.Env(), wrong);
    const double id = token.As<Napi::Number>().DoubleValue();
    const double amount = bias.As<Napi::Number>().DoubleValue();
    if (std::isnan(amount) || amount == INFINITY) {
      throw Napi::RangeError::New(object.Env(), "a logitBias bias must be a finite number or -Infinity");
    }
    if (!(id >= 0 && id <= 2147483647.0) || std::trunc(id) != id) {
      throw Napi::RangeError::New(object.Env(), "a logitBias token must be a token id (an integer >= 0)");
    }
    out.push_back({static_cast<llama_token>(id), static_cast<float>(amount)});
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
  Napi::Env env = object.Env();
  SamplingOptions options;
  const auto number = [&](const char* key, float fallback) {
    return static_cast<float>(NumberField(object, key, fallback));
  };
  options.temperature = number("temperature", options.temperature);
  options.topK = IntField(object, "topK", options.topK);
  options.topP = number("topP", options.topP);
  options.minP = number("minP", options.minP);
  options.typicalP = number("typicalP", options.typicalP);
  options.topNSigma = number("topNSigma", options.topNSigma);
  options.xtcProbability = number("xtcProbability", options.xtcProbability);
  options.xtcThreshold = number("xtcThreshold", options.xtcThreshold);
  options.repeatPenalty = number("repeatPenalty", options.repeatPenalty);
  options.repeatLastN = IntField(object, "repeatLastN", options.repeatLastN);
  options.frequencyPenalty = number("frequencyPenalty", options.frequencyPenalty);
  options.presencePenalty = number("presencePenalty", options.presencePenalty);
  options.dryMultiplier = number("dryMultiplier", options.dryMultiplier);
  options.dryBase = number("dryBase", options.dryBase);
  options.dryAllowedLength = IntField(object, "dryAllowedLength", options.dryAllowedLength);
  options.dryPenaltyLastN = IntField(object, "dryPenaltyLastN", options.dryPenaltyLastN);
  options.drySequenceBreakers = StringArrayField(object, "drySequenceBreakers", options.drySequenceBreakers);
  options.mirostat = IntField(object, "mirostat", options.mirostat);
  options.mirostatTau = number("mirostatTau", options.mirostatTau);
  options.mirostatEta = number("mirostatEta", options.mirostatEta);
  options.logitBias = LogitBiasField(object);
  // Any negative seed asks for a random one, as LLAMA_DEFAULT_SEED does.
  const double seed = NumberField(object, "seed", -1);
  options.seed = seed < 0 || seed >= 4294967295.0 ? LLAMA_DEFAULT_SEED : static_cast<uint32_t>(seed);
  Napi::Value grammar = object.Get("grammar");
  if (!grammar.IsUndefined() && !grammar.IsNull()) {
    if (!grammar.IsString()) throw Napi::TypeError::New(env, "grammar must be a string or null");
    options.hasGrammar = true;
    options.grammar = grammar.As<Napi::String>().Utf8Value();
    options.grammarRoot = StringField(object, "grammarRoot", "root");
    if (options.grammarRoot.empty()) options.grammarRoot = "root";
  }
  options.grammarFirst = BoolField(object, "grammarFirst", false);
  options.grammarTree = BoolField(object, "grammarTree", true);
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
  options.thinkingEnd = StringArrayField(object, "thinkingEnd", {});
  options.preservedTokens = StringArrayField(object, "preservedTokens", {});
  // What llama.cpp's samplers would assert on, or misbehave with (common_sampler_init's own checks included).
  if (!(options.repeatPenalty > 0) || !std::isfinite(options.repeatPenalty))
    throw Napi::RangeError::New(env, "repeatPenalty must be greater than 0");
  if (!std::isfinite(options.frequencyPenalty) || !std::isfinite(options.presencePenalty))
    throw Napi::RangeError::New(env, "frequencyPenalty and presencePenalty must be finite");
  if (options.mirostat < 0 || options.mirostat > 2)
    throw Napi::RangeError::New(env, "mirostat must be 0 (off), 1 (Mirostat) or 2 (Mirostat 2.0)");
  if (options.dryAllowedLength < 0) throw Napi::RangeError::New(env, "dryAllowedLength must not be negative");
  if (options.dryPenaltyLastN < -1) throw Napi::RangeError::New(env, "dryPenaltyLastN must be -1 or more");
  for (const std::string& breaker : options.drySequenceBreakers) {
    if (breaker.empty()) throw Napi::RangeError::New(env, "drySequenceBreakers must not hold an empty string");
  }
  return options;
}

Sampler::Sampler(const llama_vocab* vocab, const SamplingOptions& options, uint32_t contextSize,
                 const TokenTree* tokens)
    : grammarFirst_(options.grammarFirst), vocabSize_(llama_vocab_n_tokens(vocab)) {
  llama_sampler_chain_params params = llama_sampler_chain_default_params();
  params.no_perf = true;
  chain_.reset(llama_sampler_chain_init(params));
  pointwise_.reset(llama_sampler_chain_init(params));

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
    }
    // Not in the chain: Sample() checks the chain's choice against it (common_sampler's rejection sampling).
    grammar_ = std::move(owned);
    if (tokens != nullptr && !options.grammarLazy && !reasoning_ && tokens->size() == vocabSize_) {
      tree_ = tokens;
      for (llama_token token : prefill) utf8_.Push(tree_->piece(token));
    }
  }

  // -1 means the whole context, as in llama.cpp's tools; more than the context can hold is the same thing.
  const auto context = static_cast<int32_t>(contextSize);
  const auto window = [context](int32_t n) { return n < 0 || n > context ? context : n; };

  // The caller's biases, then the tokens the model itself never wants sampled (as common_sampler merges them).
  std::vector<llama_logit_bias> biases = options.logitBias;
  for (const llama_logit_bias& bias : biases) {
    if (bias.token < 0 || bias.token >= vocabSize_) {
      throw std::runtime_error("logitBias token " + std::to_string(bias.token) + " is outside the vocabulary (0.." +
                               std::to_string(vocabSize_ - 1) + ")");
    }
  }
  int32_t suppressed = 0;
  const llama_token* suppress = llama_vocab_get_suppress_tokens(vocab, &suppressed);
  for (int32_t i = 0; i < suppressed; i++) biases.push_back({suppress[i], -INFINITY});
  // The samplers that change each token's logit on its own (logit bias, penalties, DRY) go first, in their own
  // chain: a grammar's verdict commutes with them, which the scan for the best allowed tokens relies on.
  const auto pointwise = [this](llama_sampler* sampler) { llama_sampler_chain_add(pointwise_.get(), sampler); };
  const auto add = [this](llama_sampler* sampler) { llama_sampler_chain_add(chain_.get(), sampler); };
  if (!biases.empty()) {
    pointwise(llama_sampler_init_logit_bias(vocabSize_, static_cast<int32_t>(biases.size()), biases.data()));
  }

  if (options.mirostat != 0) {
    // common_sampler's Mirostat chain: no penalties and no truncation, the temperature, then Mirostat's own choice.
    if (options.temperature <= 0.0f) {
      add(llama_sampler_init_greedy());  // what temperature 0 leaves Mirostat: one candidate
      return;
    }
    add(llama_sampler_init_temp(options.temperature));
    add(options.mirostat == 1
            ? llama_sampler_init_mirostat(vocabSize_, options.seed, options.mirostatTau, options.mirostatEta, 100)
            : llama_sampler_init_mirostat_v2(options.seed, options.mirostatTau, options.mirostatEta));
    return;
  }

  const bool penalize =
      options.repeatPenalty != 1.0f || options.frequencyPenalty != 0.0f || options.presencePenalty != 0.0f;
  if (penalize && options.repeatLastN != 0) {
    pointwise(llama_sampler_init_penalties(vocabSize_, window(options.repeatLastN), options.repeatPenalty,
                                           options.frequencyPenalty, options.presencePenalty));
  }
  if (options.dryMultiplier != 0.0f && options.dryBase >= 1.0f && options.dryPenaltyLastN != 0) {
    std::vector<const char*> breakers;
    for (const std::string& breaker : options.drySequenceBreakers) breakers.push_back(breaker.c_str());
    pointwise(llama_sampler_init_dry(vocab, options.dryMultiplier, options.dryBase, options.dryAllowedLength,
                                     window(options.dryPenaltyLastN), breakers.data(), breakers.size()));
  }

  const bool typical = options.typicalP < 1.0f;
  const bool xtc = options.xtcProbability > 0.0f && options.xtcThreshold <= 0.5f;
  if (options.temperature <= 0.0f && !typical && !xtc) {
    // Greedy: the truncating samplers always keep the most likely token, so they cannot change the choice.
    add(llama_sampler_init_greedy());
    scanTop_ = 1;
    return;
  }
  if (options.topNSigma > 0.0f) add(llama_sampler_init_top_n_sigma(options.topNSigma));
  if (options.topNSigma <= 0.0f && options.topK > 0) scanTop_ = static_cast<size_t>(options.topK);
  if (options.topK > 0) add(llama_sampler_init_top_k(options.topK));
  if (typical) add(llama_sampler_init_typical(options.typicalP, 0));
  if (options.topP > 0.0f && options.topP < 1.0f) add(llama_sampler_init_top_p(options.topP, 0));
  if (options.minP > 0.0f) add(llama_sampler_init_min_p(options.minP, 0));
  if (xtc) add(llama_sampler_init_xtc(options.xtcProbability, options.xtcThreshold, 0, options.seed));
  // Temperature 0 (with typical-p or XTC, which can drop the most likely token) keeps only the best of the rest.
  add(llama_sampler_init_temp(options.temperature));
  add(llama_sampler_init_dist(options.seed));
}

void Sampler::AcceptPrompt(llama_token token) {
  // A media placeholder (vision.h) is no token: llama-server leaves image positions out of the penalties too.
  if (token >= 0) {
    llama_sampler_accept(pointwise_.get(), token);
    llama_sampler_accept(chain_.get(), token);
  }
}

void Sampler::SetLogits(llama_context* ctx, int32_t index) {
  const float* logits = llama_get_logits_ith(ctx, index);
  if (logits == nullptr) throw std::runtime_error("llama.cpp returned no logits for the token to sample");
  candidates_.resize(static_cast<size_t>(vocabSize_));
  for (llama_token id = 0; id < vocabSize_; id++) candidates_[id] = llama_token_data{id, logits[id], 0.0f};
  array_ = {candidates_.data(), candidates_.size(), -1, false};
}

llama_token Sampler::Selected() const {
  if (array_.selected < 0 || static_cast<size_t>(array_.selected) >= array_.size) {
    throw std::runtime_error("the sampler chain chose no token (every candidate was excluded)");
  }
  return array_.data[array_.selected].id;
}

llama_token Sampler::Sample(llama_context* ctx, int32_t index) {
  SetLogits(ctx, index);
  // With thinking tags beside a lazy grammar (llama.cpp's reasoning tracker): while the model thinks, the grammar is
  // neither applied nor fed, so a trigger inside the thoughts does not start a call.
  if (reasoning_) llama_sampler_apply(reasoning_.get(), &array_);
  llama_sampler* grammar = grammar_ && (!reasoning_ || GrammarApplies()) ? grammar_.get() : nullptr;
  if (grammar && grammarFirst_) llama_sampler_apply(grammar, &array_);
  llama_sampler_apply(pointwise_.get(), &array_);
  llama_sampler_apply(chain_.get(), &array_);
  llama_token token = Selected();
  bool constrained = grammar && grammarFirst_;

  if (grammar && !grammarFirst_) {
    // Does the grammar accept the chain's choice? Checking one token is cheap; constraining the whole vocabulary
    // (every token's text against every grammar stack) is what makes grammar-first sampling slow.
    llama_token_data single = {token, 1.0f, 0.0f};
    llama_token_data_array one = {&single, 1, -1, false};
    llama_sampler_apply(grammar, &one);
    if (single.logit == -INFINITY) {
      resamples_++;
      SetLogits(ctx, index);
      if (reasoning_) llama_sampler_apply(reasoning_.get(), &array_);
      if (tree_ == nullptr) {
        // As llama.cpp's common_sampler: the grammar over every candidate, then the whole chain.
        llama_sampler_apply(grammar, &array_);
        llama_sampler_apply(pointwise_.get(), &array_);
      } else {
        llama_sampler_apply(pointwise_.get(), &array_);
        if (!ScanTopAllowed(grammar)) ConstrainAll(grammar);
      }
      llama_sampler_apply(chain_.get(), &array_);
      token = Selected();
      constrained = true;
    }
  }
  if (grammar) {
    // llama.cpp aborts the process when a grammar is made to accept a token it does not allow (an end-of-generation
    // token before the grammar is complete): that is the case only when the grammar left no candidate at all.
    if (constrained && array_.data[array_.selected].logit == -INFINITY) {
      throw std::runtime_error("the grammar allows no token here (the output cannot be completed)");
    }
  }
  if (reasoning_) {
    llama_sampler_accept(reasoning_.get(), token);
    if (!grammar && grammar_ && common_reasoning_budget_get_state(reasoning_.get()) == REASONING_BUDGET_DONE) {
      // The thoughts just ended: the end tag may hold a trigger the grammar must see.
      if (const llama_tokens* end = common_reasoning_budget_get_end_match(reasoning_.get())) {
        for (llama_token t : *end) llama_sampler_accept(grammar_.get(), t);
      }
    }
  }
  if (grammar) AcceptIntoGrammar(token);
  llama_sampler_accept(pointwise_.get(), token);
  llama_sampler_accept(chain_.get(), token);
  return token;
}

bool Sampler::ScanTopAllowed(llama_sampler* grammar) {
  // What the chain's top-k (or greedy) keeps of a constrained vocabulary is the k best tokens the grammar allows:
  // they are looked for among the best candidates, in order, a few grammar calls at most. When the grammar allows
  // too few of them (a strict point of the grammar), the tree constrains the whole vocabulary instead.
  if (scanTop_ == 0 || array_.size != static_cast<size_t>(vocabSize_)) return false;
  const auto better = [](const llama_token_data& a, const llama_token_data& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  };
  const size_t limit = std::min(array_.size, std::max<size_t>(1024, 8 * scanTop_));
  order_.assign(array_.data, array_.data + array_.size);
  if (limit < order_.size()) std::nth_element(order_.begin(), order_.begin() + limit, order_.end(), better);
  std::sort(order_.begin(), order_.begin() + limit, better);
  subset_.clear();
  bool allChecked = limit == order_.size();
  for (size_t start = 0, chunk = std::max<size_t>(64, 2 * scanTop_); start < limit && subset_.size() < scanTop_;
       start += chunk, chunk *= 4) {
    const size_t end = std::min(limit, start + chunk);
    probe_.clear();
    for (size_t i = start; i < end; i++) {
      if (order_[i].logit == -INFINITY) {
        allChecked = true;  // the rest cannot be sampled either way
        break;
      }
      probe_.push_back({order_[i].id, 0.0f, 0.0f});
    }
    if (probe_.empty()) break;
    llama_token_data_array batch = {probe_.data(), probe_.size(), -1, false};
    llama_sampler_apply(grammar, &batch);
    for (size_t i = 0; i < probe_.size() && subset_.size() < scanTop_; i++) {
      if (probe_[i].logit != -INFINITY) subset_.push_back(order_[start + i]);
    }
    if (allChecked) break;
  }
  if (subset_.empty() || (subset_.size() < scanTop_ && !allChecked)) return false;
  // Sorted, as top-k leaves it (so it does not sort again).
  array_ = {subset_.data(), subset_.size(), -1, true};
  return true;
}

const TokenTree* TokenTreeFor(ModelHandle& model, const SamplingOptions& options) {
  const bool usable = options.hasGrammar && !options.grammarLazy && !options.grammarFirst && options.grammarTree;
  return usable ? &model.Tokens() : nullptr;
}

void Sampler::ConstrainAll(llama_sampler* grammar) {
  // The tree needs candidates in token order (SetLogits' order) and a grammar between whole characters.
  if (tree_ != nullptr && utf8_.Whole() && array_.size == static_cast<size_t>(vocabSize_) && !array_.sorted) {
    ConstrainWithTree(*tree_, grammar, array_, scratch_);
  } else {
    llama_sampler_apply(grammar, &array_);
  }
}

void Sampler::AcceptIntoGrammar(llama_token token) {
  llama_sampler_accept(grammar_.get(), token);
  if (tree_ != nullptr) utf8_.Push(tree_->piece(token));
}

bool Sampler::GrammarApplies() const {
  const auto state = common_reasoning_budget_get_state(reasoning_.get());
  return state == REASONING_BUDGET_IDLE || state == REASONING_BUDGET_DONE;
}

}  // namespace llama_oci
