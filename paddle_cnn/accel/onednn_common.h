// What the three oneDNN sources of the library share (conv_onednn.cc,
// norm_pool_onednn.cc, bf16_onednn.cc): one engine, one stream and one lock
// for the whole library, the OpenMP thread count of a call, dense tensors.
//
// The functions are inline with function-local statics, so the three
// translation units linked into the library share one instance of each
// (there used to be one per file: three engines, three streams and three
// mutexes, and "one call at a time" held only within a file). The objects
// are allocated once and never destroyed: they outlive Paddle's exit.
//
// paddle_cnn/accel/build.py copies this header beside the sources and
// includes its content in the build's cache key.

#ifndef PADDLE_CNN_ACCEL_ONEDNN_COMMON_H_
#define PADDLE_CNN_ACCEL_ONEDNN_COMMON_H_

#include <dlfcn.h>

#include <mutex>
#include <utility>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "paddle/extension.h"

namespace pcnn {

// ------------------------------------------------------------ tensors

// Paddle 3.x tensors may be strided views; Paddle 2.6 has no such notion.
template <typename T>
auto dense(const T& t, int) -> decltype(t.is_contiguous(), T()) {
  return t.is_contiguous() ? t : t.contiguous();
}
template <typename T>
T dense(const T& t, long) {  // NOLINT(runtime/int): overload rank only
  return t;
}
inline paddle::Tensor dense(const paddle::Tensor& t) { return dense(t, 0); }

// ------------------------------------------------------------ threads

// oneDNN (OpenMP runtime) runs as many threads as the calling thread's
// OpenMP setting; Paddle leaves it at 1 and steers MKL separately. For the
// duration of one call we set it to the count Python asks for, in every
// OpenMP runtime already loaded (Paddle loads Intel's and GNU's), and then
// put the previous values back so that other ops see no change.
struct OmpRuntime {
  void (*set)(int);
  int (*get)();
};

inline const std::vector<OmpRuntime>& omp_runtimes() {
  static const std::vector<OmpRuntime> runtimes = [] {
    std::vector<OmpRuntime> found;
    for (const char* name : {"libiomp5.so", "libgomp.so.1", "libomp.so"}) {
      void* handle = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
      if (handle == nullptr) continue;
      auto set = reinterpret_cast<void (*)(int)>(
          dlsym(handle, "omp_set_num_threads"));
      auto get =
          reinterpret_cast<int (*)()>(dlsym(handle, "omp_get_max_threads"));
      if (set != nullptr && get != nullptr) found.push_back({set, get});
    }
    return found;
  }();
  return runtimes;
}

class ThreadScope {
 public:
  explicit ThreadScope(int threads) {
    if (threads <= 0) return;
    for (const auto& rt : omp_runtimes()) {
      const int before = rt.get();
      if (before != threads) {
        rt.set(threads);
        saved_.emplace_back(rt.set, before);
      }
    }
  }
  ~ThreadScope() {
    for (const auto& s : saved_) s.first(s.second);
  }
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;

 private:
  std::vector<std::pair<void (*)(int), int>> saved_;
};

// ------------------------------------------------- engine, stream, lock

inline dnnl::engine& engine() {
  static dnnl::engine* e = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *e;
}

inline dnnl::stream& stream() {
  static dnnl::stream* s = new dnnl::stream(engine());
  return *s;
}

// Held by every call that executes a primitive on the stream and by every
// entry point that touches a file's cached state (conv_onednn.cc's plans and
// workspace): one call at a time in the whole library.
inline std::mutex& library_mutex() {
  static std::mutex* m = new std::mutex();
  return *m;
}

// One call: the library's lock, then OpenMP's thread count for its
// duration (released in the opposite order).
class Call {
 public:
  explicit Call(int threads) : lock_(library_mutex()), threads_(threads) {}
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

 private:
  std::lock_guard<std::mutex> lock_;
  ThreadScope threads_;
};

}  // namespace pcnn

#endif  // PADDLE_CNN_ACCEL_ONEDNN_COMMON_H_
