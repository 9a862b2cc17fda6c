// `liveavatar convert IN OUT [--dtype bf16|fp16|fp32]`: reads any tensor file OpenTensorStore understands
// (every header validated on open) and writes one .safetensors, optionally casting floating tensors.
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "cli_commands.h"
#include "liveavatar/core/logging.h"
#include "liveavatar/io/safetensors.h"
#include "liveavatar/io/tensor_store.h"

namespace liveavatar::cli {

namespace {

Status Convert(const ConvertArgs& args) {
  if (args.output.size() < 12 || args.output.compare(args.output.size() - 12, 12, ".safetensors") != 0) {
    return Status::InvalidArgument("convert: output '" + args.output + "' must end in .safetensors");
  }
  LA_ASSIGN_OR_RETURN(auto store, io::OpenTensorStore(args.input));
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  const auto keys = store->Keys();
  tensors.reserve(keys.size());
  std::optional<c10::ScalarType> target;
  if (args.dtype == "bf16") target = at::kBFloat16;
  if (args.dtype == "fp16") target = at::kHalf;
  if (args.dtype == "fp32") target = at::kFloat;
  uint64_t bytes = 0;
  for (const auto& key : keys) {
    LA_ASSIGN_OR_RETURN(at::Tensor t, store->Get(key));
    if (target && at::isFloatingType(t.scalar_type()) && t.scalar_type() != *target) t = t.to(*target);
    bytes += static_cast<uint64_t>(t.numel()) * t.element_size();
    tensors.emplace_back(key, std::move(t));
  }
  LA_RETURN_IF_ERROR(io::WriteSafetensors(args.output, tensors));
  LA_LOG_INFO("convert: wrote {} tensors ({:.1f} MiB) from {} to {}", tensors.size(), bytes / 1048576.0,
              args.input, args.output);
  return Status::Ok();
}

}  // namespace

int RunConvert(const ParsedCommand& cmd) {
  Status s = Convert(cmd.convert);
  if (!s.ok()) {
    LA_LOG_ERROR("{}", s.message());
    return 1;
  }
  return 0;
}

}  // namespace liveavatar::cli
