// Cancellation: AbortFlagWrap is the JS NativeAbortFlag (a shared std::atomic<bool>); StopFlags is what a worker
// checks between steps and what llama.cpp's abort callback reads during llama_decode.
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>

namespace llama_oci {

using AbortFlag = std::shared_ptr<std::atomic<bool>>;

// Set by the exit guard when the process exits (exit(), process.exit() on the main thread, which never tears the
// environment down): every worker then stops at its next check. A trivially destructible static, safe to read
// from any thread at any time.
inline std::atomic<bool>& ProcessExitingFlag() {
  static std::atomic<bool> flag{false};
  return flag;
}
inline bool ProcessExiting() { return ProcessExitingFlag().load(std::memory_order_relaxed); }

// Sets ProcessExiting() and waits, for at most a few seconds, until no thread is inside llama.cpp (no BusyScope
// alive), so that exit() runs llama.cpp's and ggml's static destructors only after their workers let go, never
// under a running llama_decode. Called from the main thread's process "exit" event (prepareForExit() of the
// addon), which comes before any static destructor runs.
void PrepareForExit();
// Also calls PrepareForExit() from an atexit handler, for an exit() that bypasses the "exit" event. Static objects
// llama.cpp creates later on first use are destroyed before that handler runs, so this is only a fallback.
void InstallExitGuard();

// Marks the current thread as running llama.cpp code for the scope's lifetime (worker tasks, engine steps).
class BusyScope {
 public:
  BusyScope();
  ~BusyScope();
  BusyScope(const BusyScope&) = delete;
  BusyScope& operator=(const BusyScope&) = delete;
};

struct StopFlags {
  AbortFlag user;                   // set by abort() in JS; may be null
  std::atomic<bool> cancel{false};  // set when the environment shuts down under a running worker

  bool Requested() const {
    return cancel.load(std::memory_order_relaxed) || (user && user->load(std::memory_order_relaxed)) ||
           ProcessExiting();
  }
};

// What llama.cpp's abort callback asks during a decode that serves several requests at once (the sequence engine):
// whether the whole decode may stop. Read from ggml's compute threads.
class DecodeAbortCheck {
 public:
  virtual ~DecodeAbortCheck() = default;
  virtual bool DecodeAbortRequested() const = 0;
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
