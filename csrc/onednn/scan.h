// One direction of an RNN over right-padded sequences, run by oneDNN segment by segment.
//
// oneDNN's RNN primitives take no sequence lengths, so the time axis is cut at every
// distinct length: each segment runs the whole batch, and a sequence's final state is the
// state at the end of the segment its length ends. Steps past a length are computed (on
// inputs the caller has zeroed) but never reach that sequence's final state, and the
// backward pass sends a final state's cotangent in where that sequence ended. Without
// lengths (all equal to the number of steps) there is one segment: one oneDNN call.
#ifndef RNN_JAX_ONEDNN_SCAN_H_
#define RNN_JAX_ONEDNN_SCAN_H_

#include <cstdint>

#include "cells.h"

namespace rnn_onednn {

struct Inputs {
  const float* x;             // [T, N, C]
  const float* h0;            // [N, H]
  const float* c0;            // [N, H], LSTM only
  const float* weights_layer; // [C, G*H]
  const float* weights_iter;  // [H, G*H]
  const float* bias;          // [Gb*H]
  const int32_t* lengths;     // [N], clipped to [0, T]
};

struct Outputs {
  float* y;  // [T, N, H]: zero after the longest sequence
  float* h;  // [N, H]: each sequence's state after its last step
  float* c;  // [N, H], LSTM only
};

// What a training forward pass keeps for its backward pass: the state after every
// segment, then every segment's oneDNN workspace.
struct Workspace {
  uint8_t* data;
  int64_t bytes;
  int64_t max_segments;  // the most distinct lengths the caller allows for
};

struct Gradients {
  const float* dy;  // cotangents of the outputs
  const float* dh;
  const float* dc;
  float* dx;  // gradients of the inputs
  float* dh0;
  float* dc0;
  float* dweights_layer;
  float* dweights_iter;
  float* dbias;
};

// Runs the forward pass; `workspace` is null for inference. Throws std::exception.
void forward(const Shape& shape, const Inputs& in, const Outputs& out,
             const Workspace* workspace);

// The backward pass of a training forward pass that filled `workspace` and output `y`.
void backward(const Shape& shape, const Inputs& in, const float* y,
              const Workspace& workspace, const Gradients& grads);

// Bytes of a Workspace that holds any `max_segments` segments of `shape.steps` steps.
int64_t workspace_bound(const Shape& shape, int64_t max_segments);

}  // namespace rnn_onednn

#endif  // RNN_JAX_ONEDNN_SCAN_H_
