#include "liveavatar/dist/parallel_vae.h"

#include <algorithm>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace liveavatar::dist {

namespace {

class CommSpatialParallel final : public models::vae::SpatialParallel {
 public:
  explicit CommSpatialParallel(CommunicatorPtr group) : group_(std::move(group)) {}

  int world() const override { return group_->Size(); }
  int rank() const override { return group_->Rank(); }

  at::Tensor ExchangeHalo(const at::Tensor& x, int64_t halo) override {
    TORCH_CHECK(x.dim() >= 2, "ExchangeHalo expects [..., rows, W], got ", x.sizes());
    const int64_t rows = x.size(-2);
    TORCH_CHECK(halo >= 1 && rows >= halo, "parallel VAE: rank ", rank(), " holds ", rows, " rows, fewer than the ",
                halo, " halo rows its neighbours need");
    const int p = world(), r = rank();
    const bool has_above = r > 0, has_below = r + 1 < p;
    // Rows first, so that the all_to_all's dim-0 splits are row counts: [halo, ..., W].
    auto rows_first = [](const at::Tensor& t) { return t.movedim(-2, 0).contiguous(); };
    auto rows_back = [](const at::Tensor& t) { return t.movedim(0, -2); };
    at::Tensor above, below;
    if (p > 1) {
      std::vector<at::Tensor> send;
      AllToAllOptions o;
      o.input_split_sizes.assign(static_cast<size_t>(p), 0);
      o.output_split_sizes.assign(static_cast<size_t>(p), 0);
      if (has_above) {  // my first rows are the bottom halo of rank r-1
        send.push_back(rows_first(x.narrow(-2, 0, halo)));
        o.input_split_sizes[static_cast<size_t>(r - 1)] = halo;
        o.output_split_sizes[static_cast<size_t>(r - 1)] = halo;
      }
      if (has_below) {  // my last rows are the top halo of rank r+1
        send.push_back(rows_first(x.narrow(-2, rows - halo, halo)));
        o.input_split_sizes[static_cast<size_t>(r + 1)] = halo;
        o.output_split_sizes[static_cast<size_t>(r + 1)] = halo;
      }
      at::Tensor input = send.size() == 1 ? send[0] : at::cat(send, 0);
      at::Tensor output = at::empty_like(input);
      Check(group_->AllToAll(output, input, o)->Wait(), "halo exchange");
      if (has_above) above = rows_back(output.narrow(0, 0, halo));
      if (has_below) below = rows_back(output.narrow(0, has_above ? halo : 0, halo));
    }
    std::vector<int64_t> edge_shape = x.sizes().vec();
    edge_shape[edge_shape.size() - 2] = halo;
    if (!has_above) above = at::zeros(edge_shape, x.options());
    if (!has_below) below = at::zeros(edge_shape, x.options());
    return at::cat({above, x, below}, -2);
  }

  at::Tensor GatherRows(const at::Tensor& x, const std::vector<int64_t>& rows) override {
    const int p = world(), r = rank();
    TORCH_CHECK(x.dim() >= 2 && static_cast<int>(rows.size()) == p && rows[static_cast<size_t>(r)] == x.size(-2),
                "parallel VAE GatherRows: rank ", r, " holds ", x.sizes(), ", the split says ", rows);
    if (p == 1) return x;
    const int64_t most = *std::max_element(rows.begin(), rows.end());
    at::Tensor mine = x.movedim(-2, 0);  // [rows, ...]
    if (mine.size(0) < most) {
      std::vector<int64_t> pad_shape = mine.sizes().vec();
      pad_shape[0] = most - mine.size(0);
      mine = at::cat({mine, at::zeros(pad_shape, mine.options())}, 0);
    }
    mine = mine.contiguous();
    std::vector<int64_t> out_shape = mine.sizes().vec();
    out_shape[0] = most * p;
    at::Tensor all = at::empty(out_shape, mine.options());
    Check(group_->AllGatherIntoTensor(all, mine)->Wait(), "row gather");
    std::vector<at::Tensor> parts;
    for (int q = 0; q < p; ++q) {
      if (rows[static_cast<size_t>(q)] > 0) parts.push_back(all.narrow(0, q * most, rows[static_cast<size_t>(q)]));
    }
    return at::cat(parts, 0).movedim(0, -2).contiguous();
  }

 private:
  void Check(const Status& s, const char* what) const {
    TORCH_CHECK(s.ok(), "parallel VAE ", what, " failed on rank ", rank(), " of ", group_->GroupName(), ": ",
                s.ToString());
  }

  CommunicatorPtr group_;
};

}  // namespace

StatusOr<std::shared_ptr<models::vae::SpatialParallel>> MakeSpatialParallel(CommunicatorPtr group) {
  if (group == nullptr) return Status::InvalidArgument("MakeSpatialParallel: no communicator group given");
  return std::shared_ptr<models::vae::SpatialParallel>(std::make_shared<CommSpatialParallel>(std::move(group)));
}

}  // namespace liveavatar::dist
