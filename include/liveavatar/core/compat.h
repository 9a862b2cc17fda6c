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
// c10::Allocator::allocate is const until 2.2 and non-const from 2.3, which also adds the pure virtual
// copy_data(). Use LIVEAVATAR_ALLOCATOR_ALLOCATE_QUALIFIER as the declarator of an override:
//   LIVEAVATAR_ALLOCATOR_ALLOCATE_QUALIFIER { ... uses size_t n ... }
#define LIVEAVATAR_ALLOCATOR_HAS_COPY_DATA LIVEAVATAR_TORCH_AT_LEAST(2, 3)
#if LIVEAVATAR_ALLOCATOR_HAS_COPY_DATA
#define LIVEAVATAR_ALLOCATOR_ALLOCATE_QUALIFIER c10::DataPtr allocate(size_t n) override
#else
#define LIVEAVATAR_ALLOCATOR_ALLOCATE_QUALIFIER c10::DataPtr allocate(size_t n) const override
#endif
