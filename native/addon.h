// Per-environment state of the addon (constructors of the native classes, live objects for the cleanup hook).
#pragma once

#include <napi.h>

#include <memory>
#include <set>

namespace llama_oci {

class ModelWrap;
class ContextWrap;

// Objects still holding llama.cpp handles, so the environment's cleanup hook can release them. Shared with each
// object so that an object finalized after the environment data is gone never touches freed memory.
struct LiveObjects {
  std::set<ModelWrap*> models;
  std::set<ContextWrap*> contexts;
};

struct AddonData {
  Napi::FunctionReference abortFlagClass;
  Napi::FunctionReference modelClass;
  Napi::FunctionReference contextClass;
  std::shared_ptr<LiveObjects> live = std::make_shared<LiveObjects>();
};

inline AddonData& GetAddonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

}  // namespace llama_oci
