// The model side of spatial-parallel decoding (spatial_parallel.h) without dist/: the "ranks" are threads of this
// process sharing a board (a test double of SpatialParallel built on a barrier), so the decoder's halo and gather
// logic is checked on any build. The Gloo multi-process version is tests/dist/parallel_vae_test.cpp.
#include <chrono>
#include <cmath>
#include <iostream>
#include <memory>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/models/vae/spatial_parallel.h"
#include "liveavatar/models/vae/vae.h"
#include "liveavatar/models/vae/weights.h"
#include "liveavatar/testing/golden.h"
#include "liveavatar/testing/synthetic.h"

namespace liveavatar::models::vae {
namespace {

using testing::RelL2;

// Shared by the threads of one split: one slot per rank and a reusable barrier (fails after 60 s instead of
// hanging when a thread died).
class Board {
 public:
  explicit Board(int world) : world_(world), slots_(static_cast<size_t>(world)) {}

  void Sync() {
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t generation = generation_;
    if (++arrived_ == world_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    if (!cv_.wait_for(lock, std::chrono::seconds(60), [&] { return generation_ != generation; })) {
      throw std::runtime_error("Board::Sync: a rank never arrived");
    }
  }
  // Publishes `t` as rank r's slot, waits for every rank, returns all slots (valid until the next Finish()).
  const std::vector<at::Tensor>& Exchange(int r, const at::Tensor& t) {
    slots_[static_cast<size_t>(r)] = t;
    Sync();
    return slots_;
  }
  // Every rank is done reading the slots.
  void Finish() { Sync(); }

 private:
  const int world_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  int64_t generation_ = 0;
  std::vector<at::Tensor> slots_;
};

class ThreadRank final : public SpatialParallel {
 public:
  ThreadRank(Board* board, int world, int rank) : board_(board), world_(world), rank_(rank) {}
  int world() const override { return world_; }
  int rank() const override { return rank_; }

  at::Tensor ExchangeHalo(const at::Tensor& x, int64_t halo) override {
    ++halo_exchanges;
    const auto& all = board_->Exchange(rank_, x);
    std::vector<int64_t> edge = x.sizes().vec();
    edge[edge.size() - 2] = halo;
    at::Tensor above = rank_ > 0 ? all[rank_ - 1].narrow(-2, all[rank_ - 1].size(-2) - halo, halo).clone()
                                 : at::zeros(edge, x.options());
    at::Tensor below = rank_ + 1 < world_ ? all[rank_ + 1].narrow(-2, 0, halo).clone() : at::zeros(edge, x.options());
    board_->Finish();
    return at::cat({above, x, below}, -2);
  }

  at::Tensor GatherRows(const at::Tensor& x, const std::vector<int64_t>& rows) override {
    ++gathers;
    const auto& all = board_->Exchange(rank_, x);
    std::vector<at::Tensor> parts;
    for (int r = 0; r < world_; ++r) {
      if (all[r].size(-2) != rows[static_cast<size_t>(r)]) throw std::runtime_error("GatherRows: rows mismatch");
      parts.push_back(all[r]);
    }
    at::Tensor out = at::cat(parts, -2);
    board_->Finish();
    return out;
  }

  int halo_exchanges = 0;
  int gathers = 0;

