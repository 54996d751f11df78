#include "cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <atomic>
#include <cstdlib>
#include <algorithm>
#include <cstring>

namespace ranklm::kern {

namespace {

Isa detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // __builtin_cpu_supports also checks that the OS enabled the register state (XCR0).
  // F16C from CPUID leaf 1 (ECX bit 29): clang before 16 has no "f16c" for __builtin_cpu_supports.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29)) != 0;
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512vnni");
  if (avx512) return Isa::Avx512;
  if (avx2) return Isa::Avx2;
#endif
  return Isa::Scalar;
}

Isa initial() {
  Isa isa = detected_isa();
  if (const char* env = std::getenv("RANKLM_ISA")) {
    Isa want;
    if (parse_isa(env, want) && static_cast<int>(want) < static_cast<int>(isa)) isa = want;
  }
  return isa;
}

std::atomic<int>& active() {
  static std::atomic<int> level{static_cast<int>(initial())};
  return level;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
  }
  return "?";
}

bool parse_isa(const char* name, Isa& out) {
  if (std::strcmp(name, "scalar") == 0) out = Isa::Scalar;
  else if (std::strcmp(name, "avx2") == 0) out = Isa::Avx2;
  else if (std::strcmp(name, "avx512") == 0) out = Isa::Avx512;
  else return false;
  return true;
}

Isa detected_isa() {
  static const Isa isa = detect();
  return isa;
}

Isa active_isa() { return static_cast<Isa>(active().load(std::memory_order_relaxed)); }

Isa set_isa(Isa isa) {
  const int level = std::min(static_cast<int>(isa), static_cast<int>(detected_isa()));
  active().store(level);
  return static_cast<Isa>(level);
}

}  // namespace ranklm::kern
