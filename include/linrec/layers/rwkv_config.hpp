#pragma once
// The shape of one RWKV block, shared by the RWKV-4 and RWKV-6 time-mix and channel-mix
// layers (their inits depend on the block's depth, so the block index travels with it).
#include "linrec/core/index.hpp"

namespace linrec::layers {

// Shape of one RWKV block (shared by RWKV-4 and RWKV-6 layers).
struct rwkv_config {
  index_t dim = 256;       // C
  index_t layer = 0;       // this block's index l
  index_t layers = 1;      // n
  index_t head_size = 64;  // RWKV-6: N, C = H·N
  index_t ffn_dim = 0;     // channel-mix hidden size F; 0 = the version's default
};

}  // namespace linrec::layers