 private:
  Board* board_;
  const int world_;
  const int rank_;
};

WanVae RandomVae(at::ScalarType dtype) {
  VaeConfig config;
  config.dim = 4;
  config.attn_scales = {0.25, 0.5};  // attention inside decoder levels 0 and 1 besides the middle block
  return testing::RandomVae(config, 5, dtype);
}

// Streams `latents` in `chunks` on `world` thread-ranks; returns every rank's outputs per call (full frames from
// Decode) and fills `local` with the DecodeLocal slabs of the last call.
std::vector<std::vector<at::Tensor>> RunSplit(const WanVae& vae, const at::Tensor& latents,
                                              const std::vector<int64_t>& chunks, int world,
                                              std::vector<at::Tensor>* local, std::vector<int>* exchanges) {
  Board board(world);
  std::vector<std::vector<at::Tensor>> outs(static_cast<size_t>(world));
  std::vector<std::string> errors(static_cast<size_t>(world));
  local->assign(static_cast<size_t>(world), at::Tensor());
  exchanges->assign(static_cast<size_t>(world), 0);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto rank = std::make_shared<ThreadRank>(&board, world, r);
        StreamingDecoder decoder(&vae, rank);
        StreamingDecoder slab(&vae, rank);
        // An empty call first: no frames, full-frame shape from Decode, slab shape from DecodeLocal.
        const at::Tensor none = decoder.Decode(latents.narrow(2, 0, 0));
        const at::Tensor none_local = slab.DecodeLocal(latents.narrow(2, 0, 0));
        if (none.size(2) != 0 || none.size(3) != 8 * latents.size(3) ||
            none_local.size(3) != 8 * SplitRows(latents.size(3), world)[static_cast<size_t>(r)]) {
          throw std::runtime_error("empty call: wrong shapes");
        }
        int64_t start = 0;
        for (int64_t n : chunks) {
          const at::Tensor chunk = latents.narrow(2, start, n);
          start += n;
          outs[static_cast<size_t>(r)].push_back(decoder.Decode(chunk));
          (*local)[static_cast<size_t>(r)] = slab.DecodeLocal(chunk);
        }
        (*exchanges)[static_cast<size_t>(r)] = rank->halo_exchanges;
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < world; ++r) EXPECT_EQ(errors[static_cast<size_t>(r)], "") << "rank " << r;
  return outs;
}

void ExpectSplitEqualsSingle(int64_t h, int world, at::ScalarType dtype) {
  const WanVae vae = RandomVae(dtype);
  at::manual_seed(9);
  const at::Tensor latents = at::randn({1, 16, 4, h, 3});
  const std::vector<int64_t> chunks = {1, 2, 1};
  ASSERT_TRUE(CheckSpatialSplit(vae.config, h, world).ok());

  StreamingDecoder single(&vae);
  std::vector<at::Tensor> expect;
  int64_t start = 0;
  for (int64_t n : chunks) {
    expect.push_back(single.Decode(latents.narrow(2, start, n)));
    start += n;
  }
  std::vector<at::Tensor> local;
  std::vector<int> exchanges;
  const auto outs = RunSplit(vae, latents, chunks, world, &local, &exchanges);
  const double tol = dtype == at::kFloat ? 1e-5 : 5e-2;
  for (int r = 0; r < world; ++r) {
    ASSERT_EQ(outs[static_cast<size_t>(r)].size(), chunks.size());
    for (size_t i = 0; i < chunks.size(); ++i) {
      const at::Tensor& got = outs[static_cast<size_t>(r)][i];
      ASSERT_EQ(got.sizes(), expect[i].sizes());
      const double err = RelL2(got, expect[i]);
      std::cout << "[ measured ] h=" << h << " world=" << world << " " << c10::toString(dtype) << " rank " << r
                << " call " << i << ": split vs single rel L2 " << err << std::endl;
      EXPECT_LE(err, tol);
    }
    // The DecodeLocal slab is this rank's rows of the last call.
    int64_t first = 8 * SplitOffset(h, world, r), count = 8 * SplitRows(h, world)[static_cast<size_t>(r)];
    const at::Tensor& slab = local[static_cast<size_t>(r)];
    ASSERT_EQ(slab.size(3), count);
    EXPECT_TRUE(slab.equal(outs[static_cast<size_t>(r)].back().narrow(3, first, count)));
  }
  // Tiny config: 1 + 4 + 3·4·2 + 3 + 1 = 33 convs with a 3-row kernel per latent frame, both decoders.
  const int64_t frames = latents.size(2);
  for (int r = 0; r < world; ++r) EXPECT_EQ(exchanges[static_cast<size_t>(r)], 2 * 33 * frames) << "rank " << r;
}

TEST(VaeSpatialSplitTest, TwoThreadRanksEqualTheSingleRankStream) { ExpectSplitEqualsSingle(5, 2, at::kFloat); }

TEST(VaeSpatialSplitTest, ThreeThreadRanksOneLatentRowEach) { ExpectSplitEqualsSingle(3, 3, at::kFloat); }

TEST(VaeSpatialSplitTest, FourThreadRanksUnevenSlabsBf16) { ExpectSplitEqualsSingle(6, 4, at::kBFloat16); }

TEST(VaeSpatialSplitTest, SplitGeometryAndRefusals) {
  EXPECT_EQ(SplitRows(50, 4), (std::vector<int64_t>{13, 13, 12, 12}));
  EXPECT_EQ(SplitRows(2, 3), (std::vector<int64_t>{1, 1, 0}));
  EXPECT_EQ(SplitOffset(50, 4, 3), 38);
  VaeConfig c;
  EXPECT_TRUE(CheckSpatialSplit(c, 50, 4).ok());
  const Status few = CheckSpatialSplit(c, 2, 3);
  EXPECT_EQ(few.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(few.message().find("latent height 2 (16 pixels) cannot be split over 3 VAE ranks"), std::string::npos)
      << few.message();
  c.tile_decode = true;
  EXPECT_EQ(CheckSpatialSplit(c, 50, 4).code(), Status::Code::kInvalidArgument);
  EXPECT_TRUE(CheckSpatialSplit(c, 50, 1).ok());  // a group of one is the whole-frame path, tiling included
  EXPECT_EQ(CheckSpatialSplit(c, 50, 0).code(), Status::Code::kInvalidArgument);
}

TEST(VaeSpatialSplitTest, TooFewRowsThrowsBeforeAnyExchange) {
  const WanVae vae = RandomVae(at::kFloat);
  Board board(3);
  auto rank = std::make_shared<ThreadRank>(&board, 3, 0);
  StreamingDecoder decoder(&vae, rank);
  EXPECT_THROW((void)decoder.Decode(at::zeros({1, 16, 1, 2, 3})), c10::Error);
  EXPECT_EQ(rank->halo_exchanges, 0);
}

}  // namespace
}  // namespace liveavatar::models::vae
