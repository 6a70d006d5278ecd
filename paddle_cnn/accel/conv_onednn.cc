// 2-D convolution on the CPU with oneDNN, as a Paddle custom operator.
//
// Why: Paddle's eager CPU conv2d is im2col + one GEMM per example, with the
// bias added by a separate op; oneDNN runs the whole batch in one primitive
// with the bias fused into the forward pass and into backward-weights.
//
// Built just in time by paddle_cnn/accel/build.py and linked against the
// oneDNN that Paddle itself loads (paddle/libs/libdnnl.so.3), so the process
// holds a single oneDNN. Only long-standing oneDNN v3 API is used: the same
// source builds against Paddle 2.6 (oneDNN 3.2) and Paddle 3.x (oneDNN 3.6).
//
// Scope: conv2d and conv2d_transpose (oneDNN's deconvolution) in float32,
// NCHW, groups 1, explicit (possibly asymmetric) padding, any strides and
// dilations. Anything else stays on Paddle's kernels (decided in Python,
// paddle_cnn/accel/conv.py).
//
// Layouts: the primitives choose their own blocked layouts (format `any`);
// plain Paddle tensors are reordered into reusable workspace buffers and
// results are reordered back. Forcing NCHW on the primitives made AlexNet's
// first layer ~20x slower.

#include <dlfcn.h>

#include <cstdint>
#include <cstdlib>
#include <list>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "onednn_common.h"
#include "paddle/extension.h"

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using pcnn::dense;
using pcnn::engine;
using pcnn::stream;

// ---------------------------------------------------------------- geometry

int64_t output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad_lo,
                    int64_t pad_hi, int64_t dilation, bool transposed) {
  const int64_t extent = (kernel - 1) * dilation + 1;
  if (transposed) return (in - 1) * stride - pad_lo - pad_hi + extent;
  return (in + pad_lo + pad_hi - extent) / stride + 1;
}

// Everything a primitive depends on; its text form is the cache key.
struct Geometry {
  bool transposed;         // conv2d_transpose: weight is [c, o, kh, kw]
  int64_t n, c, h, w;      // input  [n, c, h, w]
  int64_t o, kh, kw;       // weight [o, c, kh, kw] (conv2d)
  int64_t oh, ow;          // output [n, o, oh, ow]
  int64_t sh, sw;          // strides
  int64_t dh, dw;          // dilations as Paddle counts them (1 = dense)
  int64_t pt, pb, pl, pr;  // padding top, bottom, left, right
  bool bias;
  int threads;

  std::string key() const {
    std::ostringstream s;
    s << (transposed ? 'T' : 'C') << n << ',' << c << ',' << h << ',' << w << '|' << o << ',' << kh << ','
      << kw << '|' << sh << ',' << sw << '|' << dh << ',' << dw << '|' << pt
      << ',' << pb << ',' << pl << ',' << pr << '|' << bias << '|' << threads;
    return s.str();
  }

  memory::desc src(Tag tag) const {
    return memory::desc({n, c, h, w}, memory::data_type::f32, tag);
  }
  memory::desc weights(Tag tag) const {
    return memory::desc({o, c, kh, kw}, memory::data_type::f32, tag);
  }
  // Paddle's weight tensor as oneDNN sees it: conv2d stores [o, c, kh, kw],
  // conv2d_transpose [c, o, kh, kw]; both are oneDNN's {o, c, kh, kw} dims.
  memory::desc user_weights() const {
    return weights(transposed ? Tag::iohw : Tag::oihw);
  }
  memory::desc dst(Tag tag) const {
    return memory::desc({n, o, oh, ow}, memory::data_type::f32, tag);
  }
  memory::desc bias_desc() const {
    return memory::desc({o}, memory::data_type::f32, Tag::x);
  }
  memory::dims strides() const { return {sh, sw}; }
  memory::dims dilates() const { return {dh - 1, dw - 1}; }  // oneDNN: 0 = dense
  memory::dims pad_l() const { return {pt, pl}; }
  memory::dims pad_r() const { return {pb, pr}; }
};

