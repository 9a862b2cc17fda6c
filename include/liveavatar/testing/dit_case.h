// Running one `sink` or `stream` case of the DiT fixture (golden README §1) on a model, for the tests that
// compare a DiT variant (plain, FP8, block-offloaded, sharded, sequence-parallel) with the fixture or with
// another variant. Everything comes from the case: inputs, metadata and, for `stream`, the step cache's
// contents; the model decides only its cache geometry (and heads).
//
// Outputs are named like the case's out.* tensors, so a caller can compare key by key:
//   * sink: out.kv.<i>.cond_k / cond_v (fp32) and out.kv.<i>.cond_end ([1] int64) for every layer i;
//   * stream: out.x0_flow (fp32) and out.kv.<i>.k_written / v_written (fp32): the ring rows the call wrote,
//     as many as the case's out.kv.<i>.k_written holds.
#pragma once

#include <map>
#include <string>

#include <ATen/core/Tensor.h>

#include "liveavatar/models/dit/model.h"
#include "liveavatar/runtime/kv_cache.h"
#include "liveavatar/testing/golden.h"

namespace liveavatar::testing {

// in.ref_latents, in.motion_latents, in.context of a `sink` case.
models::dit::SinkInputs DitSinkInputs(const GoldenCase& c);

// in.x, in.t, in.context, in.cond_states, in.audio_input and the metadata current_start / relative_dist of a
// `stream` case.
models::dit::StreamInputs DitStreamInputs(const GoldenCase& c);

// Zero-filled step cache for a `sink` case: the ring sized like the pipeline's (LatentFramesPerClip(48,
// kAudioPrefixFrames, 19) latent frames; the sink pass does not touch it) and metadata cond_capacity cond rows.
runtime::DitStepCache DitSinkCache(const models::dit::CausalWanS2V& model, const GoldenCase& c,
                                   c10::ScalarType dtype);

// Step cache for a `stream` case: the geometry of in.kv.0 (ring rows / the model's frame_seqlen frames, cond rows
// of in.kv.0.cond_k), filled from every layer's in.kv.<i>.k / v / cond_k / cond_v / cond_end.
// Throws (test failure) when the ring is not a whole number of frames.
runtime::DitStepCache DitStreamCache(const models::dit::CausalWanS2V& model, const GoldenCase& c,
                                     c10::ScalarType dtype);

// What a run leaves besides its outputs, for callers that inspect it.
struct DitCaseRun {
  runtime::DitStepCache cache;  // the step cache after the call
  runtime::RingPlan plan;       // stream: the rows the call wrote (sink: default)
};

// Runs the case (kind "sink": SinkPrefill; "stream": StreamBlock) on `model` with a step cache of
// `cache_dtype` and returns its value for every out.* tensor listed at the top of this file. `run`, when not
// null, receives the cache and ring plan. Throws (test failure) for any other kind.
std::map<std::string, at::Tensor> RunDitCase(const models::dit::CausalWanS2V& model, const GoldenCase& c,
                                             c10::ScalarType cache_dtype, DitCaseRun* run = nullptr);

}  // namespace liveavatar::testing
