// XLA FFI handlers of the onednn backend (jax.ffi.ffi_call on the CPU), and the plain C
// functions rnn_jax calls through ctypes while tracing.
//
// Every handler takes one direction of one layer: x [T, N, C], h0 [N, H], c0 [N, H] for the
// LSTM ([N, 0] otherwise), the weights as rnn_jax's cells store their kernels, [C, G*H] and
// [H, G*H] with oneDNN's gate order, oneDNN's bias [Gb*H] and lengths [N] (int32), with the
// attributes mode (a
// Mode), reverse (run right to left; lengths must then all be T), threads (OpenMP threads
// for oneDNN during the call; 0: OpenMP's default) and, in training, max_segments (the
// most distinct lengths the workspace has room for).
#include <omp.h>

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "scan.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using rnn_onednn::Mode;
using rnn_onednn::Shape;

namespace {

using Floats = ffi::Buffer<ffi::F32>;
using FloatsOut = ffi::ResultBuffer<ffi::F32>;

// Runs the caller's oneDNN work on `threads` OpenMP threads (0: leaves OpenMP's setting),
// restoring the calling thread's setting afterwards.
class Threads {
 public:
  explicit Threads(int32_t threads) : saved_(omp_get_max_threads()), set_(threads > 0) {
    if (set_) omp_set_num_threads(threads);
  }
  ~Threads() {
    if (set_) omp_set_num_threads(saved_);
  }

 private:
  int saved_;
  bool set_;
};

template <class Body>
ffi::Error guarded(int32_t threads, Body&& body) {
  try {
    Threads scope(threads);
    body();
    return ffi::Error::Success();
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("oneDNN RNN: ") + e.what());
  }
}

std::vector<int64_t> dims_of(ffi::AnyBuffer::Dimensions d) {
  return std::vector<int64_t>(d.begin(), d.end());
}

std::string shown(const std::vector<int64_t>& d) {
  std::string s = "(";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + (d.size() == 1 ? ",)" : ")");
}

ffi::Unexpected<ffi::Error> invalid(const std::string& message) {
  return ffi::Error::InvalidArgument(message);
}

// The shape of a call, or the error naming the operand that disagrees with x and h0.
ffi::ErrorOr<Shape> shape_of(const Floats& x, const Floats& h0, const Floats& c0,
                             const Floats& weights_layer, const Floats& weights_iter,
                             const Floats& bias, const ffi::Buffer<ffi::S32>& lengths,
                             int32_t mode, bool reverse) {
  if (!rnn_onednn::valid_mode(mode)) {
    return invalid("mode must be 0 to 3; got " + std::to_string(mode));
  }
  const auto xd = dims_of(x.dimensions());
  const auto hd = dims_of(h0.dimensions());
  if (xd.size() != 3 || hd.size() != 2 || hd[0] != xd[1]) {
    return invalid("x must be [T, N, C] and h0 [N, H]; got x " + shown(xd) + ", h0 " + shown(hd));
  }
  const Shape s{Mode(mode), xd[0], xd[1], xd[2], hd[1], reverse};
  const int64_t g = rnn_onednn::gates(s.mode), c = s.mode == Mode::kLstm ? s.hidden : 0;
  const struct {
    const char* name;
    std::vector<int64_t> got, want;
  } operands[] = {
      {"c0", dims_of(c0.dimensions()), {s.batch, c}},
      {"weights_layer", dims_of(weights_layer.dimensions()), {s.inputs, g * s.hidden}},
      {"weights_iter", dims_of(weights_iter.dimensions()), {s.hidden, g * s.hidden}},
      {"bias", dims_of(bias.dimensions()), {rnn_onednn::bias_gates(s.mode) * s.hidden}},
      {"lengths", dims_of(lengths.dimensions()), {s.batch}},
  };
  for (const auto& op : operands) {
    if (op.got != op.want) {
      return invalid(std::string(op.name) + " must have shape " + shown(op.want) + "; got " +
                     shown(op.got));
    }
  }
  if (reverse) {
    for (int64_t b = 0; b < s.batch; ++b) {
      if (lengths.typed_data()[b] != s.steps) {
        return invalid("reverse runs need every length equal to T");
      }
    }
  }
  return s;
}

rnn_onednn::Inputs inputs_of(const Floats& x, const Floats& h0, const Floats& c0,
                             const Floats& weights_layer, const Floats& weights_iter,
                             const Floats& bias, const ffi::Buffer<ffi::S32>& lengths) {
  return {x.typed_data(),            h0.typed_data(),   c0.typed_data(),
          weights_layer.typed_data(), weights_iter.typed_data(), bias.typed_data(),
          lengths.typed_data()};
}

ffi::Error ForwardInference(Floats x, Floats h0, Floats c0, Floats weights_layer,
                            Floats weights_iter, Floats bias, ffi::Buffer<ffi::S32> lengths,
                            FloatsOut y, FloatsOut h, FloatsOut c, int32_t mode, bool reverse,
                            int32_t threads) {
  const auto shape = shape_of(x, h0, c0, weights_layer, weights_iter, bias, lengths, mode, reverse);
  if (shape.has_error()) return shape.error();
  return guarded(threads, [&] {
    rnn_onednn::forward(*shape, inputs_of(x, h0, c0, weights_layer, weights_iter, bias, lengths),
                        {y->typed_data(), h->typed_data(), c->typed_data()}, nullptr);
  });
}

