#include "scan.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "reused.h"

namespace rnn_onednn {

using dnnl::memory;

namespace {

constexpr int64_t kPage = 4096;
// oneDNN lays a workspace out as at most 16 page-aligned parts, each affine in the number
// of steps; rounding each part up costs at most one page per part and segment, and
// estimating a segment's fixed cost from 1 and 2 steps misses by up to one more (see
// workspace_bound). 36 pages covers both with room.
constexpr int64_t kSlackPerSegment = 36 * kPage;

int64_t round_up(int64_t bytes) { return (bytes + kPage - 1) / kPage * kPage; }

int64_t length_of(const Inputs& in, int64_t b, int64_t steps) {
  return std::clamp<int64_t>(in.lengths[b], 0, steps);
}

// The segments' last steps (exclusive): the distinct positive lengths, ascending.
std::vector<int64_t> segment_ends(const Shape& s, const Inputs& in) {
  std::vector<int64_t> ends;
  for (int64_t b = 0; b < s.batch; ++b) {
    if (const int64_t n = length_of(in, b, s.steps); n > 0) ends.push_back(n);
  }
  std::sort(ends.begin(), ends.end());
  ends.erase(std::unique(ends.begin(), ends.end()), ends.end());
  return ends;
}

int64_t state_size(const Shape& s) { return s.batch * s.hidden; }

int64_t states_bytes(const Shape& s, int64_t max_segments) {
  return round_up(max_segments * states(s.mode) * state_size(s) * int64_t(sizeof(float)));
}

struct Segment {
  int64_t start;
  int64_t steps;
  Prepared forward;
  int64_t workspace_offset;  // of its oneDNN workspace (training)
};

std::vector<Segment> plan(const Shape& s, const std::vector<int64_t>& ends,
                          const Workspace* workspace) {
  std::vector<Segment> segments;
  int64_t start = 0;
  int64_t offset = workspace ? states_bytes(s, workspace->max_segments) : 0;
  for (const int64_t end : ends) {
    const Pass pass = workspace ? Pass::kTraining : Pass::kInference;
    Prepared forward = prepared(s.with_steps(end - start), pass);
    segments.push_back({start, end - start, forward, offset});
    if (workspace) offset += round_up(int64_t(forward.pd.workspace_desc().get_size()));
    start = end;
  }
  if (workspace && (int64_t(ends.size()) > workspace->max_segments || offset > workspace->bytes)) {
    throw std::runtime_error(
        "the oneDNN workspace is too small for these lengths: " + std::to_string(ends.size()) +
        " segments need " + std::to_string(offset) + " bytes, the bound allowed " +
        std::to_string(workspace->max_segments) + " segments in " +
        std::to_string(workspace->bytes) + " (a bug in rnn_jax's bound: please report it)");
  }
  return segments;
}

// The state (h, then c for the LSTM) after segment k of a training forward pass.
float* state_after(const Shape& s, const Workspace& workspace, int64_t k) {
  return reinterpret_cast<float*>(workspace.data) + k * states(s.mode) * state_size(s);
}

memory wrap(const memory::desc& desc, const void* data) {
  return memory(desc, cpu_engine(), const_cast<void*>(data));
}

// This thread's `buffer` as an array of layout `desc`.
memory in_buffer(const memory::desc& desc, Buffer buffer) {
  return memory(desc, cpu_engine(), thread_buffer(buffer, desc.get_size()));
}

// A caller's array in whatever layout a primitive asks for, reordered once per layout.
class Laid {
 public:
  Laid(memory user, Buffer buffer) : user_(user), buffer_(buffer) {}

  memory in(const memory::desc& wanted, dnnl::stream& stream) {
    if (wanted == user_.get_desc()) return user_;
    if (!copy_ || copy_.get_desc() != wanted) {
      copy_ = in_buffer(wanted, buffer_);
      dnnl::reorder(user_, copy_).execute(stream, user_, copy_);
    }
    return copy_;
  }

