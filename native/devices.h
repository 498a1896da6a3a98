// The devices a model is loaded on: the machine's own GPUs and, when asked for, llama.cpp RPC servers
// (ggml-rpc-server) added to ggml's device registry. Every load names its devices explicitly, so that RPC servers
// another load added are used only by the models that asked for them.
#pragma once

#include <string>
#include <vector>

#include "ggml-backend.h"

namespace llama_oci {

// The machine's own accelerator devices (GPU and integrated GPU types; not the CPU, not RPC servers).
std::vector<ggml_backend_dev_t> LocalGpuDevices();

// Adds each endpoint ("host:port") to ggml's registry once per process and returns its devices, in order. The
// endpoint must be reachable (the TypeScript layer checks that first): llama.cpp's RPC client aborts the process
// when it cannot connect. Throws std::runtime_error when the RPC backend is not built in, or a server has no device.
std::vector<ggml_backend_dev_t> RpcDevices(const std::vector<std::string>& endpoints);

// Whether this addon was built with llama.cpp's RPC backend (LLAMA_OCI_RPC).
bool SupportsRpc();

// The RPC protocol version the client speaks (RPC_PROTO_MAJOR_VERSION, RPC_PROTO_MINOR_VERSION); 0.0 without RPC.
struct RpcProtocol {
  int major = 0;
  int minor = 0;
};
RpcProtocol RpcProtocolVersion();

}  // namespace llama_oci