void check_tensor(const paddle::Tensor& t, const char* name) {
  PD_CHECK(t.is_cpu(), "oneDNN conv2d: ", name, " must be a CPU tensor");
  PD_CHECK(t.dtype() == paddle::DataType::FLOAT32, "oneDNN conv2d: ", name,
           " must be float32");
}

Geometry make_geometry(const paddle::Tensor& x, const paddle::Tensor& w,
                       bool transposed, bool bias,
                       const std::vector<int>& strides,
                       const std::vector<int>& paddings,
                       const std::vector<int>& dilations, int threads) {
  check_tensor(x, "x");
  check_tensor(w, "weight");
  const auto xs = x.shape();
  const auto ws = w.shape();
  PD_CHECK(xs.size() == 4, "oneDNN conv2d: x must be 4-D NCHW, got ", xs.size(),
           "-D");
  PD_CHECK(ws.size() == 4, "oneDNN conv2d: weight must be 4-D, got ",
           ws.size(), "-D");
  const int64_t in_channels = transposed ? ws[0] : ws[1];
  PD_CHECK(in_channels == xs[1], "oneDNN conv2d: weight expects ", in_channels,
           " input channels, x has ", xs[1], " (groups must be 1)");
  PD_CHECK(strides.size() == 2 && dilations.size() == 2 && paddings.size() == 4,
           "oneDNN conv2d: strides and dilations take 2 values, paddings 4");
  PD_CHECK(strides[0] > 0 && strides[1] > 0 && dilations[0] > 0 &&
               dilations[1] > 0,
           "oneDNN conv2d: strides and dilations must be positive");
  for (int p : paddings) {
    PD_CHECK(p >= 0, "oneDNN conv2d: paddings must be >= 0");
  }
  Geometry g{};
  g.transposed = transposed;
  g.n = xs[0], g.c = xs[1], g.h = xs[2], g.w = xs[3];
  g.o = transposed ? ws[1] : ws[0], g.kh = ws[2], g.kw = ws[3];
  g.sh = strides[0], g.sw = strides[1];
  g.dh = dilations[0], g.dw = dilations[1];
  g.pt = paddings[0], g.pb = paddings[1], g.pl = paddings[2], g.pr = paddings[3];
  g.oh = output_size(g.h, g.kh, g.sh, g.pt, g.pb, g.dh, transposed);
  g.ow = output_size(g.w, g.kw, g.sw, g.pl, g.pr, g.dw, transposed);
  PD_CHECK(g.n > 0 && g.c > 0 && g.o > 0, "oneDNN conv2d: empty tensor");
  PD_CHECK(g.oh > 0 && g.ow > 0, "oneDNN conv2d: the kernel (", g.kh, "x",
           g.kw, ") does not fit the padded input (", g.h, "x", g.w, ")");
  g.bias = bias;
  g.threads = threads;
  return g;
}

// --------------------------------------------------------------- workspace

// Reusable buffers for blocked copies and scratchpads. Convolutions run one
// at a time (under the library's lock), so one buffer per role suffices; the
// buffers grow to the largest layer and are then reused, which spares the
// page faults of freshly allocated memory on every step. A forward and a
// backward call never overlap, so the forward's output buffer doubles as
// the backward's output-gradient buffer.
enum Slot {
  kSrc,
  kWeights,
  kDiffDst,
  kDst = kDiffDst,
  kDiffDstWeights,
  kDiffSrc,
  kDiffWeights,
  kScratch,
  kSlotCount
};

class Workspace {
 public:
  ~Workspace() { release(); }
  void* get(Slot slot, size_t bytes) {
    Buffer& b = buffers_[slot];
    if (b.size < bytes) {
      std::free(b.ptr);
      b.ptr = nullptr;
      b.size = 0;
      const size_t rounded = (bytes + 63) / 64 * 64;
      b.ptr = std::aligned_alloc(64, rounded);
      PD_CHECK(b.ptr != nullptr, "oneDNN conv2d: out of memory (", rounded,
               " bytes of workspace)");
      b.size = rounded;
    }
    return b.ptr;
  }
  size_t bytes() const {
    size_t total = 0;
    for (const auto& b : buffers_) total += b.size;
    return total;
  }
  void release() {
    for (auto& b : buffers_) {
      std::free(b.ptr);
      b = Buffer();
    }
  }

