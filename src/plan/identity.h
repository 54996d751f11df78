// A GGUF file's identity for plans and shards: architecture, the sizes a plan is checked
// against, and a hash of the header, metadata and tensor table (not the weights: the table
// already pins every tensor's name, type, shape and offset, and hashing it is instant).
#pragma once

#include "io/gguf.h"
#include "plan/plan.h"
#include "plan/tp_slice.h"

namespace ranklm::plan {

ModelIdentity model_identity(const gguf::File& f);

// The sizes tensor-parallel slicing needs, from the file: head size, FFN width, and the largest
// block size among the attn_output / ffn_down tensors (the ones cut by columns).
TpShape tp_shape(const gguf::File& f);

// Checks that every stage's TP size can slice this file's tensors (block boundaries); throws
// ranklm::Error with the reason otherwise.
void check_tp_slicing(const gguf::File& f, const Plan& p);

}  // namespace ranklm::plan
