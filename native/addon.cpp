// Module entry: registers the classes and functions of the llama-oci addon (NativeBinding in native-types.ts).
#include "addon.h"

#include <napi.h>

#include <mutex>
#include <string>
#include <vector>

#include "abort.h"
#include "context.h"
#include "devices.h"
#include "ggml-backend.h"
#include "llama.h"
#include "load-worker.h"
#include "log.h"
#include "model.h"
#include "vision.h"

// llama.cpp's common library: LLAMA_BUILD_NUMBER and LLAMA_COMMIT of the source it was built from.
#include <build-info.h>

#ifndef LLAMA_OCI_GPU_BACKEND
#define LLAMA_OCI_GPU_BACKEND "cpu"
#endif

namespace llama_oci {

namespace {

const char* DeviceType(enum ggml_backend_dev_type type) {
  switch (type) {
    case GGML_BACKEND_DEVICE_TYPE_CPU: return "cpu";
    case GGML_BACKEND_DEVICE_TYPE_GPU: return "gpu";
    case GGML_BACKEND_DEVICE_TYPE_IGPU: return "igpu";
    default: return "accel";
  }
}

Napi::Value SystemInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("gpuBackend", LLAMA_OCI_GPU_BACKEND);

  Napi::Array backends = Napi::Array::New(env);
  for (size_t i = 0; i < ggml_backend_reg_count(); i++) {
    backends.Set(static_cast<uint32_t>(i), ggml_backend_reg_name(ggml_backend_reg_get(i)));
  }
  out.Set("backends", backends);

  Napi::Array devices = Napi::Array::New(env);
  for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
    ggml_backend_dev_t device = ggml_backend_dev_get(i);
    size_t free = 0;
    size_t total = 0;
    ggml_backend_dev_memory(device, &free, &total);
    Napi::Object entry = Napi::Object::New(env);
    entry.Set("name", ggml_backend_dev_name(device));
    entry.Set("description", ggml_backend_dev_description(device));
    entry.Set("type", DeviceType(ggml_backend_dev_type(device)));
    entry.Set("memoryTotal", Napi::Number::New(env, static_cast<double>(total)));
    entry.Set("memoryFree", Napi::Number::New(env, static_cast<double>(free)));
    devices.Set(static_cast<uint32_t>(i), entry);
  }
  out.Set("devices", devices);

  out.Set("systemInfo", llama_print_system_info());
  // A source tree without full git history (ours comes from a bundle) reports build number 1: use the version then.
  const std::string commit = llama_commit();
  const int build = llama_build_number();
  out.Set("llamaCppVersion",
          (build > 1 ? "b" + std::to_string(build) : std::string(llama_version())) + " (" + commit + ")");
  // The machine's own GPUs (llama_supports_gpu_offload also says yes for an RPC build without any GPU).
  out.Set("supportsGpuOffload", !LocalGpuDevices().empty());
  out.Set("supportsRpc", SupportsRpc());
  Napi::Object protocol = Napi::Object::New(env);
  protocol.Set("major", RpcProtocolVersion().major);
  protocol.Set("minor", RpcProtocolVersion().minor);
  out.Set("rpcProtocol", protocol);
  out.Set("supportsMmap", llama_supports_mmap());
  out.Set("maxDevices", Napi::Number::New(env, static_cast<double>(llama_max_devices())));
  return out;
}

void SetLoggerFunction(const Napi::CallbackInfo& info) { SetLogger(info); }

Napi::Value CreateAbortFlag(const Napi::CallbackInfo& info) { return AbortFlagWrap::New(info.Env()); }

void PrepareForExitFunction(const Napi::CallbackInfo&) { PrepareForExit(); }

// At environment teardown (process exit, worker thread end): release every model and context still alive. A
// running worker keeps its share and is stopped by its own teardown (Task::Finalize), then frees what it held; a
// context's sequence engine thread is stopped here, and waited for, so that it never outlives the environment.
// Called by Node outside node-addon-api's wrappers, so nothing may be thrown out of it.
void Cleanup(std::shared_ptr<LiveObjects>* live) noexcept {
  try {
    std::vector<ContextWrap*> contexts((*live)->contexts.begin(), (*live)->contexts.end());
    for (ContextWrap* context : contexts) context->Release(true, true);
    std::vector<ModelWrap*> models((*live)->models.begin(), (*live)->models.end());
    for (ModelWrap* model : models) model->Release();
  } catch (...) {
    // The process is going away: whatever could not be released is released by the OS.
  }
  delete live;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  static std::once_flag backendOnce;
  // Process-wide in llama.cpp: once, even when several worker threads load the addon.
  std::call_once(backendOnce, [] { llama_backend_init(); });
  InstallLogCallback();
  InstallExitGuard();

  auto* data = new AddonData();
  data->abortFlagClass = Napi::Persistent(AbortFlagWrap::Define(env));
  data->modelClass = Napi::Persistent(ModelWrap::Define(env));
  data->contextClass = Napi::Persistent(ContextWrap::Define(env));
  env.SetInstanceData(data);
  env.AddCleanupHook(Cleanup, new std::shared_ptr<LiveObjects>(data->live));

  exports.Set("systemInfo", Napi::Function::New(env, SystemInfo, "systemInfo"));
  exports.Set("setLogger", Napi::Function::New(env, SetLoggerFunction, "setLogger"));
  exports.Set("createAbortFlag", Napi::Function::New(env, CreateAbortFlag, "createAbortFlag"));
  exports.Set("prepareForExit", Napi::Function::New(env, PrepareForExitFunction, "prepareForExit"));
  exports.Set("loadModel", Napi::Function::New(env, LoadModel, "loadModel"));
  RegisterVision(env, exports);
  return exports;
}

}  // namespace

}  // namespace llama_oci

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return llama_oci::Init(env, exports); }

NODE_API_MODULE(llama_oci, InitModule)
