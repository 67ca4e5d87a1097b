#include "reused.h"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <new>
#include <tuple>
#include <vector>

namespace rnn_onednn {

namespace {

auto key_of(const Shape& s, Pass pass) {
  return std::make_tuple(s.mode, s.steps, s.batch, s.inputs, s.hidden, s.right_to_left, pass);
}

struct Entry {
  decltype(key_of(Shape{}, Pass{})) key;
  Prepared prepared;
};

Prepared create(const Shape& shape, Pass pass) {
  auto pd = pass == Pass::kBackward
                ? backward_pd(shape, prepared(shape, Pass::kTraining).pd)
                : forward_pd(shape, pass == Pass::kTraining);
  return {pd, dnnl::primitive(pd)};
}

struct Freed {
  void operator()(void* p) const { std::free(p); }
};

struct Allocation {
  std::unique_ptr<void, Freed> data;
  size_t bytes = 0;
};

}  // namespace

// Each thread's containers are allocated once and never destroyed: destroying oneDNN objects
// while a process exits, after the SYCL runtime they use may be gone, can crash it.

Prepared prepared(const Shape& shape, Pass pass) {
  thread_local auto* entries = new std::vector<Entry>();  // the most recently used last
  const auto key = key_of(shape, pass);
  for (auto it = entries->begin(); it != entries->end(); ++it) {
    if (it->key == key) {
      std::rotate(it, it + 1, entries->end());
      return entries->back().prepared;
    }
  }
  Prepared made = create(shape, pass);
  if (entries->size() == kPreparedPerThread) entries->erase(entries->begin());
  entries->push_back({key, std::move(made)});
  return entries->back().prepared;
}

dnnl::stream& thread_stream() {
  thread_local auto* stream = new dnnl::stream(cpu_engine());
  return *stream;
}

void* thread_buffer(Buffer buffer, size_t bytes) {
  thread_local auto* allocations = new std::vector<Allocation>(kBuffers);
  Allocation& a = (*allocations)[static_cast<int>(buffer)];
  if (a.bytes < bytes) {
    const size_t rounded = (bytes + 63) / 64 * 64;
    a.data.reset(std::aligned_alloc(64, rounded));
    if (!a.data) throw std::bad_alloc();
    a.bytes = rounded;
  }
  return a.data.get();
}

}  // namespace rnn_onednn
