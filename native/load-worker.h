// loadModel(path, options, onProgress, abort): llama_model_load_from_file on a worker thread.
#pragma once

#include <napi.h>

namespace llama_oci {

Napi::Value LoadModel(const Napi::CallbackInfo& info);

}  // namespace llama_oci
