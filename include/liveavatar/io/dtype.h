// Element types of checkpoint files (safetensors names) and their mapping to LibTorch scalar types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <c10/core/ScalarType.h>

#include "liveavatar/core/status.h"

namespace liveavatar::io {

enum class DType : uint8_t { kF64, kF32, kF16, kBF16, kF8_E4M3, kF8_E5M2, kI64, kI32, kI16, kI8, kU8, kBool };

// "F32", "BF16", "F8_E4M3", ... (the safetensors spelling).
const char* DTypeName(DType d);
// Bytes per element.
size_t DTypeSize(DType d);
// Parses a safetensors dtype string; NotSupported naming the string otherwise.
StatusOr<DType> ParseDType(const std::string& s);
// The LibTorch scalar type holding this dtype's bytes. F8 maps to the Float8 types on LibTorch >= 2.1 and to
// kByte (raw bits) before that; see core/compat.h.
c10::ScalarType ToScalarType(DType d);
// Inverse of ToScalarType; NotSupported for types with no safetensors spelling.
StatusOr<DType> FromScalarType(c10::ScalarType t);

}  // namespace liveavatar::io
