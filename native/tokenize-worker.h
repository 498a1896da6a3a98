// NativeModel.tokenize / detokenize on a worker thread (llama_tokenize and llama_detokenize are thread-safe).
#pragma once

#include <napi.h>

#include <vector>

#include "model.h"

namespace llama_oci {

Napi::Promise StartTokenize(Napi::Env env, const ModelPtr& model, std::string text, bool addSpecial, bool parseSpecial);
Napi::Promise StartDetokenize(Napi::Env env, const ModelPtr& model, std::vector<llama_token> tokens, bool removeSpecial,
                              bool unparseSpecial);

}  // namespace llama_oci