 private:
  memory user_;
  Buffer buffer_;
  memory copy_;
};

// A weight gradient the segments' backward passes add to (oneDNN accumulates them), in
// the layout the first of them asks for; `finish` writes it to the caller's array.
class Accumulated {
 public:
  Accumulated(memory user, const memory::desc& layout, Buffer buffer)
      : user_(user), sum_(layout == user.get_desc() ? user : in_buffer(layout, buffer)) {
    std::memset(sum_.get_data_handle(), 0, sum_.get_desc().get_size());
  }

  memory in(const memory::desc& wanted) const {
    if (wanted != sum_.get_desc()) {
      throw std::runtime_error("oneDNN asked for two layouts of one weight gradient");
    }
    return sum_;
  }

  void finish(dnnl::stream& stream) {
    if (sum_ != user_) dnnl::reorder(sum_, user_).execute(stream, sum_, user_);
  }

 private:
  memory user_;
  memory sum_;
};

struct Weights {
  Laid layer, iter, bias;
};

Weights weights_of(const Shape& s, const Inputs& in) {
  return {Laid(wrap(weights_desc(s, s.inputs), in.weights_layer), Buffer::kWeightsLayer),
          Laid(wrap(weights_desc(s, s.hidden), in.weights_iter), Buffer::kWeightsIter),
          Laid(wrap(bias_desc(s), in.bias), Buffer::kBias)};
}

void copy_state(const Shape& s, const float* from, float* to, int64_t b) {
  std::memcpy(to + b * s.hidden, from + b * s.hidden, s.hidden * sizeof(float));
}

// Sets the sequences that end at `end` to the state `from` (h, then c).
void take_final(const Shape& s, const Inputs& in, int64_t end, const float* from,
                const Outputs& out) {
  for (int64_t b = 0; b < s.batch; ++b) {
    if (length_of(in, b, s.steps) != end) continue;
    copy_state(s, from, out.h, b);
    if (s.mode == Mode::kLstm) copy_state(s, from + state_size(s), out.c, b);
  }
}

struct WeightGradients {
  Accumulated layer, iter, bias;
};

// The sums of the weight gradients, in the layouts `first` (the first segment's backward
// pass) asks for; without segments nothing is accumulated and the caller's arrays serve.
WeightGradients weight_gradients(const Shape& s, const Gradients& g,
                                 const dnnl::rnn_primitive_desc_base* first) {
  const memory layer = wrap(weights_desc(s, s.inputs), g.dweights_layer);
  const memory iter = wrap(weights_desc(s, s.hidden), g.dweights_iter);
  const memory bias = wrap(bias_desc(s), g.dbias);
  return {
      Accumulated(layer, first ? first->diff_weights_layer_desc() : layer.get_desc(),
                  Buffer::kDWeightsLayer),
      Accumulated(iter, first ? first->diff_weights_iter_desc() : iter.get_desc(),
                  Buffer::kDWeightsIter),
      Accumulated(bias, first ? first->diff_bias_desc() : bias.get_desc(), Buffer::kDBias),
  };
}

// Fills `leaving` (h, then c) with the cotangent of the state leaving the segment that ends
// at `end`: a sequence's final-state cotangent where it ends there, `carried` (from the
// segment after) where it goes on, zero where it ended before.
void cotangent_leaving(const Shape& s, const Inputs& in, const Gradients& g, int64_t end,
                       const float* carried, float* leaving) {
  const int64_t n = state_size(s);
  const float* finals[2] = {g.dh, g.dc};
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t length = length_of(in, b, s.steps);
    for (int64_t i = 0; i < states(s.mode); ++i) {
      float* to = leaving + i * n + b * s.hidden;
      if (length == end) {
        std::memcpy(to, finals[i] + b * s.hidden, s.hidden * sizeof(float));
      } else if (length > end) {
        std::memcpy(to, carried + i * n + b * s.hidden, s.hidden * sizeof(float));
      } else {
        std::fill(to, to + s.hidden, 0.0f);
      }
    }
  }
}

// Writes the cotangents of the initial state: `carried` (what the first segment's backward
// pass sent out), or for an empty sequence its final state's, which is its initial state.
void initial_cotangents(const Shape& s, const Inputs& in, const Gradients& g,
                        const float* carried) {
  const float* finals[2] = {g.dh, g.dc};
  float* initials[2] = {g.dh0, g.dc0};
  for (int64_t b = 0; b < s.batch; ++b) {
    const bool empty = length_of(in, b, s.steps) == 0;
    for (int64_t i = 0; i < states(s.mode); ++i) {
      copy_state(s, empty ? finals[i] : carried + i * state_size(s), initials[i], b);
    }
  }
}

}  // namespace

