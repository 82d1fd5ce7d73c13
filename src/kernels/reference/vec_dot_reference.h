// Private to src/kernels/reference: the unchecked dot kernels behind reference::vec_dot.
#pragma once

#include <cstdint>

#include "kernels/types.h"

namespace kvc::reference {

// Dot of one weight row (n elements of weight_type) with activations quantized to its
// dot_type. Arguments are not validated here; reference::vec_dot does that.
float vec_dot_blocks(TensorType weight_type, int64_t n, const void* weight_row,
                     const void* activations);

}  // namespace kvc::reference
