// Kernels against their reference twins on random data (never zeros), odd sizes, every type.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "kernels/cpu.h"
#include "kernels/fp16.h"
#include "kernels/packed.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/types.h"
#include "test_util.h"

namespace ranklm::kern {
namespace {

// Sum of squared differences of y from ref, and sum of squares of ref.
std::pair<double, double> squared_error(const std::vector<float>& y, const std::vector<float>& ref) {
  double err = 0, mag = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    err += std::pow(double(y[i]) - ref[i], 2);
    mag += double(ref[i]) * ref[i];
  }
  return {err, mag};
}

// Random blocks of a weight type with sane fp16 scales (random bytes elsewhere).
std::vector<uint8_t> random_row(GgmlType t, int64_t n, uint32_t seed) {
  const TypeTraits& tt = traits(t);
  std::mt19937 rng(seed);
  if (!tt.block_size || tt.block_size == 1) {
    const auto f = test::random_floats(n, seed);
    std::vector<uint8_t> out(row_bytes(tt, n));
    tt.quantize(f.data(), out.data(), n);
    return out;
  }
  std::vector<uint8_t> out(row_bytes(tt, n));
  for (auto& b : out) b = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> sd(0.001f, 0.05f);
  auto h = [&] { return fp32_to_fp16(sd(rng)); };
  const int64_t nb = n / tt.block_size;
  for (int64_t i = 0; i < nb; ++i) {
    uint8_t* p = out.data() + i * tt.type_size;
    switch (t) {
      case GgmlType::Q4_0: reinterpret_cast<BlockQ4_0*>(p)->d = h(); break;
      case GgmlType::Q4_1: reinterpret_cast<BlockQ4_1*>(p)->d = h(); reinterpret_cast<BlockQ4_1*>(p)->m = h(); break;
      case GgmlType::Q5_0: reinterpret_cast<BlockQ5_0*>(p)->d = h(); break;
      case GgmlType::Q5_1: reinterpret_cast<BlockQ5_1*>(p)->d = h(); reinterpret_cast<BlockQ5_1*>(p)->m = h(); break;
      case GgmlType::Q8_0: reinterpret_cast<BlockQ8_0*>(p)->d = h(); break;
      case GgmlType::Q2_K: reinterpret_cast<BlockQ2_K*>(p)->d = h(); reinterpret_cast<BlockQ2_K*>(p)->dmin = h(); break;
      case GgmlType::Q3_K: reinterpret_cast<BlockQ3_K*>(p)->d = h(); break;
      case GgmlType::Q4_K: reinterpret_cast<BlockQ4_K*>(p)->d = h(); reinterpret_cast<BlockQ4_K*>(p)->dmin = h(); break;
      case GgmlType::Q5_K: reinterpret_cast<BlockQ5_K*>(p)->d = h(); reinterpret_cast<BlockQ5_K*>(p)->dmin = h(); break;
      case GgmlType::Q6_K: reinterpret_cast<BlockQ6_K*>(p)->d = h(); break;
      case GgmlType::Q8_K: reinterpret_cast<BlockQ8_K*>(p)->d = sd(rng); break;
      default: break;
    }
  }
  return out;
}

const GgmlType kWeightTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0,
                                 GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0,
                                 GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K,
                                 GgmlType::Q6_K};

class TypeTest : public ::testing::TestWithParam<GgmlType> {};

TEST_P(TypeTest, VecDotMatchesFloat64Reference) {
  const TypeTraits& wt = traits(GetParam());
  const TypeTraits& at = traits(wt.vec_dot_type);
  for (int64_t blocks : {1, 3, 7}) {
    const int64_t n = blocks * std::max<int64_t>(wt.block_size, 32) * (wt.block_size == 1 ? 3 : 1) + (wt.block_size == 1 ? 5 : 0);
    const auto w = random_row(GetParam(), n, static_cast<uint32_t>(n));
    const auto x = test::random_floats(n, static_cast<uint32_t>(n + 1));
    std::vector<uint8_t> a(row_bytes(at, n));
    at.quantize(x.data(), a.data(), n);
    const double ref = vec_dot_reference(GetParam(), n, w.data(), a.data());
    // Scale of the sum: sum |w_i * a_i|.
    std::vector<float> wf(n), af(n);
    wt.dequantize(w.data(), wf.data(), n);
    at.dequantize(a.data(), af.data(), n);
    double mag = 0;
    for (int64_t i = 0; i < n; ++i) mag += std::fabs(double(wf[i]) * af[i]);
    ASSERT_GT(mag, 0.0);
    const float fast = wt.vec_dot(n, w.data(), a.data());
    EXPECT_NEAR(fast, ref, 2e-6 * mag + 1e-7) << wt.name << " n=" << n;
  }
}