void forward(const Shape& s, const Inputs& in, const Outputs& out, const Workspace* workspace) {
  const auto ends = segment_ends(s, in);
  const auto segments = plan(s, ends, workspace);
  const int64_t n = state_size(s);
  const int64_t covered = ends.empty() ? 0 : ends.back();
  std::fill(out.y + covered * n, out.y + s.steps * n, 0.0f);
  std::memcpy(out.h, in.h0, n * sizeof(float));  // the empty sequences'
  if (s.mode == Mode::kLstm) std::memcpy(out.c, in.c0, n * sizeof(float));

  dnnl::stream& stream = thread_stream();
  Weights weights = weights_of(s, in);
  const memory::desc state = state_desc(s);
  std::vector<float> scratch(workspace ? 0 : 2 * states(s.mode) * n);
  const float* h_in = in.h0;
  const float* c_in = in.c0;
  for (size_t k = 0; k < segments.size(); ++k) {
    const Segment& seg = segments[k];
    float* h_out = workspace ? state_after(s, *workspace, k)
                             : scratch.data() + (k % 2) * states(s.mode) * n;
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC_LAYER,
         wrap(sequence_desc(seg.steps, s.batch, s.inputs), in.x + seg.start * s.batch * s.inputs)},
        {DNNL_ARG_SRC_ITER, wrap(state, h_in)},
        {DNNL_ARG_WEIGHTS_LAYER, weights.layer.in(seg.forward.pd.weights_layer_desc(), stream)},
        {DNNL_ARG_WEIGHTS_ITER, weights.iter.in(seg.forward.pd.weights_iter_desc(), stream)},
        {DNNL_ARG_BIAS, weights.bias.in(seg.forward.pd.bias_desc(), stream)},
        {DNNL_ARG_DST_LAYER,
         wrap(sequence_desc(seg.steps, s.batch, s.hidden), out.y + seg.start * n)},
        {DNNL_ARG_DST_ITER, wrap(state, h_out)},
    };
    if (s.mode == Mode::kLstm) {
      args[DNNL_ARG_SRC_ITER_C] = wrap(state, c_in);
      args[DNNL_ARG_DST_ITER_C] = wrap(state, h_out + n);
    }
    if (workspace) {
      args[DNNL_ARG_WORKSPACE] =
          wrap(seg.forward.pd.workspace_desc(), workspace->data + seg.workspace_offset);
    }
    seg.forward.primitive.execute(stream, args);
    stream.wait();
    take_final(s, in, seg.start + seg.steps, h_out, out);
    h_in = h_out;
    c_in = h_out + n;
  }
}

