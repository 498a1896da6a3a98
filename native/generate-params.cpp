#include "generate-params.h"

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