 private:
  struct Buffer {
    void* ptr = nullptr;
    size_t size = 0;
  };
  Buffer buffers_[kSlotCount];
};

// ------------------------------------------------------------------- plans

// A copy between a plain tensor and a primitive's layout, or nothing when
// the primitive already works on the plain layout.
struct Reorder {
  memory::desc from, to;
  bool needed = false;
  dnnl::reorder prim;
};

Reorder make_reorder(const memory::desc& from, const memory::desc& to) {
  Reorder r;
  r.from = from;
  r.to = to;
  r.needed = from != to;
  if (r.needed) {
    r.prim = dnnl::reorder(
        dnnl::reorder::primitive_desc(engine(), from, engine(), to));
  }
  return r;
}

dnnl::primitive_attr user_scratchpad() {
  // The scratchpad comes from our workspace, so cached primitives hold none.
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// The two primitive families share one code path: Paddle's conv2d, and
// conv2d_transpose (oneDNN's deconvolution, whose backward passes are the
// convolution's passes the other way round).
struct Convolution {
  using Forward = dnnl::convolution_forward;
  using BackwardData = dnnl::convolution_backward_data;
  using BackwardWeights = dnnl::convolution_backward_weights;
  static constexpr dnnl::algorithm algorithm = dnnl::algorithm::convolution_direct;
};

struct Deconvolution {
  using Forward = dnnl::deconvolution_forward;
  using BackwardData = dnnl::deconvolution_backward_data;
  using BackwardWeights = dnnl::deconvolution_backward_weights;
  static constexpr dnnl::algorithm algorithm =
      dnnl::algorithm::deconvolution_direct;
};

template <typename Kind>
typename Kind::Forward::primitive_desc forward_desc(const Geometry& g) {
  const auto any = Tag::any;
  using Pd = typename Kind::Forward::primitive_desc;
  if (g.bias) {
    return Pd(engine(), dnnl::prop_kind::forward_training, Kind::algorithm,
              g.src(any), g.weights(any), g.bias_desc(), g.dst(any),
              g.strides(), g.dilates(), g.pad_l(), g.pad_r(),
              user_scratchpad());
  }
  return Pd(engine(), dnnl::prop_kind::forward_training, Kind::algorithm,
            g.src(any), g.weights(any), g.dst(any), g.strides(), g.dilates(),
            g.pad_l(), g.pad_r(), user_scratchpad());
}

struct ForwardPlan {
  dnnl::primitive prim;
  memory::desc scratch;
  Reorder src_in, weights_in, dst_out;
};

struct BackwardDataPlan {
  dnnl::primitive prim;
  memory::desc scratch;
  Reorder diff_dst_in, weights_in, diff_src_out;
};

struct BackwardWeightsPlan {
  dnnl::primitive prim;
  memory::desc scratch;
  Reorder src_in, diff_dst_in, diff_weights_out;
};

template <typename Kind>
std::unique_ptr<ForwardPlan> forward_plan(const Geometry& g) {
  auto pd = forward_desc<Kind>(g);
  auto plan = std::make_unique<ForwardPlan>();
  plan->prim = typename Kind::Forward(pd);
  plan->scratch = pd.scratchpad_desc();
  plan->src_in = make_reorder(g.src(Tag::nchw), pd.src_desc());
  plan->weights_in = make_reorder(g.user_weights(), pd.weights_desc());
  plan->dst_out = make_reorder(pd.dst_desc(), g.dst(Tag::nchw));
  return plan;
}

template <typename Kind>
std::unique_ptr<BackwardDataPlan> backward_data_plan(const Geometry& g) {
  const auto any = Tag::any;
  auto hint = forward_desc<Kind>(g);
  typename Kind::BackwardData::primitive_desc pd(
      engine(), Kind::algorithm, g.src(any), g.weights(any), g.dst(any),
      g.strides(), g.dilates(), g.pad_l(), g.pad_r(), hint, user_scratchpad());
  auto plan = std::make_unique<BackwardDataPlan>();
  plan->prim = typename Kind::BackwardData(pd);
  plan->scratch = pd.scratchpad_desc();
  plan->diff_dst_in = make_reorder(g.dst(Tag::nchw), pd.diff_dst_desc());
  plan->weights_in = make_reorder(g.user_weights(), pd.weights_desc());
  plan->diff_src_out = make_reorder(pd.diff_src_desc(), g.src(Tag::nchw));
  return plan;
}

template <typename Kind>
std::unique_ptr<BackwardWeightsPlan> backward_weights_plan(const Geometry& g) {
  const auto any = Tag::any;
  auto hint = forward_desc<Kind>(g);
  using Pd = typename Kind::BackwardWeights::primitive_desc;
  auto pd = g.bias ? Pd(engine(), Kind::algorithm, g.src(any), g.weights(any),
                        g.bias_desc(), g.dst(any), g.strides(), g.dilates(),
                        g.pad_l(), g.pad_r(), hint, user_scratchpad())
                   : Pd(engine(), Kind::algorithm, g.src(any), g.weights(any),
                        g.dst(any), g.strides(), g.dilates(), g.pad_l(),
                        g.pad_r(), hint, user_scratchpad());
  auto plan = std::make_unique<BackwardWeightsPlan>();
  plan->prim = typename Kind::BackwardWeights(pd);
  plan->scratch = pd.scratchpad_desc();
  plan->src_in = make_reorder(g.src(Tag::nchw), pd.src_desc());
  plan->diff_dst_in = make_reorder(g.dst(Tag::nchw), pd.diff_dst_desc());
  plan->diff_weights_out =
      make_reorder(pd.diff_weights_desc(), g.user_weights());
  return plan;
}

std::unique_ptr<ForwardPlan> make_forward_plan(const Geometry& g) {
  return g.transposed ? forward_plan<Deconvolution>(g)
                      : forward_plan<Convolution>(g);
}

std::unique_ptr<BackwardDataPlan> make_backward_data_plan(const Geometry& g) {
  return g.transposed ? backward_data_plan<Deconvolution>(g)
                      : backward_data_plan<Convolution>(g);
}

std::unique_ptr<BackwardWeightsPlan> make_backward_weights_plan(
    const Geometry& g) {
  return g.transposed ? backward_weights_plan<Deconvolution>(g)
                      : backward_weights_plan<Convolution>(g);
}

// A bounded least-recently-used map from geometry to plan. Unbounded, a
// training run that meets many batch sizes kept hundreds of MB of plans.
template <typename Plan>
class PlanCache {
 public:
  using Factory = std::unique_ptr<Plan> (*)(const Geometry&);
  explicit PlanCache(Factory make) : make_(make) {}

  Plan& get(const Geometry& g) {
    const std::string key = g.key();
    auto hit = index_.find(key);
    if (hit != index_.end()) {
      items_.splice(items_.begin(), items_, hit->second);
      return *hit->second->second;
    }
    auto plan = make_(g);  // may throw; the cache is unchanged then
    items_.emplace_front(key, std::move(plan));
    index_[key] = items_.begin();
    while (items_.size() > capacity_) {
      index_.erase(items_.back().first);
      items_.pop_back();
    }
    return *items_.front().second;
  }
  size_t size() const { return items_.size(); }
  void set_capacity(size_t capacity) {
    capacity_ = capacity > 0 ? capacity : 1;
    while (items_.size() > capacity_) {
      index_.erase(items_.back().first);
      items_.pop_back();
    }
  }
  void clear() {
    index_.clear();
    items_.clear();
  }

 private:
  using Item = std::pair<std::string, std::unique_ptr<Plan>>;
  Factory make_;
  size_t capacity_ = 48;
  std::list<Item> items_;
  std::unordered_map<std::string, typename std::list<Item>::iterator> index_;
};

struct State {  // guarded by pcnn::library_mutex()
  Workspace workspace;
  PlanCache<ForwardPlan> forward{make_forward_plan};
  PlanCache<BackwardDataPlan> backward_data{make_backward_data_plan};
  PlanCache<BackwardWeightsPlan> backward_weights{make_backward_weights_plan};
};

State& state() {
  static State* s = new State();  // never destroyed: outlives Paddle's exit
  return *s;
}

// --------------------------------------------------------------- execution

// The primitive's view of an input: the tensor itself, or its reorder into
// a workspace buffer.
memory stage_input(const Reorder& r, const float* data, Slot slot) {
  memory user(r.from, engine(), const_cast<float*>(data));
  if (!r.needed) return user;
  memory staged(r.to, engine(), state().workspace.get(slot, r.to.get_size()));
  r.prim.execute(stream(), user, staged);
  return staged;
}

// Where the primitive writes an output: the tensor itself, or a workspace
// buffer that finish_output() reorders into the tensor.
memory output_memory(const Reorder& r, float* data, Slot slot) {
  if (!r.needed) return memory(r.to, engine(), data);
  return memory(r.from, engine(), state().workspace.get(slot, r.from.get_size()));
}

void finish_output(const Reorder& r, memory produced, float* data) {
  if (!r.needed) return;
  memory user(r.to, engine(), data);
  r.prim.execute(stream(), produced, user);
}

void add_scratchpad(std::unordered_map<int, memory>* args,
                    const memory::desc& scratch) {
  if (scratch.get_size() == 0) return;
  args->insert({DNNL_ARG_SCRATCHPAD,
                memory(scratch, engine(),
                       state().workspace.get(kScratch, scratch.get_size()))});
}

std::string dnnl_message(const dnnl::error& e) {
  std::ostringstream s;
  s << "oneDNN conv2d failed: " << e.what() << " (status " << e.status << ")";
  return s.str();
}

std::vector<paddle::Tensor> forward(bool transposed, const paddle::Tensor& x_in,
                                    const paddle::Tensor& w_in,
                                    const paddle::Tensor* b_in,
                                    const std::vector<int>& strides,
                                    const std::vector<int>& paddings,
                                    const std::vector<int>& dilations,
                                    int threads) {
  const paddle::Tensor x = dense(x_in), w = dense(w_in);
  const Geometry g = make_geometry(x, w, transposed, b_in != nullptr, strides,
                                   paddings, dilations, threads);
  paddle::Tensor b;
  if (b_in != nullptr) {
    b = dense(*b_in);
    check_tensor(b, "bias");
    PD_CHECK(b.numel() == g.o, "oneDNN conv2d: bias has ", b.numel(),
             " values for ", g.o, " output channels");
  }
  paddle::Tensor out =
      paddle::empty({g.n, g.o, g.oh, g.ow}, paddle::DataType::FLOAT32, x.place());
  State& st = state();
  pcnn::Call call(g.threads);
  try {
    ForwardPlan& plan = st.forward.get(g);
    std::unordered_map<int, memory> args;
    args.insert({DNNL_ARG_SRC, stage_input(plan.src_in, x.data<float>(), kSrc)});
    args.insert({DNNL_ARG_WEIGHTS,
                 stage_input(plan.weights_in, w.data<float>(), kWeights)});
    if (g.bias) {
      args.insert({DNNL_ARG_BIAS,
                   memory(g.bias_desc(), engine(),
                          const_cast<float*>(b.data<float>()))});
    }
    memory dst = output_memory(plan.dst_out, out.data<float>(), kDst);
    args.insert({DNNL_ARG_DST, dst});
    add_scratchpad(&args, plan.scratch);
    plan.prim.execute(stream(), args);
    finish_output(plan.dst_out, dst, out.data<float>());
    stream().wait();
  } catch (const dnnl::error& e) {
    PD_THROW(dnnl_message(e));
  }
  return {out};
}

// need_dx is false when the input needs no gradient (a first layer):
// backward-data is then skipped, the costliest part of that layer's backward.
std::vector<paddle::Tensor> backward(bool transposed, const paddle::Tensor& x_in,
                                     const paddle::Tensor& w_in,
                                     const paddle::Tensor& dout_in, bool bias,
                                     const std::vector<int>& strides,
                                     const std::vector<int>& paddings,
                                     const std::vector<int>& dilations,
                                     int threads, bool need_dx) {
  const paddle::Tensor x = dense(x_in), w = dense(w_in), dout = dense(dout_in);
  const Geometry g =
      make_geometry(x, w, transposed, bias, strides, paddings, dilations,
                    threads);
  check_tensor(dout, "output gradient");
  PD_CHECK(dout.shape() == std::vector<int64_t>({g.n, g.o, g.oh, g.ow}),
           "oneDNN conv2d: the output gradient has the wrong shape");
  const auto place = x.place();
  paddle::Tensor dx, db;
  paddle::Tensor dw = paddle::empty(w.shape(), paddle::DataType::FLOAT32, place);
  // Paddle requires every gradient output to exist; when x needs none, a
  // zero tensor stands in (Paddle drops it) and backward-data is skipped.
  dx = need_dx ? paddle::empty(x.shape(), paddle::DataType::FLOAT32, place)
               : paddle::zeros(x.shape(), paddle::DataType::FLOAT32, place);
  if (bias) db = paddle::empty({g.o}, paddle::DataType::FLOAT32, place);

  State& st = state();
  pcnn::Call call(g.threads);
  try {
    memory diff_dst_for_data;
    memory::desc diff_dst_for_data_desc;
    if (need_dx) {
      BackwardDataPlan& plan = st.backward_data.get(g);
      std::unordered_map<int, memory> args;
      diff_dst_for_data =
          stage_input(plan.diff_dst_in, dout.data<float>(), kDiffDst);
      diff_dst_for_data_desc = plan.diff_dst_in.to;
      args.insert({DNNL_ARG_DIFF_DST, diff_dst_for_data});
      args.insert({DNNL_ARG_WEIGHTS,
                   stage_input(plan.weights_in, w.data<float>(), kWeights)});
      memory diff_src =
          output_memory(plan.diff_src_out, dx.data<float>(), kDiffSrc);
      args.insert({DNNL_ARG_DIFF_SRC, diff_src});
      add_scratchpad(&args, plan.scratch);
      plan.prim.execute(stream(), args);
      finish_output(plan.diff_src_out, diff_src, dx.data<float>());
    }
    BackwardWeightsPlan& plan = st.backward_weights.get(g);
    std::unordered_map<int, memory> args;
    args.insert({DNNL_ARG_SRC, stage_input(plan.src_in, x.data<float>(), kSrc)});
    if (need_dx && diff_dst_for_data_desc == plan.diff_dst_in.to) {
      args.insert({DNNL_ARG_DIFF_DST, diff_dst_for_data});  // same layout: reuse
    } else {
      // A second buffer only while backward-data's copy must stay intact.
      args.insert({DNNL_ARG_DIFF_DST,
                   stage_input(plan.diff_dst_in, dout.data<float>(),
                               need_dx ? kDiffDstWeights : kDiffDst)});
    }
    memory diff_weights =
        output_memory(plan.diff_weights_out, dw.data<float>(), kDiffWeights);
    args.insert({DNNL_ARG_DIFF_WEIGHTS, diff_weights});
    if (bias) {
      args.insert({DNNL_ARG_DIFF_BIAS,
                   memory(g.bias_desc(), engine(), db.data<float>())});
    }
    add_scratchpad(&args, plan.scratch);
    plan.prim.execute(stream(), args);
    finish_output(plan.diff_weights_out, diff_weights, dw.data<float>());
    stream().wait();
  } catch (const dnnl::error& e) {
    PD_THROW(dnnl_message(e));
  }
  if (bias) return {dx, dw, db};
  return {dx, dw};
}

// --------------------------------------------------- Paddle registrations
//
// Four operators: conv2d and conv2d_transpose, each with and without a bias
// (a bias input cannot be optional in Paddle 2.6's custom-op API).

template <bool Transposed>
std::vector<paddle::Tensor> Forward(const paddle::Tensor& x,
                                    const paddle::Tensor& w,
                                    const std::vector<int>& strides,
                                    const std::vector<int>& paddings,
                                    const std::vector<int>& dilations,
                                    int threads, bool need_dx) {
  return forward(Transposed, x, w, nullptr, strides, paddings, dilations,
                 threads);
}

template <bool Transposed>
std::vector<paddle::Tensor> BiasForward(
    const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& b,
    const std::vector<int>& strides, const std::vector<int>& paddings,
    const std::vector<int>& dilations, int threads, bool need_dx) {
  return forward(Transposed, x, w, &b, strides, paddings, dilations, threads);
}

template <bool Transposed>
std::vector<paddle::Tensor> Backward(const paddle::Tensor& x,
                                     const paddle::Tensor& w,
                                     const paddle::Tensor& dout,
                                     const std::vector<int>& strides,
                                     const std::vector<int>& paddings,
                                     const std::vector<int>& dilations,
                                     int threads, bool need_dx) {
  return backward(Transposed, x, w, dout, false, strides, paddings, dilations,
                  threads, need_dx);
}

template <bool Transposed>
std::vector<paddle::Tensor> BiasBackward(
    const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& dout,
    const std::vector<int>& strides, const std::vector<int>& paddings,
    const std::vector<int>& dilations, int threads, bool need_dx) {
  return backward(Transposed, x, w, dout, true, strides, paddings, dilations,
                  threads, need_dx);
}

template <bool Transposed>
std::vector<int64_t> output_shape(const std::vector<int64_t>& x,
                                  const std::vector<int64_t>& w,
                                  const std::vector<int>& strides,
                                  const std::vector<int>& paddings,
                                  const std::vector<int>& dilations) {
  auto spatial = [&](int64_t in, int64_t k, int axis) -> int64_t {
    if (in < 0) return -1;  // unknown in a static graph
    return output_size(in, k, strides[axis], paddings[2 * axis],
                       paddings[2 * axis + 1], dilations[axis], Transposed);
  };
  return {x[0], Transposed ? w[1] : w[0], spatial(x[2], w[2], 0),
          spatial(x[3], w[3], 1)};
}

template <bool Transposed>
std::vector<std::vector<int64_t>> InferShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& w,
    const std::vector<int>& strides, const std::vector<int>& paddings,
    const std::vector<int>& dilations, int threads, bool need_dx) {
  return {output_shape<Transposed>(x, w, strides, paddings, dilations)};
}

