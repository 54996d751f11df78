// The communication layer without MPI: layouts computed from plans (every rank of several
// shapes), the ring allreduce and allgather on the in-process fake world for group sizes 1..8
// and odd lengths (against a float64 sum; every member must end with the same bits), Q8_0
// compression within its error bound, and waits that time out naming the silent rank.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <set>
#include <thread>

#include "comm/fake.h"
#include "comm/layout.h"
#include "comm/ring.h"
#include "plan/plan.h"
#include "test_util.h"

using namespace ranklm;
using namespace ranklm::comm;

namespace {

plan::ModelIdentity model(int64_t layers) { return test::tinyllama_identity(layers); }

// Runs f(rank) on one thread per rank of a fake world; rethrows the first failure.
void run_world(FakeWorld& w, const std::function<void(Comm&)>& f) {
  std::vector<std::thread> th;
  std::vector<std::exception_ptr> err(static_cast<size_t>(w.size()));
  for (int r = 0; r < w.size(); ++r) {
    th.emplace_back([&, r] {
      try {
        f(w.rank(r));
      } catch (...) {
        err[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : th) t.join();
  for (auto& e : err) if (e) std::rethrow_exception(e);
}

std::vector<float> random_vec(int64_t n, uint32_t seed) { return test::random_floats(static_cast<size_t>(n), seed); }

}  // namespace

TEST(Layout, EveryRankOfSeveralLayouts) {
  struct Case { int ranks, pp, tp; };
  for (const Case c : {Case{1, 1, 1}, Case{2, 2, 1}, Case{2, 1, 2}, Case{3, 3, 1}, Case{4, 2, 2}, Case{4, 1, 4},
                       Case{6, 3, 2}, Case{8, 2, 4}, Case{8, 8, 1}}) {
    const plan::Plan p = plan::make_plan(model(22), c.ranks, c.pp, c.tp, {});
    std::vector<int> received(static_cast<size_t>(c.ranks), 0);
    int64_t next_layer = 0;
    for (int r = 0; r < c.ranks; ++r) {
      const Layout l = Layout::of(p, r);
      SCOPED_TRACE(::testing::Message() << c.ranks << " ranks, pp " << c.pp << ", rank " << r);
      EXPECT_EQ(l.rank, r);
      EXPECT_EQ(l.n_stages, c.pp);
      EXPECT_EQ(l.stage, r / c.tp);
      EXPECT_EQ(l.tp_index, r % c.tp);
      ASSERT_EQ(l.tp.size(), c.tp);
      EXPECT_EQ(l.tp.ranks[static_cast<size_t>(l.tp.index)], r);
      EXPECT_EQ(l.is_first(), r < c.tp);
      EXPECT_EQ(l.is_last(), r >= c.ranks - c.tp);
      EXPECT_EQ(l.head_rank, c.ranks - c.tp);
      EXPECT_EQ(l.first_stage.size(), static_cast<size_t>(c.tp));
      if (l.tp_index == 0) {
        EXPECT_EQ(l.layer_begin, next_layer);
        next_layer = l.layer_end;
      }
      EXPECT_EQ(l.hidden_from < 0, l.is_first());
      EXPECT_EQ(l.hidden_to.empty(), l.is_last());
      for (int d : l.hidden_to) {
        ++received[static_cast<size_t>(d)];
        EXPECT_EQ(Layout::of(p, d).hidden_from, r) << "rank " << d << " must expect its input from " << r;
        EXPECT_EQ(Layout::of(p, d).stage, l.stage + 1);
      }
    }
    EXPECT_EQ(next_layer, 22);
    for (int r = 0; r < c.ranks; ++r) EXPECT_EQ(received[static_cast<size_t>(r)], r < c.tp ? 0 : 1) << "rank " << r;
  }
}

TEST(Layout, StagesOfDifferentTpSizes) {
  // Stage 0: TP 2 (ranks 0, 1); stage 1: TP 3 (ranks 2, 3, 4); stage 2: TP 1 (rank 5).
  plan::ModelIdentity m = model(6);
  m.n_head = 12;  // divisible by 2 and 3
  m.n_head_kv = 6;
  plan::Plan p = plan::make_plan(m, 6, 6, 1, {});
  p.stages = {{0, 2, {0, 1}}, {2, 5, {2, 3, 4}}, {5, 6, {5}}};
  p.output_stage = 2;
  plan::validate(p, "test");
  EXPECT_EQ(Layout::of(p, 0).hidden_to, (std::vector<int>{2, 4}));
  EXPECT_EQ(Layout::of(p, 1).hidden_to, (std::vector<int>{3}));
  EXPECT_EQ(Layout::of(p, 4).hidden_from, 0);
  EXPECT_EQ(Layout::of(p, 2).hidden_to, (std::vector<int>{5}));
  EXPECT_TRUE(Layout::of(p, 3).hidden_to.empty());
  EXPECT_TRUE(Layout::of(p, 4).hidden_to.empty());
  EXPECT_EQ(Layout::of(p, 5).hidden_from, 2);
  EXPECT_EQ(Layout::of(p, 5).head_rank, 5);
}

TEST(Ring, AllreduceMatchesAFloat64SumForGroupSizes1To8AndOddLengths) {
  for (size_t exchange_max : {size_t{0}, kExchangeMaxBytes}) {  // the ring, then the one-round exchange
  for (int size = 1; size <= 8; ++size) {
    for (int64_t n : {1, 3, 7, 31, 33, 100, 1001, 4099}) {
      FakeWorld w(size);
      std::vector<std::vector<float>> data(static_cast<size_t>(size));
      std::vector<double> want(static_cast<size_t>(n), 0.0);
      for (int r = 0; r < size; ++r) {
        data[static_cast<size_t>(r)] = random_vec(n, static_cast<uint32_t>(1000 * size + 17 * r + n));
        for (int64_t j = 0; j < n; ++j) want[static_cast<size_t>(j)] += data[static_cast<size_t>(r)][static_cast<size_t>(j)];
      }
      run_world(w, [&](Comm& c) {
        Group g;
        for (int r = 0; r < size; ++r) g.ranks.push_back(r);
        g.index = c.rank();
        RingBuffers buf;
        ring_allreduce(c, g, data[static_cast<size_t>(c.rank())].data(), n, Compression::kNone, buf, exchange_max);
      });
      for (int r = 0; r < size; ++r) {
        for (int64_t j = 0; j < n; ++j) {
          ASSERT_NEAR(data[static_cast<size_t>(r)][static_cast<size_t>(j)], want[static_cast<size_t>(j)], 1e-5 * size)
              << "size " << size << " n " << n << " rank " << r << " element " << j;
        }
        ASSERT_EQ(std::memcmp(data[static_cast<size_t>(r)].data(), data[0].data(), static_cast<size_t>(n) * 4), 0)
            << "rank " << r << " differs from rank 0 (size " << size << ", n " << n << ")";
      }
    }
  }
  }
}

TEST(Ring, Q8CompressedAllreduceIsWithinItsBoundAndIdenticalOnEveryMember) {
  for (size_t exchange_max : {size_t{0}, kExchangeMaxBytes}) {
  for (int size : {2, 3, 5, 8}) {
    for (int64_t n : {1, 31, 32, 33, 2048, 5000}) {
      FakeWorld w(size);
      std::vector<std::vector<float>> data(static_cast<size_t>(size));
      std::vector<double> want(static_cast<size_t>(n), 0.0);
      for (int r = 0; r < size; ++r) {
        data[static_cast<size_t>(r)] = random_vec(n, static_cast<uint32_t>(77 * size + r + n));
        for (int64_t j = 0; j < n; ++j) want[static_cast<size_t>(j)] += data[static_cast<size_t>(r)][static_cast<size_t>(j)];
      }
      const std::vector<std::vector<float>> inputs = data;
      run_world(w, [&](Comm& c) {
        Group g{{}, c.rank()};
        for (int r = 0; r < size; ++r) g.ranks.push_back(r);
        RingBuffers buf;
        ring_allreduce(c, g, data[static_cast<size_t>(c.rank())].data(), n, Compression::kQ8_0, buf, exchange_max);
      });
      // Error against the size of what was summed (partial sums are what gets quantized;
      // the sum itself can cancel to nearly nothing).
      double err = 0, ref = 0;
      for (int64_t j = 0; j < n; ++j) {
        const double d = data[0][static_cast<size_t>(j)] - want[static_cast<size_t>(j)];
        err += d * d;
      }
      for (const auto& x : inputs) for (float v : x) ref += static_cast<double>(v) * v;
      const double nrmse = std::sqrt(err / ref);
      // Each of the size-1 reduce-scatter hops quantizes a partial sum (relative RMS error
      // about 0.005 for normal data), and the owner quantizes the sum once more: the error
      // grows as sqrt((size + 1) / 2). The bound leaves 50% margin on that model.
      EXPECT_LT(nrmse, 0.0075 * std::sqrt((size + 1) / 2.0)) << "size " << size << " n " << n;
      if (n >= 32) {
        EXPECT_GT(nrmse, 0.0) << "compression changed nothing: was it used?";
      }
      for (int r = 1; r < size; ++r) {
        ASSERT_EQ(std::memcmp(data[static_cast<size_t>(r)].data(), data[0].data(), static_cast<size_t>(n) * 4), 0)
            << "rank " << r << " differs (size " << size << ", n " << n << ")";
      }
    }
  }
  }
}

TEST(Ring, SegmentsLargerThanOneMessageGoInPieces) {
  const int64_t n = 3'000'001;  // 6 MB segments at size 2: two messages each
  FakeWorld w(2);
  std::vector<std::vector<float>> data = {random_vec(n, 1), random_vec(n, 2)};
  const std::vector<float> a = data[0], b = data[1];
  run_world(w, [&](Comm& c) {
    Group g{{0, 1}, c.rank()};
    RingBuffers buf;
    ring_allreduce(c, g, data[static_cast<size_t>(c.rank())].data(), n, Compression::kNone, buf);
  });
  for (int64_t j = 0; j < n; j += 9973) ASSERT_EQ(data[1][static_cast<size_t>(j)], a[static_cast<size_t>(j)] + b[static_cast<size_t>(j)]);
  EXPECT_EQ(std::memcmp(data[0].data(), data[1].data(), static_cast<size_t>(n) * 4), 0);
}

TEST(Ring, AllgatherConcatenatesUnequalParts) {
  for (int size = 1; size <= 6; ++size) {
    FakeWorld w(size);
    std::vector<int64_t> counts;
    for (int r = 0; r < size; ++r) counts.push_back(3 + 5 * r);
    std::vector<std::vector<float>> parts, out(static_cast<size_t>(size));
    std::vector<float> want;
    for (int r = 0; r < size; ++r) {
      parts.push_back(random_vec(counts[static_cast<size_t>(r)], static_cast<uint32_t>(r + 40)));
      want.insert(want.end(), parts.back().begin(), parts.back().end());
    }
    run_world(w, [&](Comm& c) {
      Group g{{}, c.rank()};
      for (int r = 0; r < size; ++r) g.ranks.push_back(r);
      out[static_cast<size_t>(c.rank())].resize(want.size());
      ring_allgather(c, g, parts[static_cast<size_t>(c.rank())].data(), counts, out[static_cast<size_t>(c.rank())].data());
    });
    for (int r = 0; r < size; ++r) EXPECT_EQ(out[static_cast<size_t>(r)], want) << "size " << size << " rank " << r;
  }
}

TEST(Comm, AWaitThatNeverEndsFailsNamingTheSilentRank) {
  FakeWorld w(2);
  Comm& c = w.rank(0);
  c.set_timeout(std::chrono::milliseconds(200));
  float x = 0;
  const auto t0 = std::chrono::steady_clock::now();
  const std::string msg = test::error_message_of<CommError>([&] { c.recv(&x, sizeof x, 1, Tag::kHidden, "layer 3's input"); });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(msg.find("no hidden states came from rank 1 (host localhost, which runs ranks 0, 1)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("layer 3's input"), std::string::npos) << msg;
  EXPECT_NE(msg.find("may have died"), std::string::npos) << msg;
  EXPECT_LT(s, 5.0);
}

TEST(Comm, AMessageOfTheWrongSizeIsAnErrorNamingBothSizes) {
  FakeWorld w(2);
  float x[4] = {1, 2, 3, 4};
  w.rank(1).send(x, sizeof x, 0, Tag::kTokens, "test");
  float y[2];
  const std::string msg = test::error_message_of<Error>([&] { w.rank(0).recv(y, sizeof y, 1, Tag::kTokens, "test"); });
  EXPECT_NE(msg.find("16 bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("8 bytes were expected"), std::string::npos) << msg;
}
