#include "cells.h"

namespace rnn_onednn {

using dnnl::algorithm;
using dnnl::memory;
using dnnl::prop_kind;
using dnnl::rnn_direction;
using tag = memory::format_tag;

namespace {

// Memory descriptors of one segment, shared by the forward and backward descriptors.
struct Descs {
  memory::desc input, state, weights_layer, weights_iter, bias, output;
};

Descs descs_of(const Shape& s) {
  const int64_t g = gates(s.mode);
  return {
      sequence_desc(s.steps, s.batch, s.inputs),
      state_desc(s),
      memory::desc({1, 1, s.inputs, g, s.hidden}, memory::data_type::f32, tag::any),
      memory::desc({1, 1, s.hidden, g, s.hidden}, memory::data_type::f32, tag::any),
      bias_desc(s),
      sequence_desc(s.steps, s.batch, s.hidden),
  };
}

rnn_direction direction(const Shape& s) {
  return s.right_to_left ? rnn_direction::unidirectional_right2left
                         : rnn_direction::unidirectional_left2right;
}

algorithm activation(Mode mode) {
  return mode == Mode::kRnnRelu ? algorithm::eltwise_relu : algorithm::eltwise_tanh;
}

// A typed copy of a generic RNN descriptor (the backward descriptors take their forward
// hint by its own type).
template <class Pd>
Pd as(const dnnl::rnn_primitive_desc_base& pd) {
  dnnl_primitive_desc_t copy;
  dnnl::error::wrap_c_api(dnnl_primitive_desc_clone(&copy, pd.get()),
                          "could not copy an RNN primitive descriptor");
  return Pd(copy);
}

}  // namespace

bool valid_mode(int32_t mode) { return mode >= 0 && mode <= 3; }

int64_t gates(Mode mode) {
  switch (mode) {
    case Mode::kLstm:
      return 4;
    case Mode::kGru:
      return 3;
    default:
      return 1;
  }
}

int64_t bias_gates(Mode mode) { return mode == Mode::kGru ? 4 : gates(mode); }

int64_t states(Mode mode) { return mode == Mode::kLstm ? 2 : 1; }

Shape Shape::with_steps(int64_t n) const {
  Shape shape = *this;
  shape.steps = n;
  return shape;
}

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

memory::desc sequence_desc(int64_t steps, int64_t batch, int64_t features) {
  return memory::desc({steps, batch, features}, memory::data_type::f32, tag::tnc);
}

memory::desc state_desc(const Shape& s) {
  return memory::desc({1, 1, s.batch, s.hidden}, memory::data_type::f32, tag::ldnc);
}

memory::desc weights_desc(const Shape& s, int64_t inputs) {
  return memory::desc({1, 1, inputs, gates(s.mode), s.hidden}, memory::data_type::f32,
                      tag::ldigo);
}

memory::desc bias_desc(const Shape& s) {
  return memory::desc({1, 1, bias_gates(s.mode), s.hidden}, memory::data_type::f32, tag::ldgo);
}

dnnl::rnn_primitive_desc_base forward_pd(const Shape& s, bool training) {
  const Descs d = descs_of(s);
  const auto kind = training ? prop_kind::forward_training : prop_kind::forward_inference;
  switch (s.mode) {
    case Mode::kLstm:
      return dnnl::lstm_forward::primitive_desc(cpu_engine(), kind, direction(s), d.input,
                                                d.state, d.state, d.weights_layer,
                                                d.weights_iter, d.bias, d.output, d.state,
                                                d.state);
    case Mode::kGru:
      return dnnl::lbr_gru_forward::primitive_desc(cpu_engine(), kind, direction(s), d.input,
                                                   d.state, d.weights_layer, d.weights_iter,
                                                   d.bias, d.output, d.state);
    default:
      return dnnl::vanilla_rnn_forward::primitive_desc(
          cpu_engine(), kind, activation(s.mode), direction(s), d.input, d.state,
          d.weights_layer, d.weights_iter, d.bias, d.output, d.state);
  }
}

dnnl::rnn_primitive_desc_base backward_pd(const Shape& s,
                                          const dnnl::rnn_primitive_desc_base& forward) {
  const Descs d = descs_of(s);
  const auto kind = prop_kind::backward;
  switch (s.mode) {
    case Mode::kLstm:
      return dnnl::lstm_backward::primitive_desc(
          cpu_engine(), kind, direction(s), d.input, d.state, d.state, d.weights_layer,
          d.weights_iter, d.bias, d.output, d.state, d.state, d.input, d.state, d.state,
          d.weights_layer, d.weights_iter, d.bias, d.output, d.state, d.state,
          as<dnnl::lstm_forward::primitive_desc>(forward));
    case Mode::kGru:
      return dnnl::lbr_gru_backward::primitive_desc(
          cpu_engine(), kind, direction(s), d.input, d.state, d.weights_layer, d.weights_iter,
          d.bias, d.output, d.state, d.input, d.state, d.weights_layer, d.weights_iter, d.bias,
          d.output, d.state, as<dnnl::lbr_gru_forward::primitive_desc>(forward));
    default:
      return dnnl::vanilla_rnn_backward::primitive_desc(
          cpu_engine(), kind, activation(s.mode), direction(s), d.input, d.state,
          d.weights_layer, d.weights_iter, d.bias, d.output, d.state, d.input, d.state,
          d.weights_layer, d.weights_iter, d.bias, d.output, d.state,
          as<dnnl::vanilla_rnn_forward::primitive_desc>(forward));
  }
}

}  // namespace rnn_onednn
