#include "liveavatar/io/dtype.h"

#include "liveavatar/core/compat.h"

namespace liveavatar::io {

namespace {
struct DTypeRow {
  DType d;
  const char* name;
  size_t size;
};
constexpr DTypeRow kRows[] = {
    {DType::kF64, "F64", 8},       {DType::kF32, "F32", 4},          {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2},     {DType::kF8_E4M3, "F8_E4M3", 1}, {DType::kF8_E5M2, "F8_E5M2", 1},
    {DType::kI64, "I64", 8},       {DType::kI32, "I32", 4},          {DType::kI16, "I16", 2},
    {DType::kI8, "I8", 1},         {DType::kU8, "U8", 1},            {DType::kBool, "BOOL", 1},
};
}  // namespace

const char* DTypeName(DType d) { return kRows[static_cast<int>(d)].name; }
size_t DTypeSize(DType d) { return kRows[static_cast<int>(d)].size; }

StatusOr<DType> ParseDType(const std::string& s) {
  for (const auto& r : kRows) {
    if (s == r.name) return r.d;
  }
  return Status::NotSupported("unknown dtype '" + s + "'");
}

c10::ScalarType ToScalarType(DType d) {
  switch (d) {
    case DType::kF64: return c10::kDouble;
    case DType::kF32: return c10::kFloat;
    case DType::kF16: return c10::kHalf;
    case DType::kBF16: return c10::kBFloat16;
#if LIVEAVATAR_HAS_FLOAT8
    case DType::kF8_E4M3: return c10::ScalarType::Float8_e4m3fn;
    case DType::kF8_E5M2: return c10::ScalarType::Float8_e5m2;
#else
    case DType::kF8_E4M3: return c10::kByte;
    case DType::kF8_E5M2: return c10::kByte;
#endif
    case DType::kI64: return c10::kLong;
    case DType::kI32: return c10::kInt;
    case DType::kI16: return c10::kShort;
    case DType::kI8: return c10::kChar;
    case DType::kU8: return c10::kByte;
    case DType::kBool: return c10::kBool;
  }
  return c10::kByte;
}

StatusOr<DType> FromScalarType(c10::ScalarType t) {
  switch (t) {
    case c10::kDouble: return DType::kF64;
    case c10::kFloat: return DType::kF32;
    case c10::kHalf: return DType::kF16;
    case c10::kBFloat16: return DType::kBF16;
#if LIVEAVATAR_HAS_FLOAT8
    case c10::ScalarType::Float8_e4m3fn: return DType::kF8_E4M3;
    case c10::ScalarType::Float8_e5m2: return DType::kF8_E5M2;
#endif
    case c10::kLong: return DType::kI64;
    case c10::kInt: return DType::kI32;
    case c10::kShort: return DType::kI16;
    case c10::kChar: return DType::kI8;
    case c10::kByte: return DType::kU8;
    case c10::kBool: return DType::kBool;
    default: break;
  }
  return Status::NotSupported(std::string("scalar type ") + c10::toString(t) + " has no safetensors dtype");
}

}  // namespace liveavatar::io
