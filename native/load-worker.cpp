#include "load-worker.h"

#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <unordered_map>

#include "abort.h"
#include "devices.h"
#include "gguf.h"
#include "js-args.h"
#include "log.h"
#include "model.h"
#include "task.h"

namespace llama_oci {

namespace {

// llama.cpp's vocabulary loader (llama_vocab::impl::load) maps each token's text to its id and then asserts that no
// two ids share a text: a GGUF with duplicate tokens aborts the process. This reads the same strings the same way
// (gguf_get_arr_str, so a string ends at its first NUL byte; an empty one becomes "[EMPTY_<id>]") and refuses the
// file first. The TypeScript layer checks this too, from its own reader; this covers direct callers of the addon.
void CheckVocabulary(const std::string& path) {
  LogCapture quiet(true);  // a header gguf cannot read is llama_model_load_from_file's to report (and log)
  gguf_init_params params{};
  params.no_alloc = true;
  params.ctx = nullptr;
  std::unique_ptr<gguf_context, decltype(&gguf_free)> gguf(gguf_init_from_file(path.c_str(), params), gguf_free);
  if (!gguf) return;
  const int64_t key = gguf_find_key(gguf.get(), "tokenizer.ggml.tokens");
  if (key < 0 || gguf_get_kv_type(gguf.get(), key) != GGUF_TYPE_ARRAY ||
      gguf_get_arr_type(gguf.get(), key) != GGUF_TYPE_STRING) {
    return;
  }
  const size_t count = gguf_get_arr_n(gguf.get(), key);
  std::unordered_map<std::string, size_t> seen;
  seen.reserve(count);
  for (size_t id = 0; id < count; id++) {
    std::string text = gguf_get_arr_str(gguf.get(), key, id);
    if (text.empty()) text = "[EMPTY_" + std::to_string(id) + "]";
    const auto inserted = seen.emplace(std::move(text), id);
    if (!inserted.second) {
      throw std::runtime_error("cannot load " + path + ": its vocabulary is invalid: tokens " +
                               std::to_string(inserted.first->second) + " and " + std::to_string(id) +
                               " have the same text (token texts must be unique)");
    }
  }
}

class LoadTask : public Task {
 public:
  LoadTask(std::string path, llama_model_params params, std::vector<std::string> rpcServers, AbortFlag abort,
           Napi::Function onProgress)
      : path_(std::move(path)), params_(params), rpcServers_(std::move(rpcServers)) {
    stop_.user = std::move(abort);
    if (!onProgress.IsEmpty()) onProgress_ = Napi::Persistent(onProgress);
  }

 protected:
  void Run() override {
    std::error_code error;
    const auto status = std::filesystem::status(path_, error);
    if (!std::filesystem::exists(status)) throw std::runtime_error("model file not found: " + path_);
    if (std::filesystem::is_directory(status))
      throw std::runtime_error("cannot load " + path_ + ": it is a directory, not a GGUF file");
    if (stop_.Requested()) throw std::runtime_error("model load aborted");
    CheckVocabulary(path_);

    // The devices, always named: the machine's GPUs, then the RPC servers asked for (in their order), so that a
    // server another load added is not used by this one. None: the CPU alone.
    devices_ = LocalGpuDevices();
    for (ggml_backend_dev_t device : RpcDevices(rpcServers_)) devices_.push_back(device);
    devices_.push_back(nullptr);
    params_.devices = devices_.data();

    params_.progress_callback = &LoadTask::OnProgress;
    params_.progress_callback_user_data = this;
    LogCapture capture;
    llama_model* model = llama_model_load_from_file(path_.c_str(), params_);
    if (model == nullptr) {
      if (stop_.Requested()) throw std::runtime_error("model load aborted");
      const std::string reason = capture.FirstError();
      throw std::runtime_error("cannot load " + path_ + ": not a valid GGUF model (truncated or corrupt?)" +
                               (reason.empty() ? "" : ": " + reason));
    }
    handle_ = std::make_shared<ModelHandle>(model, path_, params_.vocab_only);
    if (stop_.Requested()) {
      handle_.reset();
      throw std::runtime_error("model load aborted");
    }
    Report(1.0f);
  }

