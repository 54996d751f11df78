// A GGUF file's identity for plans and shards: architecture, the sizes a plan is checked
// against, and a hash of the header, metadata and tensor table (not the weights: the table
// already pins every tensor's name, type, shape and offset, and hashing it is instant).
#pragma once

#include "io/gguf.h"
#include "plan/plan.h"

namespace ranklm::plan {

ModelIdentity model_identity(const gguf::File& f);

}  // namespace ranklm::plan
