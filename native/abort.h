// Cancellation: AbortFlagWrap is the JS NativeAbortFlag (a shared std::atomic<bool>); StopFlags is what a worker
// checks between steps and what llama.cpp's abort callback reads during llama_decode.
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>

namespace llama_oci {

using AbortFlag = std::shared_ptr<std::atomic<bool>>;

struct StopFlags {
  AbortFlag user;                   // set by abort() in JS; may be null
  std::atomic<bool> cancel{false};  // set when the environment shuts down under a running worker

  bool Requested() const {
    return cancel.load(std::memory_order_relaxed) || (user && user->load(std::memory_order_relaxed));
  }
};

class AbortFlagWrap : public Napi::ObjectWrap<AbortFlagWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Object New(Napi::Env env);
  // The flag behind a JS value; null/undefined give no flag, anything else that is not an abort flag throws.
  static AbortFlag From(const Napi::Value& value, const char* what);

  explicit AbortFlagWrap(const Napi::CallbackInfo& info);

 private:
  void Abort(const Napi::CallbackInfo& info);
  Napi::Value Aborted(const Napi::CallbackInfo& info);

  AbortFlag flag_;
};

}  // namespace llama_oci