template <bool Transposed>
std::vector<std::vector<int64_t>> BiasInferShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& w,
    const std::vector<int64_t>& b, const std::vector<int>& strides,
    const std::vector<int>& paddings, const std::vector<int>& dilations,
    int threads, bool need_dx) {
  return {output_shape<Transposed>(x, w, strides, paddings, dilations)};
}

std::vector<paddle::DataType> InferDtype(const paddle::DataType& x,
                                         const paddle::DataType& w) {
  return {x};
}

std::vector<paddle::DataType> BiasInferDtype(const paddle::DataType& x,
                                             const paddle::DataType& w,
                                             const paddle::DataType& b) {
  return {x};
}

}  // namespace

#define PCNN_CONV_ATTRS                                                   \
  {                                                                       \
    "strides: std::vector<int>", "paddings: std::vector<int>",            \
        "dilations: std::vector<int>", "threads: int", "need_dx: bool"    \
  }

PD_BUILD_OP(pcnn_conv2d)
    .Inputs({"X", "W"})
    .Outputs({"Out"})
    .Attrs(PCNN_CONV_ATTRS)
    .SetKernelFn(PD_KERNEL(Forward<false>))
    .SetInferShapeFn(PD_INFER_SHAPE(InferShape<false>))
    .SetInferDtypeFn(PD_INFER_DTYPE(InferDtype));

