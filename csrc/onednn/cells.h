// The cells oneDNN computes exactly as rnn_jax's CudnnLayout modes (PyTorch's nn.RNN,
// nn.LSTM and nn.GRU), and their oneDNN primitive descriptors for one direction of one
// layer. Every tensor is float32 in the layouts rnn_jax hands over: sequences [T, N, C]
// (tnc), states [N, H] (ldnc), weights as rnn_jax's cells store their kernels [inputs, G*H]
// (ldigo), bias [Gb*H] (ldgo). Weights are left to oneDNN's choice of layout ("any") and
// reordered to it (at B32 T128 H256 it picks ldigo with padded rows forwards, ldgoi and a
// padded ldgoi backwards): taking the cells' own layout spares XLA a transpose each way.
#ifndef RNN_JAX_ONEDNN_CELLS_H_
#define RNN_JAX_ONEDNN_CELLS_H_

#include <cstdint>

#include "oneapi/dnnl/dnnl.hpp"

namespace rnn_onednn {

// The values rnn_jax passes as the "mode" attribute.
enum class Mode : int32_t { kRnnTanh = 0, kRnnRelu = 1, kLstm = 2, kGru = 3 };

bool valid_mode(int32_t mode);
// G: gate blocks in the weights (1, 4 or 3); the bias has one more for lbr_gru.
int64_t gates(Mode mode);
int64_t bias_gates(Mode mode);
// 2 for the LSTM (h and c), else 1 (h).
int64_t states(Mode mode);

// A scan of `steps` steps over `batch` sequences of `inputs` features, `hidden` units.
struct Shape {
  Mode mode;
  int64_t steps;
  int64_t batch;
  int64_t inputs;
  int64_t hidden;
  bool right_to_left;

  Shape with_steps(int64_t n) const;
};

dnnl::engine& cpu_engine();

dnnl::memory::desc sequence_desc(int64_t steps, int64_t batch, int64_t features);
dnnl::memory::desc state_desc(const Shape& shape);
dnnl::memory::desc weights_desc(const Shape& shape, int64_t inputs);  // user layout
dnnl::memory::desc bias_desc(const Shape& shape);

dnnl::rnn_primitive_desc_base forward_pd(const Shape& shape, bool training);
// The backward pass of `forward` (a training forward_pd of the same shape).
dnnl::rnn_primitive_desc_base backward_pd(const Shape& shape,
                                          const dnnl::rnn_primitive_desc_base& forward);

}  // namespace rnn_onednn

#endif  // RNN_JAX_ONEDNN_CELLS_H_