void backward(const Shape& s, const Inputs& in, const float* y, const Workspace& workspace,
              const Gradients& g) {
  const auto ends = segment_ends(s, in);
  const auto segments = plan(s, ends, &workspace);
  const int64_t n = state_size(s);
  const int64_t covered = ends.empty() ? 0 : ends.back();
  std::fill(g.dx + covered * s.batch * s.inputs, g.dx + s.steps * s.batch * s.inputs, 0.0f);
  std::vector<Prepared> passes;
  for (const Segment& seg : segments) {
    passes.push_back(prepared(s.with_steps(seg.steps), Pass::kBackward));
  }
  dnnl::stream& stream = thread_stream();
  Weights weights = weights_of(s, in);
  WeightGradients sums = weight_gradients(s, g, passes.empty() ? nullptr : &passes[0].pd);
  const memory::desc state = state_desc(s);
  // `carried`: the cotangent of the state entering the segment just run backwards, which
  // is the state leaving the one before; `leaving`: that cotangent as segment k gets it.
  std::vector<float> carried(states(s.mode) * n, 0.0f), leaving(carried.size(), 0.0f);
  for (int64_t k = int64_t(segments.size()) - 1; k >= 0; --k) {
    const Segment& seg = segments[k];
    cotangent_leaving(s, in, g, seg.start + seg.steps, carried.data(), leaving.data());
    const float* entering = k == 0 ? nullptr : state_after(s, workspace, k - 1);
    const float* exiting = state_after(s, workspace, k);
    const auto& pass = passes[k].pd;
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC_LAYER, wrap(sequence_desc(seg.steps, s.batch, s.inputs),
                                  in.x + seg.start * s.batch * s.inputs)},
        {DNNL_ARG_SRC_ITER, wrap(state, entering ? entering : in.h0)},
        {DNNL_ARG_WEIGHTS_LAYER, weights.layer.in(pass.weights_layer_desc(), stream)},
        {DNNL_ARG_WEIGHTS_ITER, weights.iter.in(pass.weights_iter_desc(), stream)},
        {DNNL_ARG_BIAS, weights.bias.in(pass.bias_desc(), stream)},
        {DNNL_ARG_DST_LAYER, wrap(sequence_desc(seg.steps, s.batch, s.hidden), y + seg.start * n)},
        {DNNL_ARG_DST_ITER, wrap(state, exiting)},
        {DNNL_ARG_WORKSPACE,
         wrap(seg.forward.pd.workspace_desc(), workspace.data + seg.workspace_offset)},
        {DNNL_ARG_DIFF_SRC_LAYER, wrap(sequence_desc(seg.steps, s.batch, s.inputs),
                                       g.dx + seg.start * s.batch * s.inputs)},
        {DNNL_ARG_DIFF_SRC_ITER, wrap(state, carried.data())},
        {DNNL_ARG_DIFF_WEIGHTS_LAYER, sums.layer.in(pass.diff_weights_layer_desc())},
        {DNNL_ARG_DIFF_WEIGHTS_ITER, sums.iter.in(pass.diff_weights_iter_desc())},
        {DNNL_ARG_DIFF_BIAS, sums.bias.in(pass.diff_bias_desc())},
        {DNNL_ARG_DIFF_DST_LAYER,
         wrap(sequence_desc(seg.steps, s.batch, s.hidden), g.dy + seg.start * n)},
        {DNNL_ARG_DIFF_DST_ITER, wrap(state, leaving.data())},
    };
    if (s.mode == Mode::kLstm) {
      args[DNNL_ARG_SRC_ITER_C] = wrap(state, entering ? entering + n : in.c0);
      args[DNNL_ARG_DST_ITER_C] = wrap(state, exiting + n);
      args[DNNL_ARG_DIFF_SRC_ITER_C] = wrap(state, carried.data() + n);
      args[DNNL_ARG_DIFF_DST_ITER_C] = wrap(state, leaving.data() + n);
    }
    passes[k].primitive.execute(stream, args);
    stream.wait();
  }
  initial_cotangents(s, in, g, carried.data());
  sums.layer.finish(stream);
  sums.iter.finish(stream);
  sums.bias.finish(stream);
  stream.wait();
}

int64_t workspace_bound(const Shape& s, int64_t max_segments) {
  auto bytes = [&](int64_t steps) {
    return int64_t(forward_pd(s.with_steps(steps), true).workspace_desc().get_size());
  };
  // Every part of oneDNN's workspace is affine in the steps, a*T + b, rounded up to a page;
  // 2*bytes(1) - bytes(2) estimates the sum of the parts' b, the cost of one more segment.
  const int64_t per_segment = std::max<int64_t>(0, 2 * bytes(1) - bytes(2));
  return states_bytes(s, max_segments) + round_up(bytes(s.steps)) +
         (max_segments - 1) * per_segment + max_segments * kSlackPerSegment;
}

}  // namespace rnn_onednn
