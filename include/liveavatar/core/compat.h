// The one place where LibTorch 1.13 and 2.x differ for this engine (style.md habit 14). Nothing else may test
// TORCH_VERSION_*; add a wrapper here instead.
#pragma once

#include <torch/version.h>

#define LIVEAVATAR_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// Float8 dtypes (at::kFloat8_e4m3fn / kFloat8_e5m2) exist from LibTorch 2.1.
#define LIVEAVATAR_HAS_FLOAT8 LIVEAVATAR_TORCH_AT_LEAST(2, 1)
// at::scaled_dot_product_attention exists from 2.0.
#define LIVEAVATAR_HAS_SDPA LIVEAVATAR_TORCH_AT_LEAST(2, 0)
// ProcessGroupGloo::_allgather_base / reduce_scatter / bf16 exist from 2.0.
#define LIVEAVATAR_GLOO_HAS_ALLGATHER_BASE LIVEAVATAR_TORCH_AT_LEAST(2, 0)