PD_BUILD_GRAD_OP(pcnn_conv2d)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W")})
    .Attrs(PCNN_CONV_ATTRS)
    .SetKernelFn(PD_KERNEL(Backward<false>));

PD_BUILD_OP(pcnn_conv2d_bias)
    .Inputs({"X", "W", "Bias"})
    .Outputs({"Out"})
    .Attrs(PCNN_CONV_ATTRS)
    .SetKernelFn(PD_KERNEL(BiasForward<false>))
    .SetInferShapeFn(PD_INFER_SHAPE(BiasInferShape<false>))
    .SetInferDtypeFn(PD_INFER_DTYPE(BiasInferDtype));

PD_BUILD_GRAD_OP(pcnn_conv2d_bias)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W"), paddle::Grad("Bias")})
    .Attrs(PCNN_CONV_ATTRS)
    .SetKernelFn(PD_KERNEL(BiasBackward<false>));

PD_BUILD_OP(pcnn_conv2d_transpose)
    .Inputs({"X", "W"})
    .Outputs({"Out"})
    .Attrs(PCNN_CONV_ATTRS)
    .SetKernelFn(PD_KERNEL(Forward<true>))
    .SetInferShapeFn(PD_INFER_SHAPE(InferShape<true>))
    .SetInferDtypeFn(PD_INFER_DTYPE(InferDtype));