ffi::Error ForwardTraining(Floats x, Floats h0, Floats c0, Floats weights_layer,
                           Floats weights_iter, Floats bias, ffi::Buffer<ffi::S32> lengths,
                           FloatsOut y, FloatsOut h, FloatsOut c,
                           ffi::ResultBuffer<ffi::U8> workspace, int32_t mode, bool reverse,
                           int32_t threads, int64_t max_segments) {
  const auto shape = shape_of(x, h0, c0, weights_layer, weights_iter, bias, lengths, mode, reverse);
  if (shape.has_error()) return shape.error();
  const rnn_onednn::Workspace ws{workspace->typed_data(), int64_t(workspace->element_count()),
                                 max_segments};
  return guarded(threads, [&] {
    rnn_onednn::forward(*shape, inputs_of(x, h0, c0, weights_layer, weights_iter, bias, lengths),
                        {y->typed_data(), h->typed_data(), c->typed_data()}, &ws);
  });
}

ffi::Error Backward(Floats x, Floats h0, Floats c0, Floats weights_layer, Floats weights_iter,
                    Floats bias, ffi::Buffer<ffi::S32> lengths, Floats y,
                    ffi::Buffer<ffi::U8> workspace, Floats dy, Floats dh, Floats dc,
                    FloatsOut dx, FloatsOut dh0, FloatsOut dc0, FloatsOut dweights_layer,
                    FloatsOut dweights_iter, FloatsOut dbias, int32_t mode, bool reverse,
                    int32_t threads, int64_t max_segments) {
  const auto shape = shape_of(x, h0, c0, weights_layer, weights_iter, bias, lengths, mode, reverse);
  if (shape.has_error()) return shape.error();
  const rnn_onednn::Workspace ws{workspace.typed_data(), int64_t(workspace.element_count()),
                                 max_segments};
  return guarded(threads, [&] {
    rnn_onednn::backward(
        *shape, inputs_of(x, h0, c0, weights_layer, weights_iter, bias, lengths),
        y.typed_data(), ws,
        {dy.typed_data(), dh.typed_data(), dc.typed_data(), dx->typed_data(), dh0->typed_data(),
         dc0->typed_data(), dweights_layer->typed_data(), dweights_iter->typed_data(),
         dbias->typed_data()});
  });
}

thread_local std::string last_error;

}  // namespace

#define RNN_ONEDNN_INPUTS                   \
  .Arg<Floats>()                /* x */     \
      .Arg<Floats>()            /* h0 */    \
      .Arg<Floats>()            /* c0 */    \
      .Arg<Floats>()            /* w_layer */ \
      .Arg<Floats>()            /* w_iter */ \
      .Arg<Floats>()            /* bias */  \
      .Arg<ffi::Buffer<ffi::S32>>() /* lengths */

XLA_FFI_DEFINE_HANDLER_SYMBOL(rnn_onednn_forward_inference, ForwardInference,
                              ffi::Ffi::Bind() RNN_ONEDNN_INPUTS
                                  .Ret<Floats>()
                                  .Ret<Floats>()
                                  .Ret<Floats>()
                                  .Attr<int32_t>("mode")
                                  .Attr<bool>("reverse")
                                  .Attr<int32_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(rnn_onednn_forward_training, ForwardTraining,
                              ffi::Ffi::Bind() RNN_ONEDNN_INPUTS
                                  .Ret<Floats>()
                                  .Ret<Floats>()
                                  .Ret<Floats>()
                                  .Ret<ffi::Buffer<ffi::U8>>()
                                  .Attr<int32_t>("mode")
                                  .Attr<bool>("reverse")
                                  .Attr<int32_t>("threads")
                                  .Attr<int64_t>("max_segments"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(rnn_onednn_backward, Backward,
                              ffi::Ffi::Bind() RNN_ONEDNN_INPUTS
                                  .Arg<Floats>()                 // y
                                  .Arg<ffi::Buffer<ffi::U8>>()  // workspace
                                  .Arg<Floats>()                 // dy
                                  .Arg<Floats>()                 // dh
                                  .Arg<Floats>()                 // dc
                                  .Ret<Floats>()                 // dx
                                  .Ret<Floats>()                 // dh0
                                  .Ret<Floats>()                 // dc0
                                  .Ret<Floats>()                 // dweights_layer
                                  .Ret<Floats>()                 // dweights_iter
                                  .Ret<Floats>()                 // dbias
                                  .Attr<int32_t>("mode")
                                  .Attr<bool>("reverse")
                                  .Attr<int32_t>("threads")
                                  .Attr<int64_t>("max_segments"));

extern "C" {

// Bytes of the training workspace for a scan of this shape with at most `max_segments`
// distinct lengths; -1 on an error, whose message rnn_onednn_last_error() returns.
int64_t rnn_onednn_workspace_bytes(int32_t mode, int64_t steps, int64_t batch, int64_t inputs,
                                   int64_t hidden, int64_t max_segments) {
  try {
    if (!rnn_onednn::valid_mode(mode)) throw std::invalid_argument("mode must be 0 to 3");
    return rnn_onednn::workspace_bound({Mode(mode), steps, batch, inputs, hidden, false},
                                       max_segments);
  } catch (const std::exception& e) {
    last_error = e.what();
    return -1;
  }
}

const char* rnn_onednn_last_error() { return last_error.c_str(); }

}  // extern "C"
