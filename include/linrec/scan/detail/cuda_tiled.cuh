#pragma once
// The register-tiled CUDA scan for real operators (real_op<float>, real_op<double>): a single
// pass over memory, each input read once into registers and each output written once from
// registers, chunk carries passed between blocks by decoupled look-back.
//
// Two tile shapes, chosen by which dimension is contiguous in memory:
//
//  * rows (time contiguous, e.g. [B,C,T], or [B,T,1]): a tile is SUB·256·V consecutive steps
//    of one (batch, channel) row. Thread `tid` owns, in each of SUB sub-tiles, the V
//    consecutive steps at (i·256 + tid)·V, loaded as one 16-byte vector (coalesced across the
//    warp). A thread folds its V steps into a pair (∏a, h from zero); a warp-shuffle scan
//    over lanes and a pass over the per-warp totals in shared memory give each thread the
//    exclusive prefix of its steps within the tile; warp 0 looks back over earlier tiles of
//    the row (32 predecessors per round); each thread then writes h = a⊙h + b from the exact carry, from registers.
//
//  * channels (channel contiguous, [B,T,C]): a tile is (LANES·V channels) × (SLICES·L steps)
//    of one batch entry. Thread (slice, lane) owns L consecutive steps of V consecutive
//    channels (one 16-byte vector per step: a warp reads whole rows of the time step).
//    It folds its L steps per channel; the SLICES partial pairs of each channel are scanned
//    with warp shuffles, then across the warps' totals in shared memory; the block looks back
//    per channel (all threads, O·U predecessors per channel per round) and writes h from
//    registers. LANES (32, 16 or 8) is chosen per shape by the dispatcher.
//
// Every tile first reads its nearest predecessor's inclusive prefix, issued right after its own
// loads: where that predecessor finished long ago (many rows or channel groups) this is the
// whole look-back, and its round trip hides behind the loads.
//
// Backward is the same machinery in reverse time:
//   g[t] = a[t+1]·g[t+1] + dh[t],  db[t] = g[t],  da[t] = g[t]·h[t-1],  dh0 = a[0]·g[0].
// Row tiles scan the pairs (a[t+1], dh[t]); a[t+1] at a thread's edge is loaded a second time.
// Channel tiles scan u[t] = a[t]·g[t] instead, u[t] = a[t]·u[t+1] + a[t]·dh[t], g[t] = u[t+1] + dh[t]:
// every step then needs only its own row of a, so a thread loads L rows of a, not L + 1
// (the extra row was a second request for the next slice's first row).
//
// Tile index = block index (chunks in processing order, rows/channel groups fastest); blocks
// are dispatched in index order (the assumption CUB's single-pass scan makes), so every
// predecessor a tile waits for has started. A look-back record is written once, as 16-byte
// words {value, epoch}: the call's epoch marks it written, so no fences and no clearing.
//
// The row tiles live in cuda_tiled_rows.cuh, the channel tiles in cuda_tiled_channels.cuh, and
// their shared building blocks (pairs, 16-byte access, look-back records, both look-backs, the
// trace hook) in cuda_lookback.cuh.
#include "linrec/scan/detail/cuda_tiled_channels.cuh"
#include "linrec/scan/detail/cuda_tiled_rows.cuh"