PD_BUILD_GRAD_OP(pcnn_conv2d_transpose)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W")})
    .Attrs(PCNN_CONV_ATTRS)
    .SetKernelFn(PD_KERNEL(Backward<true>));

PD_BUILD_OP(pcnn_conv2d_transpose_bias)
    .Inputs({"X", "W", "Bias"})
    .Outputs({"Out"})
    .Attrs(PCNN_CONV_ATTRS)
    .SetKernelFn(PD_KERNEL(BiasForward<true>))
    .SetInferShapeFn(PD_INFER_SHAPE(BiasInferShape<true>))
    .SetInferDtypeFn(PD_INFER_DTYPE(BiasInferDtype));

PD_BUILD_GRAD_OP(pcnn_conv2d_transpose_bias)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W"), paddle::Grad("Bias")})
    .Attrs(PCNN_CONV_ATTRS)
    .SetKernelFn(PD_KERNEL(BiasBackward<true>));

// ------------------------------------------- plain C entry points (ctypes)

#define PCNN_EXPORT extern "C" __attribute__((visibility("default")))

// oneDNN as loaded in this process: {major, minor, patch, cpu_runtime}.
PCNN_EXPORT void pcnn_dnnl_version(int* out) {
  const dnnl_version_t* v = dnnl_version();
  out[0] = v->major;
  out[1] = v->minor;
  out[2] = v->patch;
  out[3] = static_cast<int>(v->cpu_runtime);
}

