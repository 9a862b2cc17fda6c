#include "liveavatar/dist/ulysses.h"

#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "liveavatar/core/status.h"

namespace liveavatar::dist {

namespace {

using models::dit::LocalHeadCount;
using models::dit::SequenceParallel;

void Check(const WorkPtr& work, const char* what) {
  Status s = work->Synchronize();
  if (!s.ok()) throw StatusError(s.WithPrefix(std::string("Ulysses ") + what));
}

class Ulysses final : public SequenceParallel {
 public:
  explicit Ulysses(CommunicatorPtr group) : group_(std::move(group)) {}

  int world() const override { return group_->Size(); }
  int rank() const override { return group_->Rank(); }

  at::Tensor Gather(const at::Tensor& local, int64_t n) const override {
    const int64_t chunk = ChunkLength(n);
    TORCH_CHECK(local.dim() >= 2 && local.size(0) == 1 && local.size(1) == chunk, "Ulysses::Gather: local ",
                local.sizes(), " is not this rank's chunk of ", n, " tokens (", chunk, " per rank)");
    auto in = local.contiguous();
    auto sizes = in.sizes().vec();
    sizes[1] = chunk * world();
    auto out = at::empty(sizes, in.options());
    // Batch 1: rank r's flat chunk lands at tokens [r·chunk, (r+1)·chunk).
    Check(group_->AllGatherIntoTensor(out, in), "gather");
    return out.narrow(1, 0, n);
  }

  at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t n,
                       const AttentionInner& inner) const override {
    const int p = world();
    const int64_t chunk = ChunkLength(n);
    TORCH_CHECK(q.dim() == 4 && q.size(0) == 1 && q.size(1) == chunk, "Ulysses::Attention: q ", q.sizes(),
                " is not [1, ", chunk, ", H, D] (chunk of ", n, " tokens over ", p, " ranks)");
    TORCH_CHECK(k.sizes() == q.sizes() && v.dim() == 4 && v.sizes().slice(0, 3) == q.sizes().slice(0, 3),
                "Ulysses::Attention: k ", k.sizes(), " / v ", v.sizes(), " do not match q ", q.sizes());
    const int64_t heads = q.size(2);
    const int64_t local_heads = LocalHeads(heads);
    std::vector<int64_t> head_splits(p);
    for (int r = 0; r < p; ++r) head_splits[r] = LocalHeadCount(heads, p, r);

    // Sequence -> heads: rows (dim 0) are heads, so rank r receives its head range from every rank, in rank
    // (= sequence chunk) order.
    AllToAllOptions to_heads;
    to_heads.input_split_sizes = head_splits;
    to_heads.output_split_sizes.assign(p, local_heads);
    // [1, chunk, H, D] list -> [P·chunk, H_r, D] each, trimmed to n.
    at::Tensor qf, kf, vf;
    if (q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type() && v.size(3) == q.size(3)) {
      const int64_t d = q.size(3);
      auto in = at::stack({q[0], k[0], v[0]}, 0).permute({2, 0, 1, 3}).contiguous();  // [H, 3, chunk, D]
      auto out = at::empty({p * local_heads, 3, chunk, d}, in.options());
      Check(group_->AllToAll(out, in, to_heads), "all-to-all (sequence -> heads)");
      // [P, H_r, 3, chunk, D] -> [3, P·chunk, H_r, D]
      auto full = out.view({p, local_heads, 3, chunk, d}).permute({2, 0, 3, 1, 4}).reshape({3, p * chunk,
                                                                                          local_heads, d});
      full = full.narrow(1, 0, n);
      qf = full[0].unsqueeze(0).contiguous();
      kf = full[1].unsqueeze(0).contiguous();
      vf = full[2].unsqueeze(0).contiguous();
    } else {
      auto exchange = [&](const at::Tensor& t) {
        const int64_t d = t.size(3);
        auto in = t[0].permute({1, 0, 2}).contiguous();  // [H, chunk, D]
        auto out = at::empty({p * local_heads, chunk, d}, in.options());
        Check(group_->AllToAll(out, in, to_heads), "all-to-all (sequence -> heads)");
        return out.view({p, local_heads, chunk, d})
            .permute({0, 2, 1, 3})
            .reshape({1, p * chunk, local_heads, d})
            .narrow(1, 0, n)
            .contiguous();
      };
      qf = exchange(q);
      kf = exchange(k);
      vf = exchange(v);
    }

    auto o = inner(qf, kf, vf);
    TORCH_CHECK(o.dim() == 4 && o.size(0) == 1 && o.size(1) == n && o.size(2) == local_heads,
                "Ulysses::Attention: inner returned ", o.sizes(), ", expected [1, ", n, ", ", local_heads, ", D]");

    // Heads -> sequence: rows are (token, local head) pairs, token-major, so rank j receives its chunk of tokens
    // with this rank's heads; the pieces from the ranks are then joined on the head axis in rank order.
    const int64_t d = o.size(3);
    auto padded = at::zeros({p * chunk, local_heads, d}, o.options());
    padded.narrow(0, 0, n).copy_(o[0]);
    AllToAllOptions to_seq;
    to_seq.input_split_sizes.assign(p, chunk * local_heads);
    for (int r = 0; r < p; ++r) to_seq.output_split_sizes.push_back(chunk * head_splits[r]);
    auto back = at::empty({chunk * heads, d}, o.options());
    Check(group_->AllToAll(back, padded.view({p * chunk * local_heads, d}), to_seq), "all-to-all (heads -> sequence)");
    std::vector<at::Tensor> parts;
    int64_t row = 0;
    for (int r = 0; r < p; ++r) {
      parts.push_back(back.narrow(0, row, chunk * head_splits[r]).view({chunk, head_splits[r], d}));
      row += chunk * head_splits[r];
    }
    return at::cat(parts, 1).unsqueeze(0);
  }

 private:
  CommunicatorPtr group_;
};

}  // namespace

std::shared_ptr<models::dit::SequenceParallel> MakeUlysses(CommunicatorPtr group) {
  TORCH_CHECK(group != nullptr, "MakeUlysses: null communicator");
  return std::make_shared<Ulysses>(std::move(group));
}

}  // namespace liveavatar::dist
