// Reading the option objects of native-types.ts, with one-line TypeErrors naming the field that is wrong.
#pragma once

#include <napi.h>

#include <cmath>
#include <string>
#include <vector>

#include "llama.h"

namespace llama_oci {

inline Napi::Object ObjectArg(const Napi::CallbackInfo& info, size_t index, const char* what) {
  if (info.Length() <= index || !info[index].IsObject())
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be an object");
  return info[index].As<Napi::Object>();
}

inline double NumberField(const Napi::Object& object, const char* key, double fallback) {
  Napi::Value value = object.Get(key);
  if (value.IsUndefined() || value.IsNull()) return fallback;
  if (!value.IsNumber() || std::isnan(value.As<Napi::Number>().DoubleValue())) {
    throw Napi::TypeError::New(object.Env(), std::string(key) + " must be a number");
  }
  return value.As<Napi::Number>().DoubleValue();
}

// An integer field, clamped to the int32 range (so 1e12 or Infinity mean "as many as possible").
inline int32_t IntField(const Napi::Object& object, const char* key, int32_t fallback) {
  const double value = NumberField(object, key, fallback);
  if (value >= 2147483647.0) return 2147483647;
  if (value <= -2147483648.0) return -2147483647 - 1;
  return static_cast<int32_t>(std::trunc(value));
}

inline bool BoolField(const Napi::Object& object, const char* key, bool fallback) {
  Napi::Value value = object.Get(key);
  if (value.IsUndefined() || value.IsNull()) return fallback;
  if (!value.IsBoolean()) throw Napi::TypeError::New(object.Env(), std::string(key) + " must be a boolean");
  return value.As<Napi::Boolean>().Value();
}

inline std::string StringField(const Napi::Object& object, const char* key, const std::string& fallback) {
  Napi::Value value = object.Get(key);
  if (value.IsUndefined() || value.IsNull()) return fallback;
  if (!value.IsString()) throw Napi::TypeError::New(object.Env(), std::string(key) + " must be a string");
  return value.As<Napi::String>().Utf8Value();
}

inline std::string StringArg(const Napi::CallbackInfo& info, size_t index, const char* what) {
  if (info.Length() <= index || !info[index].IsString())
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  return info[index].As<Napi::String>().Utf8Value();
}

inline bool BoolArg(const Napi::CallbackInfo& info, size_t index, bool fallback) {
  if (info.Length() <= index || info[index].IsUndefined()) return fallback;
  if (!info[index].IsBoolean())
    throw Napi::TypeError::New(info.Env(), "argument " + std::to_string(index + 1) + " must be a boolean");
  return info[index].As<Napi::Boolean>().Value();
}

// Tokens from an Int32Array (or a plain array of integers).
inline std::vector<llama_token> TokensValue(const Napi::Value& value, const char* what) {
  Napi::Env env = value.Env();
  std::vector<llama_token> tokens;
  if (value.IsTypedArray() && value.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array) {
    auto array = value.As<Napi::Int32Array>();
    tokens.assign(array.Data(), array.Data() + array.ElementLength());
    return tokens;
  }
  if (value.IsArray()) {
    auto array = value.As<Napi::Array>();
    tokens.reserve(array.Length());
    for (uint32_t i = 0; i < array.Length(); i++) {
      Napi::Value item = array.Get(i);
      if (!item.IsNumber()) throw Napi::TypeError::New(env, std::string(what) + " must hold token ids (integers)");
      tokens.push_back(item.As<Napi::Number>().Int32Value());
    }
    return tokens;
  }
  throw Napi::TypeError::New(env, std::string(what) + " must be an Int32Array of token ids");
}

inline Napi::Int32Array TokensToJs(Napi::Env env, const std::vector<llama_token>& tokens) {
  auto array = Napi::Int32Array::New(env, tokens.size());
  std::copy(tokens.begin(), tokens.end(), array.Data());
  return array;
}

}  // namespace llama_oci