// The CPU runtime this file was compiled for (dnnl_config.h).
PCNN_EXPORT int pcnn_compiled_cpu_runtime() { return DNNL_CPU_RUNTIME; }

// The headers' version, major * 10000 + minor * 100 + patch.
PCNN_EXPORT int pcnn_header_version() {
  return DNNL_VERSION_MAJOR * 10000 + DNNL_VERSION_MINOR * 100 +
         DNNL_VERSION_PATCH;
}

// Path of the shared object that provides dnnl_version to this operator.
PCNN_EXPORT const char* pcnn_dnnl_library_path() {
  static std::string path = [] {
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(&dnnl_version), &info) != 0 &&
        info.dli_fname != nullptr) {
      return std::string(info.dli_fname);
    }
    return std::string();
  }();
  return path.c_str();
}

// Cached plans (forward + backward-data + backward-weights) and workspace bytes.
PCNN_EXPORT int pcnn_cache_size() {
  State& st = state();
  std::lock_guard<std::mutex> lock(pcnn::library_mutex());
  return static_cast<int>(st.forward.size() + st.backward_data.size() +
                          st.backward_weights.size());
}

PCNN_EXPORT int64_t pcnn_workspace_bytes() {
  State& st = state();
  std::lock_guard<std::mutex> lock(pcnn::library_mutex());
  return static_cast<int64_t>(st.workspace.bytes());
}

// Plans kept per kind (forward, backward-data, backward-weights).
PCNN_EXPORT void pcnn_set_cache_capacity(int capacity) {
  State& st = state();
  std::lock_guard<std::mutex> lock(pcnn::library_mutex());
  const size_t c = capacity > 0 ? static_cast<size_t>(capacity) : 1;
  st.forward.set_capacity(c);
  st.backward_data.set_capacity(c);
  st.backward_weights.set_capacity(c);
}

// Drop every plan and free the workspace.
PCNN_EXPORT void pcnn_release() {
  State& st = state();
  std::lock_guard<std::mutex> lock(pcnn::library_mutex());
  st.forward.clear();
  st.backward_data.clear();
  st.backward_weights.clear();
  st.workspace.release();
}
