// What a thread's calls keep from one call to the next: its oneDNN stream, the primitives of
// the shapes it ran last, and buffers for weights in the layouts oneDNN asks for.
//
// A training step calls the same primitives with the same shapes every time. Created anew
// per call, each primitive would also allocate oneDNN's scratchpad anew (oneDNN keeps one
// per thread, freed with the last primitive that uses it), and every reordered weight
// would land in fresh memory, paged in anew on every call. Kept, they cost the memory of
// the largest scratchpad and weights a thread has used. Each thread keeps its own,
// since XLA may run two calls at once on two threads and neither a oneDNN stream nor a
// buffer may be shared between them.
#ifndef RNN_JAX_ONEDNN_REUSED_H_
#define RNN_JAX_ONEDNN_REUSED_H_

#include <cstddef>

#include "cells.h"

namespace rnn_onednn {

enum class Pass { kInference, kTraining, kBackward };

struct Prepared {
  dnnl::rnn_primitive_desc_base pd;
  dnnl::primitive primitive;
};

// The primitive of `pass` over `shape`, created on this thread's first call with that
// shape, kept among the last kPreparedPerThread it used.
constexpr size_t kPreparedPerThread = 16;
Prepared prepared(const Shape& shape, Pass pass);

dnnl::stream& thread_stream();

// The buffers a call may hold at once, one of each.
enum class Buffer { kWeightsLayer, kWeightsIter, kBias, kDWeightsLayer, kDWeightsIter, kDBias };
constexpr int kBuffers = static_cast<int>(Buffer::kDBias) + 1;

// This thread's `buffer`, at least `bytes` long (64-byte aligned), valid until the thread
// next asks for the same buffer.
void* thread_buffer(Buffer buffer, size_t bytes);

}  // namespace rnn_onednn

#endif  // RNN_JAX_ONEDNN_REUSED_H_