  Napi::Value Result(Napi::Env env) override { return ModelWrap::New(env, std::move(handle_)); }

 private:
  // llama.cpp's progress callback (loading thread): returning false cancels the load.
  static bool OnProgress(float fraction, void* data) noexcept {
    auto* task = static_cast<LoadTask*>(data);
    try {
      task->Report(fraction);
    } catch (...) {
      return false;  // out of memory for a progress message: give up the load rather than the process
    }
    return !task->stop_.Requested();
  }

  // Forwards increasing fractions only, at most one per thousandth, always including the final 1.
  void Report(float fraction) {
    if (onProgress_.IsEmpty()) return;
    if (fraction > 1.0f) fraction = 1.0f;
    if (fraction < reported_ + 0.001f && !(fraction >= 1.0f && reported_ < 1.0f)) return;
    reported_ = fraction;
    Post([this, fraction](Napi::Env env) {
      try {
        onProgress_.Call({Napi::Number::New(env, fraction)});
      } catch (const Napi::Error& e) {
        FailWith(e.Value());
        stop_.cancel.store(true);
      }
    });
  }

  std::string path_;
  llama_model_params params_;
  std::vector<std::string> rpcServers_;
  std::vector<ggml_backend_dev_t> devices_;
  Napi::FunctionReference onProgress_;
  float reported_ = -1.0f;
  ModelPtr handle_;
};

enum llama_load_mode LoadMode(bool useMmap, bool useMlock) {
  if (useMmap) return useMlock ? LLAMA_LOAD_MODE_MMAP_MLOCK : LLAMA_LOAD_MODE_MMAP;
  return useMlock ? LLAMA_LOAD_MODE_MLOCK : LLAMA_LOAD_MODE_NONE;
}

}  // namespace

Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    const std::string path = StringArg(info, 0, "path");
    llama_model_params params = llama_model_default_params();
    Napi::Object options =
        info.Length() > 1 && info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
    params.n_gpu_layers = IntField(options, "gpuLayers", -1);
    params.load_mode = LoadMode(BoolField(options, "useMmap", true), BoolField(options, "useMlock", false));
    params.vocab_only = BoolField(options, "vocabOnly", false);
    std::vector<std::string> rpcServers;
    Napi::Value rpc = options.Get("rpcServers");
    if (rpc.IsArray()) {
      auto array = rpc.As<Napi::Array>();
      for (uint32_t i = 0; i < array.Length(); i++) {
        Napi::Value item = array.Get(i);
        if (!item.IsString()) throw Napi::TypeError::New(env, "rpcServers must be an array of \"host:port\" strings");
        rpcServers.push_back(item.As<Napi::String>().Utf8Value());
      }
    } else if (!rpc.IsUndefined() && !rpc.IsNull()) {
      throw Napi::TypeError::New(env, "rpcServers must be an array of \"host:port\" strings");
    }
    Napi::Function onProgress;
    if (info.Length() > 2 && info[2].IsFunction()) {
      onProgress = info[2].As<Napi::Function>();
    } else if (info.Length() > 2 && !info[2].IsNull() && !info[2].IsUndefined()) {
      throw Napi::TypeError::New(env, "onProgress must be a function or null");
    }
    AbortFlag abort = info.Length() > 3 ? AbortFlagWrap::From(info[3], "abort") : nullptr;
    return Task::Start(env,
                       std::make_unique<LoadTask>(path, params, std::move(rpcServers), std::move(abort), onProgress));
  } catch (...) {
    return Task::RejectedWithCurrentException(env);
  }
}

}  // namespace llama_oci
