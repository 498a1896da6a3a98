#include "devices.h"

#include <cstring>
#include <mutex>
#include <set>
#include <stdexcept>

#ifdef LLAMA_OCI_RPC
#include "ggml-rpc.h"
#endif

namespace llama_oci {

namespace {

bool IsRpcDevice(ggml_backend_dev_t device) {
  ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(device);
  return reg != nullptr && std::strncmp(ggml_backend_reg_name(reg), "RPC", 3) == 0;
}

}  // namespace

std::vector<ggml_backend_dev_t> LocalGpuDevices() {
  std::vector<ggml_backend_dev_t> out;
  for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
    ggml_backend_dev_t device = ggml_backend_dev_get(i);
    const auto type = ggml_backend_dev_type(device);
    if ((type == GGML_BACKEND_DEVICE_TYPE_GPU || type == GGML_BACKEND_DEVICE_TYPE_IGPU) && !IsRpcDevice(device)) {
      out.push_back(device);
    }
  }
  return out;
}

bool SupportsRpc() {
#ifdef LLAMA_OCI_RPC
  return true;
#else
  return false;
#endif
}

RpcProtocol RpcProtocolVersion() {
#ifdef LLAMA_OCI_RPC
  return {RPC_PROTO_MAJOR_VERSION, RPC_PROTO_MINOR_VERSION};
#else
  return {};
#endif
}

std::vector<ggml_backend_dev_t> RpcDevices(const std::vector<std::string>& endpoints) {
  std::vector<ggml_backend_dev_t> out;
  if (endpoints.empty()) return out;
#ifdef LLAMA_OCI_RPC
  // ggml's device registry is the process's; this remembers which servers were put in it, so none is added twice.
  static std::mutex mutex;
  static std::set<ggml_backend_reg_t> registered;
  std::lock_guard<std::mutex> lock(mutex);
  for (const std::string& endpoint : endpoints) {
    ggml_backend_reg_t reg = ggml_backend_rpc_add_server(endpoint.c_str());
    if (reg == nullptr) throw std::runtime_error("the RPC server at " + endpoint + " has no devices");
    if (registered.insert(reg).second) ggml_backend_register(reg);
    for (size_t i = 0; i < ggml_backend_reg_dev_count(reg); i++) out.push_back(ggml_backend_reg_dev_get(reg, i));
  }
  return out;
#else
  throw std::runtime_error("this build of the addon has no RPC backend (build it with LLAMA_OCI_RPC=ON)");
#endif
}

}  // namespace llama_oci
