#include "abort.h"

#include "addon.h"

namespace llama_oci {

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
