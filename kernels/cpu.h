// Instruction-set levels chosen at run time. One binary runs on every x86-64 node: kernels that
// need AVX2 or AVX-512 live in their own translation units, compiled for that level only, and
// are called only when the CPU reports the features (and the operating system saves the state).
#pragma once

namespace ranklm::kern {

enum class Isa : int {
  Scalar = 0,  // portable C++
  Avx2 = 1,    // AVX2 + FMA + F16C
  Avx512 = 2,  // AVX-512 F/BW/VL + VNNI (+ F16C, FMA)
};

const char* isa_name(Isa isa);

// The best level this CPU supports.
Isa detected_isa();

// The level kernels use: detected_isa(), lowered by the environment variable RANKLM_ISA
// (scalar, avx2, avx512) or by set_isa(); never above what the CPU supports.
Isa active_isa();

// Lowers (or restores) the active level; returns the level actually set (clamped to the CPU).
Isa set_isa(Isa isa);

// Parses "scalar", "avx2", "avx512"; returns false on anything else.
bool parse_isa(const char* name, Isa& out);

}  // namespace ranklm::kern
