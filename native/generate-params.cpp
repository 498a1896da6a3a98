#include "generate-params.h"

#include <algorithm>

#include "js-args.h"

namespace llama_oci {

GenerateParams ReadGenerateParams(const Napi::Object& params) {
  Napi::Env env = params.Env();
  GenerateParams out;
  out.media = MediaPromptFrom(params.Get("media"));
  out.prompt = out.media ? out.media->tokens() : TokensValue(params.Get("tokens"), "tokens");
  out.maxTokens = IntField(params, "maxTokens", -1);
  Napi::Value sampling = params.Get("sampling");
  if (sampling.IsObject()) {
    out.sampling = ReadSamplingOptions(sampling.As<Napi::Object>());
  } else if (!sampling.IsUndefined() && !sampling.IsNull()) {
    throw Napi::TypeError::New(env, "sampling must be an object");
  }
  Napi::Value stop = params.Get("stop");
  if (stop.IsArray()) {
    auto array = stop.As<Napi::Array>();
    for (uint32_t i = 0; i < array.Length(); i++) {
      Napi::Value item = array.Get(i);
      if (!item.IsString()) throw Napi::TypeError::New(env, "stop must be an array of strings");
      out.stops.push_back(item.As<Napi::String>().Utf8Value());
    }
  } else if (!stop.IsUndefined() && !stop.IsNull()) {
    throw Napi::TypeError::New(env, "stop must be an array of strings");
  }
  out.ignoreEos = BoolField(params, "ignoreEos", false);
  out.contextShift = BoolField(params, "contextShift", false);
  const int32_t keep = IntField(params, "keep", 0);
  const int32_t reuse = IntField(params, "cacheReuse", 0);
  if (keep < 0 || reuse < 0) throw Napi::RangeError::New(env, "keep and cacheReuse must not be negative");
  out.keep = static_cast<size_t>(keep);
  out.cacheReuse = static_cast<size_t>(reuse);
  out.abort = AbortFlagWrap::From(params.Get("abort"), "abort");
  Napi::Value onText = params.Get("onText");
  if (onText.IsFunction()) {
    out.onText = onText.As<Napi::Function>();
  } else if (!onText.IsUndefined() && !onText.IsNull()) {
    throw Napi::TypeError::New(env, "onText must be a function");
  }
  return out;
}

std::string TokenPiece(const llama_vocab* vocab, llama_token token, bool special) {
  std::string piece(32, '\0');
  int32_t n = llama_token_to_piece(vocab, token, piece.data(), static_cast<int32_t>(piece.size()), 0, special);
  if (n < 0) {
    piece.resize(static_cast<size_t>(-n));
    n = llama_token_to_piece(vocab, token, piece.data(), static_cast<int32_t>(piece.size()), 0, special);
  }
  piece.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return piece;
}

}  // namespace llama_oci

namespace llama_oci {

size_t ShiftKeep(const std::vector<llama_token>& cached, size_t keep, const llama_vocab* vocab) {
  if (!cached.empty() && cached[0] == llama_vocab_bos(vocab)) keep = std::max<size_t>(keep, 1);
  // As llama-server: never keep so much that nothing could be discarded.
  return cached.size() > 4 ? std::min(keep, cached.size() - 4) : 0;
}

size_t ShiftSequence(llama_memory_t memory, llama_seq_id seq, std::vector<llama_token>& cached, size_t keep) {
  if (!llama_memory_can_shift(memory) || keep >= cached.size()) return 0;
  const size_t left = cached.size() - keep;
  const size_t discard = std::min(left / 2, left > 0 ? left - 1 : 0);
  if (discard == 0) return 0;
  const auto from = static_cast<llama_pos>(keep);
  const auto to = static_cast<llama_pos>(keep + discard);
  if (!llama_memory_seq_rm(memory, seq, from, to)) return 0;
  llama_memory_seq_add(memory, seq, to, static_cast<llama_pos>(cached.size()), -static_cast<llama_pos>(discard));
  cached.erase(cached.begin() + static_cast<std::ptrdiff_t>(keep),
               cached.begin() + static_cast<std::ptrdiff_t>(keep + discard));
  return discard;
}

namespace {

// The length of the match of cached[headCache..] and prompt[headPrompt..end).
size_t MatchAt(const std::vector<llama_token>& cached, size_t headCache, const std::vector<llama_token>& prompt,
               size_t headPrompt, size_t end) {
  size_t match = 0;
  while (headCache + match < cached.size() && headPrompt + match < end &&
         cached[headCache + match] == prompt[headPrompt + match]) {
    match++;
  }
  return match;
}

}  // namespace

size_t CountReusable(const std::vector<llama_token>& cached, const std::vector<llama_token>& prompt, size_t prefix,
                     size_t minChunk) {
  if (minChunk == 0 || prompt.empty()) return prefix;
  size_t headCache = prefix;
  size_t headPrompt = prefix;
  while (headCache < cached.size() && headPrompt + 1 < prompt.size()) {
    const size_t match = MatchAt(cached, headCache, prompt, headPrompt, prompt.size() - 1);
    if (match < minChunk) {
      headCache++;
      continue;
    }
    headCache += match;
    headPrompt += match;
  }
  return headPrompt;
}

size_t ReuseCacheChunks(llama_memory_t memory, llama_seq_id seq, std::vector<llama_token>& cached,
                        const std::vector<llama_token>& prompt, size_t prefix, size_t minChunk) {
  if (minChunk == 0 || prefix >= cached.size() || !llama_memory_can_shift(memory)) return prefix;
  // The last prompt token is always decoded again for its logits, so at most prompt.size() - 1 are reused.
  const size_t promptEnd = prompt.size() - 1;
  size_t headCache = prefix;
  size_t headPrompt = prefix;
  while (headCache < cached.size() && headPrompt < promptEnd) {
    const size_t match = MatchAt(cached, headCache, prompt, headPrompt, promptEnd);
    if (match < minChunk) {
      headCache++;
      continue;
    }
    // Drop what lies between the reused part and this chunk, then move the chunk down to where the prompt has it.
    const auto shift = static_cast<llama_pos>(headPrompt) - static_cast<llama_pos>(headCache);
    if (!llama_memory_seq_rm(memory, seq, static_cast<llama_pos>(headPrompt), static_cast<llama_pos>(headCache))) {
      break;
    }
    llama_memory_seq_add(memory, seq, static_cast<llama_pos>(headCache), static_cast<llama_pos>(headCache + match),
                         shift);
    for (size_t i = 0; i < match; i++) cached[headPrompt + i] = cached[headCache + i];
    headCache += match;
    headPrompt += match;
  }
  // Everything after the reused prompt tokens goes.
  llama_memory_seq_rm(memory, seq, static_cast<llama_pos>(headPrompt), -1);
  cached.resize(headPrompt);
  return headPrompt;
}

}  // namespace llama_oci