TEST_P(TypeTest, DequantizeIsFiniteAndNotConstant) {
  const TypeTraits& wt = traits(GetParam());
  const int64_t n = 2 * std::max<int64_t>(wt.block_size, 32);
  const auto w = random_row(GetParam(), n, 99);
  std::vector<float> f(n);
  wt.dequantize(w.data(), f.data(), n);
  float lo = f[0], hi = f[0];
  for (float v : f) {
    ASSERT_TRUE(std::isfinite(v));
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  EXPECT_LT(lo, hi);
}

TEST_P(TypeTest, MatmulMatchesReference) {
  const TypeTraits& wt = traits(GetParam());
  const int64_t cols = 2 * std::max<int64_t>(wt.block_size, 32);
  // 5 tokens: the per-row dot products; 70: float types take the blocked sgemm path (rows
  // span two 64-row blocks on one of the threads).
  for (const int64_t n_tok : {5, 70}) {
    const int64_t rows = 150;
    const auto w = random_row(GetParam(), rows * cols, 7);
    const auto x = test::random_floats(n_tok * cols, 8);
    MatrixView mv{GetParam(), w.data(), rows, cols};
    std::vector<float> y(n_tok * rows), yr(n_tok * rows);
    ThreadPool pool(2);
    std::vector<uint8_t> scratch;
    matmul(mv, x.data(), n_tok, y.data(), pool, scratch);
    matmul_reference(mv, x.data(), n_tok, yr.data());
    const auto [err, mag] = squared_error(y, yr);
    ASSERT_GT(mag, 0.0);
    EXPECT_LT(std::sqrt(err / mag), 1e-5) << wt.name << " n_tok " << n_tok;
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, TypeTest, ::testing::ValuesIn(kWeightTypes),
                         [](const auto& info) { return std::string(type_name(info.param)); });

// Packed layouts: every compiled level (scalar twin, AVX2, AVX-512 VNNI, as far as this CPU
// goes) against the float64 reference on the GGUF layout, and bit for bit against the scalar
// twin. 19 rows: a whole group of 16 and a padded one; token counts use every tile size (1, 2,
// 4, 8 and remainders); row lengths from one block (or super-block) up.
struct PackedCase {
  GgmlType type;
  Isa isa;
};

class PackedTest : public ::testing::TestWithParam<PackedCase> {
 protected:
  void SetUp() override { initial_ = active_isa(); }
  void TearDown() override { set_isa(initial_); }  // keeps a RANKLM_ISA cap for later tests
  Isa initial_ = Isa::Scalar;
};

TEST_P(PackedTest, MatchesReference) {
  const auto [type, isa] = GetParam();
  if (static_cast<int>(isa) > static_cast<int>(detected_isa())) {
    GTEST_SKIP() << "this CPU lacks " << isa_name(isa);
  }
  const TypeTraits& wt = traits(type);
  const bool k_quant = traits(type).block_size == 256;  // rows of whole 256-element super-blocks, Q8_K activations
  const std::vector<int64_t> shapes = k_quant ? std::vector<int64_t>{256, 512, 768, 2048 + 256, 4096}
                                              : std::vector<int64_t>{128, 512, 256 + 64, 32, 96, 1024 + 32 * 3, 2048 + 512 + 32 * 15};
  for (const int64_t cols : shapes) {
    for (const int64_t n_tok : {1, 3, 8, 15, 71}) {
      const int64_t rows = 19;
      const auto w = random_row(type, rows * cols, static_cast<uint32_t>(cols + n_tok));
      const auto x = test::random_floats(n_tok * cols, static_cast<uint32_t>(cols * 3 + n_tok));
      MatrixView mv{type, w.data(), rows, cols};
      set_isa(isa == Isa::Scalar ? Isa::Avx2 : isa);  // packing itself needs a SIMD level
      std::vector<uint8_t> storage;
      MatrixView pv = pack_matrix(mv, storage);
      set_isa(isa);
      if (detected_isa() == Isa::Scalar) GTEST_SKIP() << "no SIMD level to pack for";
      ASSERT_TRUE(pv.packed);
      std::vector<float> y(n_tok * rows), yr(n_tok * rows), row(cols), rowr(cols);
      ThreadPool pool(2);
      std::vector<uint8_t> scratch;
      matmul(pv, x.data(), n_tok, y.data(), pool, scratch);
      matmul_reference(mv, x.data(), n_tok, yr.data());
      const auto [err, mag] = squared_error(y, yr);
      ASSERT_GT(mag, 0.0);
      EXPECT_LT(std::sqrt(err / mag), 1e-5) << wt.name << " " << isa_name(isa) << " cols " << cols
                                            << " n_tok " << n_tok;
      // Every level gives the scalar twin's bits (same integer products, same float steps).
      if (isa != Isa::Scalar) {
        std::vector<float> ys(y.size());
        set_isa(Isa::Scalar);
        matmul(pv, x.data(), n_tok, ys.data(), pool, scratch);
        set_isa(isa);
        ASSERT_EQ(y, ys) << wt.name << " " << isa_name(isa) << " cols " << cols << " n_tok " << n_tok;
      }
      // A range of rows that cuts both its row groups (as a rank's slice of the output head):
      // the same values as those rows of the whole product.
      const int64_t b = 3, e = 17;
      const MatrixView part = row_range(pv, b, e);
      std::vector<float> yp(n_tok * (e - b));
      matmul(part, x.data(), n_tok, yp.data(), pool, scratch);
      for (int64_t t = 0; t < n_tok; ++t) {
        for (int64_t r = b; r < e; ++r) ASSERT_EQ(yp[t * (e - b) + r - b], y[t * rows + r]) << "row " << r << " token " << t;
      }
      // The packed embedding lookup gives the reference dequantization exactly (a row of the
      // last, padded group too, and through the range view).
      for (const int64_t r : {int64_t{5}, rows - 1}) {
        get_row(pv, r, row.data());
        wt.dequantize(w.data() + r * row_bytes(wt, cols), rowr.data(), cols);
        EXPECT_EQ(row, rowr) << "row " << r;
      }
      get_row(part, 2, row.data());
      wt.dequantize(w.data() + (b + 2) * row_bytes(wt, cols), rowr.data(), cols);
      EXPECT_EQ(row, rowr);
    }
  }
}

// Grouped products (an MoE layer's experts): every job's outputs are the bits kern::matmul gives
// it alone, with jobs sharing their activations (gate and up of one expert), jobs of other
// types and row counts cut by the threads' ranges, an empty job, and an unpacked float job.
TEST(Packed, GroupedProductsEqualOneByOne) {
  if (detected_isa() == Isa::Scalar) GTEST_SKIP() << "no SIMD level to pack for";
  struct Spec { GgmlType type; int64_t rows, cols, n_tok; int x; };
  const std::vector<Spec> specs = {{GgmlType::Q4_K, 40, 512, 3, 0}, {GgmlType::Q4_K, 40, 512, 3, 0},
                                   {GgmlType::Q6_K, 23, 256, 5, 1}, {GgmlType::Q5_0, 17, 96, 1, 2},
                                   {GgmlType::Q8_0, 33, 512, 0, 3}, {GgmlType::F32, 9, 64, 2, 4},
                                   {GgmlType::Q4_0, 64, 256, 7, 5}};
  std::vector<std::vector<uint8_t>> w(specs.size()), storage(specs.size());
  std::vector<std::vector<float>> x(6), got(specs.size()), want(specs.size());
  std::vector<MatmulJob> jobs;
  ThreadPool pool(3);
  std::vector<uint8_t> scratch;
  for (size_t i = 0; i < specs.size(); ++i) {
    const Spec& sp = specs[i];
    w[i] = random_row(sp.type, sp.rows * sp.cols, static_cast<uint32_t>(11 + i));
    if (x[sp.x].empty()) x[sp.x] = test::random_floats(std::max<int64_t>(1, sp.n_tok) * sp.cols, static_cast<uint32_t>(70 + sp.x));
    const MatrixView plain{sp.type, w[i].data(), sp.rows, sp.cols};
    const MatrixView mv = sp.type == GgmlType::F32 ? plain : pack_matrix(plain, storage[i]);  // one unpacked job
    if (active_isa() != Isa::Scalar) {
      EXPECT_EQ(mv.packed, sp.type != GgmlType::F32);  // scalar: nothing packs
    }
    got[i].assign(static_cast<size_t>(std::max<int64_t>(1, sp.n_tok) * sp.rows), -7.0f);
    want[i] = got[i];
    if (sp.n_tok > 0) matmul(mv, x[sp.x].data(), sp.n_tok, want[i].data(), pool, scratch);
    jobs.push_back({mv, x[sp.x].data(), sp.n_tok, got[i].data()});
  }
  matmul_grouped(jobs.data(), static_cast<int>(jobs.size()), pool, scratch);
  for (size_t i = 0; i < specs.size(); ++i) EXPECT_EQ(got[i], want[i]) << "job " << i;
  EXPECT_NE(want[0], std::vector<float>(want[0].size(), -7.0f));
}

TEST(Packed, ActivationConversionIsTheSameAtEveryLevel) {
  // Chunks plus a tail, a block of zeros, a block with a half-way value (round to even) and
  // large and tiny magnitudes.
  const int64_t cols = 32 * 37;
  for (const float scale : {1.0f, 1e-6f, 3e4f}) {
    auto x = test::random_floats(cols, 77, scale);
    for (int i = 0; i < 32; ++i) x[64 + i] = 0.0f;
    x[128] = 127.0f * scale;
    x[129] = 2.5f * scale;  // 2.5 with d = scale: a tie
    for (const ActQ8Format f : {ActQ8Format{8, true}, ActQ8Format{16, true}, ActQ8Format{0, false}}) {
      std::vector<uint8_t> ref(act_q8_bytes(cols));
      quantize_act_q8_at(Isa::Scalar, x.data(), cols, f, ref.data());
      for (const Isa isa : {Isa::Avx2, Isa::Avx512}) {
        if (isa > detected_isa()) continue;
        std::vector<uint8_t> got(ref.size(), 0xAA);
        quantize_act_q8_at(isa, x.data(), cols, f, got.data());
        ASSERT_EQ(got, ref) << isa_name(isa) << " scale " << scale << " bias " << f.bias;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Levels, PackedTest,
    ::testing::Values(PackedCase{GgmlType::Q4_0, Isa::Scalar}, PackedCase{GgmlType::Q4_0, Isa::Avx2},
                      PackedCase{GgmlType::Q4_0, Isa::Avx512}, PackedCase{GgmlType::Q4_1, Isa::Scalar},
                      PackedCase{GgmlType::Q4_1, Isa::Avx2}, PackedCase{GgmlType::Q4_1, Isa::Avx512},
                      PackedCase{GgmlType::Q4_K, Isa::Scalar}, PackedCase{GgmlType::Q4_K, Isa::Avx2},
                      PackedCase{GgmlType::Q4_K, Isa::Avx512}, PackedCase{GgmlType::Q6_K, Isa::Scalar},
                      PackedCase{GgmlType::Q6_K, Isa::Avx2}, PackedCase{GgmlType::Q6_K, Isa::Avx512},
                      PackedCase{GgmlType::Q8_0, Isa::Scalar},
                      PackedCase{GgmlType::Q8_0, Isa::Avx2}, PackedCase{GgmlType::Q8_0, Isa::Avx512},
                      PackedCase{GgmlType::Q5_0, Isa::Scalar}, PackedCase{GgmlType::Q5_0, Isa::Avx2},
                      PackedCase{GgmlType::Q5_0, Isa::Avx512}, PackedCase{GgmlType::Q5_1, Isa::Scalar},
                      PackedCase{GgmlType::Q5_1, Isa::Avx2}, PackedCase{GgmlType::Q5_1, Isa::Avx512},
                      PackedCase{GgmlType::Q5_K, Isa::Scalar}, PackedCase{GgmlType::Q5_K, Isa::Avx2},
                      PackedCase{GgmlType::Q5_K, Isa::Avx512}, PackedCase{GgmlType::Q2_K, Isa::Scalar},
                      PackedCase{GgmlType::Q2_K, Isa::Avx2}, PackedCase{GgmlType::Q2_K, Isa::Avx512},
                      PackedCase{GgmlType::Q3_K, Isa::Scalar}, PackedCase{GgmlType::Q3_K, Isa::Avx2},
                      PackedCase{GgmlType::Q3_K, Isa::Avx512}, PackedCase{GgmlType::F32, Isa::Scalar},
                      PackedCase{GgmlType::F32, Isa::Avx2}, PackedCase{GgmlType::F32, Isa::Avx512},
                      PackedCase{GgmlType::F16, Isa::Scalar}, PackedCase{GgmlType::F16, Isa::Avx2},
                      PackedCase{GgmlType::F16, Isa::Avx512}, PackedCase{GgmlType::BF16, Isa::Scalar},
                      PackedCase{GgmlType::BF16, Isa::Avx2}, PackedCase{GgmlType::BF16, Isa::Avx512}),
    [](const auto& info) {
      return std::string(type_name(info.param.type)) + "_" + isa_name(info.param.isa);
    });

#if defined(RANKLM_HAVE_AVX512_EMULATED)
}  // namespace
// tests/avx512_emulated.cpp: kernels/packed_avx512.cpp on SIMDe's portable AVX-512.
PackedGemmFn packed_gemm_avx512_emulated(GgmlType t);
namespace {

// The AVX-512 kernels, run through the emulation, give the scalar twin's bits for every packed
// type, on whole and cut row ranges and every token tile (1, 2, 4, 8 and their remainders), so
// they are checked on machines without AVX-512 too.
class PackedEmulated : public ::testing::TestWithParam<GgmlType> {};

TEST_P(PackedEmulated, Avx512EqualsScalarTwin) {
  if (detected_isa() == Isa::Scalar) GTEST_SKIP() << "the emulation runs on AVX2, FMA and F16C";
  const GgmlType type = GetParam();
  const TypeTraits& wt = traits(type);
  const bool k_quant = wt.block_size == 256;
  const bool float_w = type == GgmlType::F32 || type == GgmlType::F16 || type == GgmlType::BF16;
  for (const int64_t cols : k_quant ? std::vector<int64_t>{256, 768} : std::vector<int64_t>{128, 96 + 32 * 3}) {
    for (const int64_t n_tok : {1, 3, 8, 15}) {
      const int64_t rows = 35;
      const auto w = random_row(type, rows * cols, static_cast<uint32_t>(cols + 7 * n_tok));
      std::vector<uint8_t> packed(packed_bytes(type, rows, cols));
      pack_rows(type, w.data(), packed.data(), rows, cols);
      auto x = test::random_floats(n_tok * cols, static_cast<uint32_t>(cols * 5 + n_tok));
      std::vector<uint8_t> act;
      if (float_w) {  // float rows already rounded to the weight's type, as matmul hands them
        for (float& v : x) {
          std::vector<uint8_t> b(8);
          wt.quantize(&v, b.data(), 1);
          wt.dequantize(b.data(), &v, 1);
        }
        act.resize(x.size() * sizeof(float));
        std::memcpy(act.data(), x.data(), act.size());
      } else {
        act.resize(act_q8_bytes(cols) * static_cast<size_t>(n_tok));
        for (int64_t t = 0; t < n_tok; ++t) {
          quantize_act_q8_at(Isa::Scalar, x.data() + t * cols, cols, act_format(type), act.data() + t * act_q8_bytes(cols));
        }
      }
      const size_t rb = packed_row_bytes(type, cols);
      for (const auto& [r0, r1] : {std::pair<int64_t, int64_t>{0, rows}, {5, 29}}) {
        std::vector<float> ys((r1 - r0) * n_tok), ye(ys.size());
        packed_gemm(type, Isa::Scalar)(packed.data(), rb, r0, r1, cols, act.data(), n_tok, ys.data(), r1 - r0);
        packed_gemm_avx512_emulated(type)(packed.data(), rb, r0, r1, cols, act.data(), n_tok, ye.data(), r1 - r0);
        ASSERT_GT(std::fabs(ys[0]) + std::fabs(ys.back()), 0.0f);
        ASSERT_EQ(ye, ys) << wt.name << " cols " << cols << " n_tok " << n_tok << " rows " << r0 << ".." << r1;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, PackedEmulated, ::testing::ValuesIn(kWeightTypes),
                         [](const auto& info) { return std::string(type_name(info.param)); });
#endif

TEST(Isa, EnvironmentNamesParse) {
  Isa i;
  EXPECT_TRUE(parse_isa("avx2", i));
  EXPECT_EQ(i, Isa::Avx2);
  EXPECT_TRUE(parse_isa("scalar", i));
  EXPECT_EQ(i, Isa::Scalar);
  EXPECT_FALSE(parse_isa("avx9", i));
  const Isa before = active_isa();
  EXPECT_EQ(set_isa(Isa::Avx512), detected_isa() >= Isa::Avx512 ? Isa::Avx512 : detected_isa());
  set_isa(before);
}

TEST(Quantize, Q8_0RoundTripWithinHalfStep) {
  const int64_t n = 32 * 9;
  const auto x = test::random_floats(n, 5);
  std::vector<BlockQ8_0> q(n / 32);
  traits(GgmlType::Q8_0).quantize(x.data(), q.data(), n);
  std::vector<float> y(n);
  traits(GgmlType::Q8_0).dequantize(q.data(), y.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    const float d = fp16_to_fp32(q[i / 32].d);
    EXPECT_LE(std::fabs(x[i] - y[i]), 0.5f * d + 1e-3f * std::fabs(x[i]) + 1e-6f) << i;
  }
}

TEST(Quantize, Q8_KRoundTripAndBlockSums) {
  const int64_t n = 256 * 3;
  const auto x = test::random_floats(n, 6);
  std::vector<BlockQ8_K> q(n / 256);
  traits(GgmlType::Q8_K).quantize(x.data(), q.data(), n);
  std::vector<float> y(n);
  traits(GgmlType::Q8_K).dequantize(q.data(), y.data(), n);
  for (int64_t i = 0; i < n; ++i) EXPECT_LE(std::fabs(x[i] - y[i]), 0.5f * std::fabs(q[i / 256].d) + 1e-6f);
  for (const auto& b : q) {
    for (int j = 0; j < 16; ++j) {
      int s = 0;
      for (int i = 0; i < 16; ++i) s += b.qs[16 * j + i];
      EXPECT_EQ(b.bsums[j], s);
    }
  }
}

TEST(Fp16, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(fp32_to_fp16(f), h) << h;
  }
  EXPECT_EQ(fp32_to_fp16(1.0f + 1.0f / 4096), fp32_to_fp16(1.0f));  // tie rounds to even
  EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00);                         // overflow -> inf
}

TEST(Ops, AttentionMatchesFloat64ReferenceAtEveryLevel) {
  // Every compiled level (the SIMD kernel takes head sizes that are multiples of 8; 36 goes to
  // the portable kernel at every level), against the float64 reference and against each other.
  const Isa initial = active_isa();
  // Head layouts: groups of 3, 16 (two chunks of 8 rows) and 1 (8 tokens per job); prompts
  // starting at 0 and continuing a cache.
  struct Shape { int n_head, n_kv, hd; int64_t pos0, n_tok; };
  for (const Shape sh : {Shape{6, 2, 36, 9, 5}, Shape{6, 2, 40, 9, 5}, Shape{6, 2, 64, 0, 11},
                         Shape{6, 2, 128, 9, 5}, Shape{16, 1, 64, 3, 3}, Shape{4, 4, 64, 0, 19},
                         Shape{4, 4, 32, 30, 1}}) {
    const int n_head = sh.n_head, n_kv = sh.n_kv, hd = sh.hd;
    const int64_t pos0 = sh.pos0, n_tok = sh.n_tok, n_ctx = pos0 + n_tok;
    const auto q = test::random_floats(n_tok * n_head * hd, 11 + hd);
    const auto kf = test::random_floats(n_ctx * n_kv * hd, 12 + hd);
    const auto vf = test::random_floats(n_ctx * n_kv * hd, 13 + hd);
    std::vector<uint16_t> k(kf.size()), v(vf.size());
    for (size_t i = 0; i < kf.size(); ++i) {
      k[i] = fp32_to_fp16(kf[i]);
      v[i] = fp32_to_fp16(vf[i]);
    }
    ThreadPool pool(2);
    const float scale = 1.0f / std::sqrt(float(hd));
    // No window, and sliding windows shorter than the context (rows of one job then start at
    // different keys) and of one key.
    for (const int64_t window : {int64_t{0}, int64_t{4}, int64_t{1}}) {
      std::vector<float> ref(q.size()), scalar(q.size());
      attention_reference(q.data(), k.data(), v.data(), n_tok, pos0, n_head, n_kv, hd, scale, ref.data(), window);
      for (const Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512}) {
        if (set_isa(isa) != isa) continue;
        std::vector<float> out(q.size());
        attention(q.data(), k.data(), v.data(), n_tok, pos0, n_head, n_kv, hd, scale, out.data(), pool, window);
        if (isa == Isa::Scalar) scalar = out;
        for (size_t i = 0; i < out.size(); ++i) {
          ASSERT_NEAR(out[i], ref[i], 3e-3 + 3e-3 * std::fabs(ref[i])) << isa_name(isa) << " hd " << hd << " window " << window << " i " << i;
          // Same algorithm and roundings as the portable kernel; only the dot product's summation
          // order differs, which can flip an fp16 rounding now and then.
          ASSERT_NEAR(out[i], scalar[i], 2e-3 + 2e-3 * std::fabs(ref[i])) << isa_name(isa) << " hd " << hd;
        }
      }
      set_isa(initial);
      if (window == 1) {
        // A window of one key: each row is its own value row (softmax of one score).
        for (int64_t t = 0; t < n_tok; ++t) {
          for (int h = 0; h < n_head; ++h) {
            const int kvh = h / (n_head / n_kv);
            for (int d = 0; d < hd; ++d) {
              ASSERT_NEAR(ref[(t * n_head + h) * hd + d], fp16_to_fp32(v[((pos0 + t) * n_kv + kvh) * hd + d]), 1e-6);
            }
          }
        }
      }
    }
  }
}

TEST(Ops, BatchedPagedAttentionEqualsOneSequenceAtATime) {
  // Several sequences of one call, each over its own block table (blocks of 4 positions taken
  // from one pool in a scattered order), give bit for bit what attention() gives each sequence
  // over a contiguous cache, at every level.
  const Isa initial = active_isa();
  const int n_head = 6, n_kv = 2, hd = 64;
  const int64_t kv = n_kv * hd, bl = 4;
  struct S { int64_t pos0, n_tok; };
  const std::vector<S> shapes = {{0, 7}, {13, 1}, {5, 3}, {0, 1}, {29, 2}};
  ThreadPool pool(2);
  for (const Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512}) {
    if (set_isa(isa) != isa) continue;
    std::vector<std::vector<float>> q, want, got;
    std::vector<std::vector<uint16_t>> kc, vc;
    std::vector<std::vector<uint16_t>> pool_k(64, std::vector<uint16_t>(bl * kv)), pool_v = pool_k;
    std::vector<std::vector<const uint16_t*>> kt, vt;
    int next_block = 0;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const int64_t n_ctx = shapes[i].pos0 + shapes[i].n_tok;
      q.push_back(test::random_floats(shapes[i].n_tok * n_head * hd, 40 + i));
      const auto kf = test::random_floats(n_ctx * kv, 50 + i), vf = test::random_floats(n_ctx * kv, 60 + i);
      kc.emplace_back(kf.size());
      vc.emplace_back(vf.size());
      for (size_t e = 0; e < kf.size(); ++e) {
        kc.back()[e] = fp32_to_fp16(kf[e]);
        vc.back()[e] = fp32_to_fp16(vf[e]);
      }
      want.emplace_back(q.back().size());
      got.emplace_back(q.back().size(), -1.0f);
      attention(q.back().data(), kc.back().data(), vc.back().data(), shapes[i].n_tok, shapes[i].pos0, n_head, n_kv, hd,
                0.125f, want.back().data(), pool);
      kt.emplace_back();
      vt.emplace_back();
      for (int64_t b = 0; b * bl < n_ctx; ++b) {
        const int blk = (next_block++ * 37) % 64;  // scattered, never reused
        for (int64_t e = 0; e < bl * kv && b * bl * kv + e < n_ctx * kv; ++e) {
          pool_k[blk][e] = kc.back()[b * bl * kv + e];
          pool_v[blk][e] = vc.back()[b * bl * kv + e];
        }
        kt.back().push_back(pool_k[blk].data());
        vt.back().push_back(pool_v[blk].data());
      }
    }
    std::vector<AttnSeq> seqs;
    for (size_t i = 0; i < shapes.size(); ++i) {
      seqs.push_back({q[i].data(), got[i].data(), kt[i].data(), vt[i].data(), bl, shapes[i].n_tok, shapes[i].pos0});
    }
    attention_batch(seqs.data(), static_cast<int>(seqs.size()), n_head, n_kv, hd, 0.125f, pool);
    for (size_t i = 0; i < shapes.size(); ++i) ASSERT_EQ(got[i], want[i]) << isa_name(isa) << " sequence " << i;
  }
  set_isa(initial);
}

TEST(Ops, GeluMulFollowsTheTanhFormRoundedToFp16) {
  auto x = test::random_floats(4000, 31);
  for (size_t i = 0; i < x.size(); ++i) x[i] *= 6.0f;  // -6 .. 6, the curved part
  x.push_back(-12.0f);
  x.push_back(11.0f);
  const auto up = test::random_floats(x.size(), 32);
  std::vector<float> g = x;
  gelu_mul_inplace(g.data(), up.data(), static_cast<int64_t>(g.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const double xv = x[i];
    const double want = 0.5 * xv * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (xv + 0.044715 * xv * xv * xv))) * up[i];
    // fp16 input and output: about 2^-11 relative, plus the input's rounding times the slope.
    ASSERT_NEAR(g[i], want, 2e-3 * (std::fabs(want) + std::fabs(up[i]) * (1 + std::fabs(xv)))) << x[i];
  }
  EXPECT_EQ(g[g.size() - 2], 0.0f);
  EXPECT_EQ(g[g.size() - 1], 11.0f * up.back());
}

TEST(Ops, RmsNormAndSoftmax) {
  const auto x = test::random_floats(3 * 50, 21);
  const auto w = test::random_floats(50, 22);
  std::vector<float> y(x.size());
  rms_norm(x.data(), w.data(), 3, 50, 1e-5f, y.data());
  for (int r = 0; r < 3; ++r) {
    double ss = 0;
    for (int i = 0; i < 50; ++i) ss += double(x[r * 50 + i]) * x[r * 50 + i];
    const double s = 1.0 / std::sqrt(ss / 50 + 1e-5);
    for (int i = 0; i < 50; ++i) EXPECT_NEAR(y[r * 50 + i], x[r * 50 + i] * s * w[i], 1e-5);
  }
  auto p = test::random_floats(17, 23, 3.0f);
  const auto orig = p;
  softmax_inplace(p.data(), 17);
  double sum = 0, mx = -1e30;
  for (float v : orig) mx = std::max(mx, double(v));
  for (float v : orig) sum += std::exp(v - mx);
  for (int i = 0; i < 17; ++i) EXPECT_NEAR(p[i], std::exp(orig[i] - mx) / sum, 1e-6);
}

TEST(Ops, RopeRotatesPairsAndKeepsNorm) {
  auto x = test::random_floats(2 * 3 * 16, 31);
  const auto orig = x;
  const int32_t pos[2] = {0, 5};
  for (bool neox : {false, true}) {
    x = orig;
    RopeParams p;
    p.n_dims = 16;
    p.neox = neox;
    rope_inplace(x.data(), 2, 3, 16, pos, p);
    for (int i = 0; i < 3 * 16; ++i) EXPECT_FLOAT_EQ(x[i], orig[i]);  // position 0: identity
    // Position 5, pair 0 (theta = 5): explicit rotation.
    const int a = 48, b = neox ? 48 + 8 : 49;
    EXPECT_NEAR(x[a], orig[a] * std::cos(5.0) - orig[b] * std::sin(5.0), 1e-5);
    EXPECT_NEAR(x[b], orig[a] * std::sin(5.0) + orig[b] * std::cos(5.0), 1e-5);
  }
}

}  // namespace
}  // namespace ranklm::kern
