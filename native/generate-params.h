// The parameters of NativeContext.generate (NativeGenerateParams in native-types.ts), read on the JS thread, and
// what both generation paths (the per-request worker and the batched sequence engine) share.
#pragma once

#include <napi.h>

#include <string>
#include <vector>

#include "abort.h"
#include "llama.h"
#include "sampling.h"
#include "vision.h"

namespace llama_oci {

struct GenerateParams {
  std::vector<llama_token> prompt;
  int32_t maxTokens = -1;
  SamplingOptions sampling;
  std::vector<std::string> stops;
  bool ignoreEos = false;
  AbortFlag abort;
  Napi::Function onText;  // empty when none was given
  MediaPromptPtr media;   // a prompt with images (then `prompt` is its tokens and placeholders)
};

// Throws Napi::TypeError naming the field that is wrong.
GenerateParams ReadGenerateParams(const Napi::Object& params);

// The text of one token (its bytes may end inside a UTF-8 character); `special`: a special token's text too.
std::string TokenPiece(const llama_vocab* vocab, llama_token token, bool special = false);

}  // namespace llama_oci
