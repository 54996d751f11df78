// kernels/packed_avx512.cpp compiled against SIMDe's portable AVX-512 (tests/emu512), so its
// kernels run on any CPU with AVX2, FMA and F16C: test_kernels checks them against the scalar
// twin bit for bit even where the machine has no AVX-512. Built with -mavx2 -mfma -mf16c: the
// float steps (fused multiply-adds, fp16 conversions) are the hardware's, as on AVX-512.
#define packed_gemm_avx512 packed_gemm_avx512_emulated
#include "packed_avx512.cpp"
#undef packed_gemm_avx512
