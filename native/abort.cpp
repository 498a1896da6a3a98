#include "abort.h"

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>

#include "addon.h"

namespace llama_oci {

namespace {

struct BusyThreads {
  std::mutex mutex;
  std::condition_variable idle;
  int count = 0;
};

// Never destroyed: threads still running after the exit guard gave up waiting may touch it during exit().
BusyThreads& Busy() {
  static auto* busy = new BusyThreads();
  return *busy;
}

void OnExit() { PrepareForExit(); }

}  // namespace

void PrepareForExit() {
  ProcessExitingFlag().store(true);
  BusyThreads& busy = Busy();
  std::unique_lock<std::mutex> lock(busy.mutex);
  // Each worker stops at its next check (llama.cpp's abort callback included), which comes within a graph node.
  busy.idle.wait_for(lock, std::chrono::seconds(5), [&] { return busy.count == 0; });
}

void InstallExitGuard() {
  static std::once_flag once;
  std::call_once(once, [] { std::atexit(OnExit); });
}

BusyScope::BusyScope() {
  std::lock_guard<std::mutex> lock(Busy().mutex);
  Busy().count++;
}

BusyScope::~BusyScope() {
  BusyThreads& busy = Busy();
  {
    std::lock_guard<std::mutex> lock(busy.mutex);
    busy.count--;
  }
  busy.idle.notify_all();
}

Napi::Function AbortFlagWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeAbortFlag",
                     {
                         InstanceMethod<&AbortFlagWrap::Abort>("abort"),
                         InstanceAccessor<&AbortFlagWrap::Aborted>("aborted"),
                     });
}

Napi::Object AbortFlagWrap::New(Napi::Env env) { return GetAddonData(env).abortFlagClass.New({}); }

AbortFlag AbortFlagWrap::From(const Napi::Value& value, const char* what) {
  if (value.IsUndefined() || value.IsNull()) return nullptr;
  Napi::Env env = value.Env();
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(GetAddonData(env).abortFlagClass.Value())) {
    throw Napi::TypeError::New(env, std::string(what) + " must be an abort flag from createAbortFlag()");
  }
  return Unwrap(value.As<Napi::Object>())->flag_;
}

AbortFlagWrap::AbortFlagWrap(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<AbortFlagWrap>(info), flag_(std::make_shared<std::atomic<bool>>(false)) {}

void AbortFlagWrap::Abort(const Napi::CallbackInfo&) { flag_->store(true); }

Napi::Value AbortFlagWrap::Aborted(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), flag_->load());
}

}  // namespace llama_oci
