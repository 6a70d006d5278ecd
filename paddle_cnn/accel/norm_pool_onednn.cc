// Batch normalization, max / average pooling and ReLU on the CPU with oneDNN,
// as Paddle custom operators (issue #24).
//
// Why: Paddle's eager CPU batch_norm, pool2d and relu kernels (and their
// gradients) run on one thread; in a ResNet-18 step they were about a third
// of the operator time while the second core idled. oneDNN's primitives run
// them on the OpenMP threads of the oneDNN that Paddle ships.
//
// Compiled into the same library as conv_onednn.cc (paddle_cnn/accel/build.py)
// and linked against Paddle's libdnnl.so.3. Only oneDNN v3.0 API is used, so
// the file builds against the 3.2 headers and runs on Paddle's 3.2 or 3.6.
//
// Scope: 4-D NCHW tensors in float32 or bfloat16 (scale, shift and the
// statistics stay float32). Layouts are plain NCHW on both sides: these are
// memory-bound primitives, and a reorder into a blocked layout and back
// would cost as much as the operation (see bn_layout). Primitive descriptors
// are created per call; oneDNN's own primitive cache makes the repeats cheap.
//
// Semantics follow Paddle's layers (checked in Python, paddle_cnn/accel/layers.py):
// batch norm updates the running statistics as
//   running = momentum * running + (1 - momentum) * batch
// with the biased batch variance; pooling takes explicit paddings (ceil_mode
// is turned into extra bottom/right padding by the caller).

#include <dlfcn.h>

#include <cstdint>
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
using Args = std::unordered_map<int, memory>;
using pcnn::dense;
using pcnn::engine;

// ------------------------------------------------------------ tensors

memory::data_type data_type(const paddle::Tensor& t, const char* op,
                            const char* name) {
  PD_CHECK(t.is_cpu(), "oneDNN ", op, ": ", name, " must be a CPU tensor");
  if (t.dtype() == paddle::DataType::FLOAT32) return memory::data_type::f32;
  if (t.dtype() == paddle::DataType::BFLOAT16) return memory::data_type::bf16;
  PD_THROW("oneDNN ", op, ": ", name, " must be float32 or bfloat16");
  return memory::data_type::undef;
}

memory::dims dims4(const paddle::Tensor& t, const char* op, const char* name) {
  const auto s = t.shape();
  PD_CHECK(s.size() == 4, "oneDNN ", op, ": ", name, " must be 4-D NCHW, got ",
           s.size(), "-D");
  for (int64_t d : s) PD_CHECK(d > 0, "oneDNN ", op, ": ", name, " is empty");
  return {s[0], s[1], s[2], s[3]};
}

memory::desc nchw(const memory::dims& d, memory::data_type dt) {
  return memory::desc(d, dt, Tag::nchw);
}

void* ptr(const paddle::Tensor& t) { return const_cast<void*>(t.data()); }

// A per-channel float32 vector (scale, shift, mean, variance) of c values.
paddle::Tensor channel_vector(const paddle::Tensor& t, int64_t c, const char* op,
                              const char* name) {
  PD_CHECK(t.is_cpu() && t.dtype() == paddle::DataType::FLOAT32, "oneDNN ", op,
           ": ", name, " must be a float32 CPU tensor");
  PD_CHECK(t.numel() == c, "oneDNN ", op, ": ", name, " has ", t.numel(),
           " values for ", c, " channels");
  return dense(t);
}

// ------------------------------------------------------ execution

memory wrap(const memory::desc& d, const paddle::Tensor& t) {
  return memory(d, engine(), ptr(t));
}

void run(int threads, const dnnl::primitive& prim,
         const Args& args) {
  pcnn::Call call(threads);
  prim.execute(pcnn::stream(), args);
  pcnn::stream().wait();
}

// A tensor the primitive reads or writes: the tensor itself when its plain
// NCHW layout is what the primitive uses, else a copy in the primitive's
// layout, in a buffer from Paddle's allocator (which reuses memory, so no
// fresh pages are touched on every step).
struct Io {
  int arg;
  memory::desc user;
  void* data;
  memory::desc wanted;
};

void run_io(int threads, const paddle::Place& place, const dnnl::primitive& prim,
            Args args, const std::vector<Io>& inputs,
            const std::vector<Io>& outputs) {
  pcnn::Call call(threads);
  dnnl::stream& stream = pcnn::stream();
  std::vector<paddle::Tensor> buffers;
  auto buffer = [&](const memory::desc& d) {
    buffers.push_back(paddle::empty({static_cast<int64_t>(d.get_size())},
                                    paddle::DataType::UINT8, place));
    return memory(d, engine(), buffers.back().data());
  };
  for (const Io& io : inputs) {
    memory user(io.user, engine(), io.data);
    if (io.user == io.wanted) {
      args.insert({io.arg, user});
      continue;
    }
    memory staged = buffer(io.wanted);
    dnnl::reorder(user, staged).execute(stream, user, staged);
    args.insert({io.arg, staged});
  }
  for (const Io& io : outputs) {
    args.insert({io.arg, io.user == io.wanted
                             ? memory(io.user, engine(), io.data)
                             : buffer(io.wanted)});
  }
  prim.execute(stream, args);
  for (const Io& io : outputs) {
    if (io.user == io.wanted) continue;
    memory user(io.user, engine(), io.data);
    dnnl::reorder(args.at(io.arg), user).execute(stream, args.at(io.arg), user);
  }
  stream.wait();
}

std::string failure(const char* op, const dnnl::error& e) {
  std::ostringstream s;
  s << "oneDNN " << op << " failed: " << e.what() << " (status " << e.status
    << ")";
  return s.str();
}

// Runs body(); a oneDNN error becomes Paddle's error with the op's name.
template <typename Body>
void guarded(const char* op, Body body) {
  try {
    body();
  } catch (const dnnl::error& e) {
    PD_THROW(failure(op, e));
  }
}

// ---------------------------------------------------- batch normalization

using BnFwd = dnnl::batch_normalization_forward;
using BnBwd = dnnl::batch_normalization_backward;
const char kBn[] = "batch_norm";

// Batch norm's layout. oneDNN's JIT kernels want channels blocked by 16
// (nChw16c); on NCHW it runs a generic loop. Copying in and out of the
// blocked layout (run_io does it when the layouts differ) cost more than the
// faster kernel saved on our 2-core machine (ONEDNN_VERBOSE, ResNet-18@96
// shapes), so batch norm stays on NCHW; run_io keeps the option open.
memory::desc bn_layout(const memory::dims& d, memory::data_type dt) {
  return memory::desc(d, dt, Tag::nchw);
}

dnnl::normalization_flags bn_flags(bool global_stats, bool relu = false) {
  auto f = dnnl::normalization_flags::use_scale |
           dnnl::normalization_flags::use_shift;
  if (relu) f = f | dnnl::normalization_flags::fuse_norm_relu;
  return global_stats ? f | dnnl::normalization_flags::use_global_stats : f;
}

// Training: normalise with the batch statistics, return them (mean and
// biased variance, for the backward pass) and update the running
// statistics in place, as Paddle's batch_norm does with its MeanOut /
// VarianceOut outputs that share the buffers.
std::vector<paddle::Tensor> batch_norm_train(
    const paddle::Tensor& x_in, const paddle::Tensor& scale_in,
    const paddle::Tensor& shift_in, const paddle::Tensor& mean,
    const paddle::Tensor& variance, float epsilon, float momentum,
    int threads, bool relu) {
  const paddle::Tensor x = dense(x_in);
  const auto dt = data_type(x, kBn, "x");
  const auto d = dims4(x, kBn, "x");
  const auto scale = channel_vector(scale_in, d[1], kBn, "scale");
  const auto shift = channel_vector(shift_in, d[1], kBn, "shift");
  // Updated in place: a contiguous copy would leave the buffers unchanged.
  PD_CHECK(channel_vector(mean, d[1], kBn, "mean").data() == mean.data() &&
               channel_vector(variance, d[1], kBn, "variance").data() ==
                   variance.data(),
           "oneDNN batch_norm: the running statistics must be contiguous");
  const auto place = x.place();
  paddle::Tensor y = paddle::empty(x.shape(), x.dtype(), place);
  paddle::Tensor batch_mean =
      paddle::empty({d[1]}, paddle::DataType::FLOAT32, place);
  paddle::Tensor batch_var =
      paddle::empty({d[1]}, paddle::DataType::FLOAT32, place);
  paddle::Tensor ws;  // fused ReLU: where the output was positive, for the backward
  guarded(kBn, [&] {
    const auto layout = bn_layout(d, dt);
    BnFwd::primitive_desc pd(engine(), dnnl::prop_kind::forward_training,
                             layout, layout, epsilon, bn_flags(false, relu));
    const auto vec = pd.mean_desc();
    Args args{{DNNL_ARG_SCALE, wrap(vec, scale)},
              {DNNL_ARG_SHIFT, wrap(vec, shift)},
              {DNNL_ARG_MEAN, wrap(vec, batch_mean)},
              {DNNL_ARG_VARIANCE, wrap(vec, batch_var)}};
    if (relu) {
      const auto ws_desc = pd.workspace_desc();
      ws = paddle::empty({static_cast<int64_t>(ws_desc.get_size())},
                         paddle::DataType::UINT8, place);
      args.insert({DNNL_ARG_WORKSPACE, wrap(ws_desc, ws)});
    }
    run_io(threads, place, BnFwd(pd), args,
           {{DNNL_ARG_SRC, nchw(d, dt), ptr(x), pd.src_desc()}},
           {{DNNL_ARG_DST, nchw(d, dt), ptr(y), pd.dst_desc()}});
  });
  float* running_mean = static_cast<float*>(ptr(mean));
  float* running_var = static_cast<float*>(ptr(variance));
  const float* bm = batch_mean.data<float>();
  const float* bv = batch_var.data<float>();
  for (int64_t c = 0; c < d[1]; ++c) {
    running_mean[c] = momentum * running_mean[c] + (1.f - momentum) * bm[c];
    running_var[c] = momentum * running_var[c] + (1.f - momentum) * bv[c];
  }
  if (relu) return {y, batch_mean, batch_var, ws};
  return {y, batch_mean, batch_var};
}

std::vector<paddle::Tensor> BatchNormTrain(
    const paddle::Tensor& x, const paddle::Tensor& scale,
    const paddle::Tensor& shift, const paddle::Tensor& mean,
    const paddle::Tensor& variance, float epsilon, float momentum,
    int threads) {
  return batch_norm_train(x, scale, shift, mean, variance, epsilon, momentum,
                          threads, false);
}

// Batch norm followed by ReLU in one primitive (oneDNN's fuse_norm_relu),
// training only: y = max(0, bn(x)), with a workspace marking where y > 0.
std::vector<paddle::Tensor> BatchNormReluTrain(
    const paddle::Tensor& x, const paddle::Tensor& scale,
    const paddle::Tensor& shift, const paddle::Tensor& mean,
    const paddle::Tensor& variance, float epsilon, float momentum,
    int threads) {
  return batch_norm_train(x, scale, shift, mean, variance, epsilon, momentum,
                          threads, true);
}

// Backward of either form: with the batch statistics (training) or with the
// running ones (global_stats: the statistics are constants).
std::vector<paddle::Tensor> batch_norm_backward(
    const paddle::Tensor& x_in, const paddle::Tensor& scale_in,
    const paddle::Tensor& mean_in, const paddle::Tensor& var_in,
    const paddle::Tensor& dy_in, float epsilon, int threads,
    bool global_stats, const paddle::Tensor* ws = nullptr) {
  const paddle::Tensor x = dense(x_in), dy = dense(dy_in);
  const auto dt = data_type(x, kBn, "x");
  const auto d = dims4(x, kBn, "x");
  PD_CHECK(dy.shape() == x.shape(), "oneDNN batch_norm: the output gradient "
           "has the wrong shape");
  const auto ddt = data_type(dy, kBn, "output gradient");
  const auto scale = channel_vector(scale_in, d[1], kBn, "scale");
  const auto mean = channel_vector(mean_in, d[1], kBn, "mean");
  const auto var = channel_vector(var_in, d[1], kBn, "variance");
  const auto place = x.place();
  paddle::Tensor dx = paddle::empty(x.shape(), x.dtype(), place);
  paddle::Tensor dscale =
      paddle::empty({d[1]}, paddle::DataType::FLOAT32, place);
  paddle::Tensor dshift =
      paddle::empty({d[1]}, paddle::DataType::FLOAT32, place);
  guarded(kBn, [&] {
    const auto flags = bn_flags(global_stats, ws != nullptr);
    const auto layout = bn_layout(d, dt), diff_layout = bn_layout(d, ddt);
    BnFwd::primitive_desc hint(engine(), dnnl::prop_kind::forward_training,
                               layout, layout, epsilon, flags);
    BnBwd::primitive_desc pd(engine(), dnnl::prop_kind::backward, diff_layout,
                             diff_layout, layout, epsilon, flags, hint);
    const auto vec = hint.mean_desc();
    Args args{{DNNL_ARG_MEAN, wrap(vec, mean)},
              {DNNL_ARG_VARIANCE, wrap(vec, var)},
              {DNNL_ARG_SCALE, wrap(vec, scale)},
              {DNNL_ARG_DIFF_SCALE, wrap(vec, dscale)},
              {DNNL_ARG_DIFF_SHIFT, wrap(vec, dshift)}};
    if (ws != nullptr) {
      PD_CHECK(ws->numel() == static_cast<int64_t>(pd.workspace_desc().get_size()),
               "oneDNN batch_norm_relu: the workspace does not match");
      args.insert({DNNL_ARG_WORKSPACE, wrap(pd.workspace_desc(), *ws)});
    }
    run_io(threads, place, BnBwd(pd), args,
           {{DNNL_ARG_SRC, nchw(d, dt), ptr(x), pd.src_desc()},
            {DNNL_ARG_DIFF_DST, nchw(d, ddt), ptr(dy), pd.diff_dst_desc()}},
           {{DNNL_ARG_DIFF_SRC, nchw(d, dt), ptr(dx), pd.diff_src_desc()}});
  });
  return {dx, dscale, dshift};
}

std::vector<paddle::Tensor> BatchNormReluTrainGrad(
    const paddle::Tensor& x, const paddle::Tensor& scale,
    const paddle::Tensor& batch_mean, const paddle::Tensor& batch_var,
    const paddle::Tensor& ws, const paddle::Tensor& dy, float epsilon,
    float momentum, int threads) {
  return batch_norm_backward(x, scale, batch_mean, batch_var, dy, epsilon,
                             threads, false, &ws);
}

std::vector<paddle::Tensor> BatchNormTrainGrad(
    const paddle::Tensor& x, const paddle::Tensor& scale,
    const paddle::Tensor& batch_mean, const paddle::Tensor& batch_var,
    const paddle::Tensor& dy, float epsilon, float momentum, int threads) {
  return batch_norm_backward(x, scale, batch_mean, batch_var, dy, epsilon,
                             threads, false);
}

// Inference (and training with frozen statistics): the running statistics.
std::vector<paddle::Tensor> BatchNormInfer(
    const paddle::Tensor& x_in, const paddle::Tensor& scale_in,
    const paddle::Tensor& shift_in, const paddle::Tensor& mean_in,
    const paddle::Tensor& var_in, float epsilon, int threads) {
  const paddle::Tensor x = dense(x_in);
  const auto dt = data_type(x, kBn, "x");
  const auto d = dims4(x, kBn, "x");
  const auto scale = channel_vector(scale_in, d[1], kBn, "scale");
  const auto shift = channel_vector(shift_in, d[1], kBn, "shift");
  const auto mean = channel_vector(mean_in, d[1], kBn, "mean");
  const auto var = channel_vector(var_in, d[1], kBn, "variance");
  paddle::Tensor y = paddle::empty(x.shape(), x.dtype(), x.place());
  guarded(kBn, [&] {
    const auto layout = bn_layout(d, dt);
    BnFwd::primitive_desc pd(engine(), dnnl::prop_kind::forward_inference,
                             layout, layout, epsilon, bn_flags(true));
    const auto vec = pd.mean_desc();
    run_io(threads, x.place(), BnFwd(pd),
        {{DNNL_ARG_SCALE, wrap(vec, scale)},
         {DNNL_ARG_SHIFT, wrap(vec, shift)},
         {DNNL_ARG_MEAN, wrap(vec, mean)},
         {DNNL_ARG_VARIANCE, wrap(vec, var)}},
        {{DNNL_ARG_SRC, nchw(d, dt), ptr(x), pd.src_desc()}},
        {{DNNL_ARG_DST, nchw(d, dt), ptr(y), pd.dst_desc()}});
  });
  return {y};
}

std::vector<paddle::Tensor> BatchNormInferGrad(
    const paddle::Tensor& x, const paddle::Tensor& scale,
    const paddle::Tensor& mean, const paddle::Tensor& var,
    const paddle::Tensor& dy, float epsilon, int threads) {
  return batch_norm_backward(x, scale, mean, var, dy, epsilon, threads, true);
}

// ----------------------------------------------------------------- pooling

using PoolFwd = dnnl::pooling_forward;
using PoolBwd = dnnl::pooling_backward;
const char kPool[] = "pool2d";

struct Pool {
  memory::dims src, dst, kernel, strides, pad_l, pad_r;
  memory::dims dilation{0, 0};
  dnnl::algorithm algorithm;
};

Pool make_pool(const std::vector<int64_t>& in, const std::vector<int>& kernel,
               const std::vector<int>& strides, const std::vector<int>& pads,
               dnnl::algorithm algorithm) {
  PD_CHECK(in.size() == 4, "oneDNN pool2d: x must be 4-D NCHW, got ",
           in.size(), "-D");
  PD_CHECK(kernel.size() == 2 && strides.size() == 2 && pads.size() == 4,
           "oneDNN pool2d: kernel and strides take 2 values, paddings 4");
  Pool p;
  p.src = {in[0], in[1], in[2], in[3]};
  p.kernel = {kernel[0], kernel[1]};
  p.strides = {strides[0], strides[1]};
  p.pad_l = {pads[0], pads[2]};
  p.pad_r = {pads[1], pads[3]};
  p.algorithm = algorithm;
  int64_t out[2];
  for (int i = 0; i < 2; ++i) {
    PD_CHECK(kernel[i] > 0 && strides[i] > 0 && pads[2 * i] >= 0 &&
                 pads[2 * i + 1] >= 0,
             "oneDNN pool2d: kernel and strides must be positive, paddings "
             ">= 0");
    out[i] = (in[2 + i] + pads[2 * i] + pads[2 * i + 1] - kernel[i]) /
                 strides[i] + 1;
    PD_CHECK(out[i] > 0, "oneDNN pool2d: the window does not fit the input");
  }
  p.dst = {in[0], in[1], out[0], out[1]};
  return p;
}

PoolFwd::primitive_desc pool_forward_desc(const Pool& p, memory::data_type dt,
                                          bool training) {
  return PoolFwd::primitive_desc(
      engine(),
      training ? dnnl::prop_kind::forward_training
               : dnnl::prop_kind::forward_inference,
      p.algorithm, nchw(p.src, dt), nchw(p.dst, dt), p.strides, p.kernel,
      p.dilation, p.pad_l, p.pad_r);
}

// Max pooling's forward also returns oneDNN's workspace (where each maximum
// was), as bytes, for the backward pass; without a gradient it is one byte.
std::vector<paddle::Tensor> MaxPool(const paddle::Tensor& x_in,
                                    const std::vector<int>& kernel,
                                    const std::vector<int>& strides,
                                    const std::vector<int>& pads, int threads,
                                    bool training) {
  const paddle::Tensor x = dense(x_in);
  const auto dt = data_type(x, kPool, "x");
  const Pool p = make_pool(x.shape(), kernel, strides, pads,
                           dnnl::algorithm::pooling_max);
  const auto place = x.place();
  paddle::Tensor y = paddle::empty(p.dst, x.dtype(), place);
  paddle::Tensor ws;
  guarded(kPool, [&] {
    auto pd = pool_forward_desc(p, dt, training);
    const auto ws_desc = pd.workspace_desc();
    const int64_t bytes = static_cast<int64_t>(ws_desc.get_size());
    ws = paddle::empty({bytes > 0 ? bytes : 1}, paddle::DataType::UINT8, place);
    Args args{{DNNL_ARG_SRC, wrap(pd.src_desc(), x)},
              {DNNL_ARG_DST, wrap(pd.dst_desc(), y)}};
    if (bytes > 0) args.insert({DNNL_ARG_WORKSPACE, wrap(ws_desc, ws)});
    run(threads, PoolFwd(pd), args);
  });
  return {y, ws};
}

std::vector<paddle::Tensor> MaxPoolGrad(const paddle::Tensor& x,
                                        const paddle::Tensor& ws,
                                        const paddle::Tensor& dy_in,
                                        const std::vector<int>& kernel,
                                        const std::vector<int>& strides,
                                        const std::vector<int>& pads,
                                        int threads, bool training) {
  const paddle::Tensor dy = dense(dy_in);
  const auto dt = data_type(x, kPool, "x");
  const auto ddt = data_type(dy, kPool, "output gradient");
  const Pool p = make_pool(x.shape(), kernel, strides, pads,
                           dnnl::algorithm::pooling_max);
  PD_CHECK(dy.shape() == std::vector<int64_t>(p.dst.begin(), p.dst.end()),
           "oneDNN pool2d: the output gradient has the wrong shape");
  paddle::Tensor dx = paddle::empty(x.shape(), x.dtype(), x.place());
  guarded(kPool, [&] {
    auto hint = pool_forward_desc(p, dt, true);
    PD_CHECK(training && ws.numel() ==
                             static_cast<int64_t>(hint.workspace_desc().get_size()),
             "oneDNN max_pool2d: no workspace from a training forward pass");
    PoolBwd::primitive_desc pd(engine(), p.algorithm, nchw(p.src, dt),
                               nchw(p.dst, ddt), p.strides, p.kernel,
                               p.dilation, p.pad_l, p.pad_r, hint);
    run(threads, PoolBwd(pd),
        {{DNNL_ARG_DIFF_DST, wrap(pd.diff_dst_desc(), dy)},
         {DNNL_ARG_DIFF_SRC, wrap(pd.diff_src_desc(), dx)},
         {DNNL_ARG_WORKSPACE, wrap(pd.workspace_desc(), ws)}});
  });
  return {dx};
}

dnnl::algorithm avg_algorithm(bool exclusive) {
  return exclusive ? dnnl::algorithm::pooling_avg_exclude_padding
                   : dnnl::algorithm::pooling_avg_include_padding;
}

std::vector<paddle::Tensor> AvgPool(const paddle::Tensor& x_in,
                                    const std::vector<int>& kernel,
                                    const std::vector<int>& strides,
                                    const std::vector<int>& pads,
                                    bool exclusive, int threads) {
  const paddle::Tensor x = dense(x_in);
  const auto dt = data_type(x, kPool, "x");
  const Pool p =
      make_pool(x.shape(), kernel, strides, pads, avg_algorithm(exclusive));
  paddle::Tensor y = paddle::empty(p.dst, x.dtype(), x.place());
  guarded(kPool, [&] {
    auto pd = pool_forward_desc(p, dt, true);
    run(threads, PoolFwd(pd),
        {{DNNL_ARG_SRC, wrap(pd.src_desc(), x)},
         {DNNL_ARG_DST, wrap(pd.dst_desc(), y)}});
  });
  return {y};
}

std::vector<paddle::Tensor> AvgPoolGrad(const paddle::Tensor& x,
                                        const paddle::Tensor& dy_in,
                                        const std::vector<int>& kernel,
                                        const std::vector<int>& strides,
                                        const std::vector<int>& pads,
                                        bool exclusive, int threads) {
  const paddle::Tensor dy = dense(dy_in);
  const auto dt = data_type(x, kPool, "x");
  const auto ddt = data_type(dy, kPool, "output gradient");
  const Pool p =
      make_pool(x.shape(), kernel, strides, pads, avg_algorithm(exclusive));
  PD_CHECK(dy.shape() == std::vector<int64_t>(p.dst.begin(), p.dst.end()),
           "oneDNN pool2d: the output gradient has the wrong shape");
  paddle::Tensor dx = paddle::empty(x.shape(), x.dtype(), x.place());
  guarded(kPool, [&] {
    auto hint = pool_forward_desc(p, dt, true);
    PoolBwd::primitive_desc pd(engine(), p.algorithm, nchw(p.src, dt),
                               nchw(p.dst, ddt), p.strides, p.kernel,
                               p.dilation, p.pad_l, p.pad_r, hint);
    run(threads, PoolBwd(pd),
        {{DNNL_ARG_DIFF_DST, wrap(pd.diff_dst_desc(), dy)},
         {DNNL_ARG_DIFF_SRC, wrap(pd.diff_src_desc(), dx)}});
  });
  return {dx};
}

// -------------------------------------------------------------------- ReLU

using EltFwd = dnnl::eltwise_forward;
using EltBwd = dnnl::eltwise_backward;
const char kRelu[] = "relu";
constexpr auto kReluAlg = dnnl::algorithm::eltwise_relu_use_dst_for_bwd;

memory::desc flat(const paddle::Tensor& t, memory::data_type dt) {
  PD_CHECK(t.numel() > 0, "oneDNN relu: empty tensor");
  return memory::desc({t.numel()}, dt, Tag::a);
}

std::vector<paddle::Tensor> Relu(const paddle::Tensor& x_in, int threads) {
  const paddle::Tensor x = dense(x_in);
  const auto dt = data_type(x, kRelu, "x");
  paddle::Tensor y = paddle::empty(x.shape(), x.dtype(), x.place());
  guarded(kRelu, [&] {
    EltFwd::primitive_desc pd(engine(), dnnl::prop_kind::forward_training,
                              kReluAlg, flat(x, dt), flat(x, dt), 0.f, 0.f);
    run(threads, EltFwd(pd),
        {{DNNL_ARG_SRC, wrap(pd.src_desc(), x)},
         {DNNL_ARG_DST, wrap(pd.dst_desc(), y)}});
  });
  return {y};
}

// dx = dy where y > 0, else 0 (Paddle's relu_grad also reads the output).
std::vector<paddle::Tensor> ReluGrad(const paddle::Tensor& y_in,
                                     const paddle::Tensor& dy_in, int threads) {
  const paddle::Tensor y = dense(y_in), dy = dense(dy_in);
  const auto dt = data_type(y, kRelu, "y");
  const auto ddt = data_type(dy, kRelu, "output gradient");
  PD_CHECK(dy.shape() == y.shape(),
           "oneDNN relu: the output gradient has the wrong shape");
  paddle::Tensor dx = paddle::empty(dy.shape(), dy.dtype(), dy.place());
  guarded(kRelu, [&] {
    EltFwd::primitive_desc hint(engine(), dnnl::prop_kind::forward_training,
                                kReluAlg, flat(y, dt), flat(y, dt), 0.f, 0.f);
    EltBwd::primitive_desc pd(engine(), kReluAlg, flat(dy, ddt), flat(dy, ddt),
                              flat(y, dt), 0.f, 0.f, hint);
    run(threads, EltBwd(pd),
        {{DNNL_ARG_DST, wrap(flat(y, dt), y)},
         {DNNL_ARG_DIFF_DST, wrap(pd.diff_dst_desc(), dy)},
         {DNNL_ARG_DIFF_SRC, wrap(pd.diff_src_desc(), dx)}});
  });
  return {dx};
}

// ------------------------------------------------------ residual add + ReLU
//
// out = relu(x + y): a residual block's sum and its ReLU in one pass (a
// binary add with the ReLU as a post-op), in float32 or bfloat16; Paddle's
// CPU has no bfloat16 add, and its float32 add and ReLU run one thread each.
// The backward is ReLU's, read from the output; both inputs get that gradient.

const char kAddRelu[] = "add_relu";

std::vector<paddle::Tensor> AddRelu(const paddle::Tensor& x_in,
                                    const paddle::Tensor& y_in, int threads) {
  const paddle::Tensor x = dense(x_in), y = dense(y_in);
  const auto dt = data_type(x, kAddRelu, "x");
  PD_CHECK(data_type(y, kAddRelu, "y") == dt && y.shape() == x.shape(),
           "oneDNN add_relu: x and y must have the same shape and type");
  paddle::Tensor out = paddle::empty(x.shape(), x.dtype(), x.place());
  guarded(kAddRelu, [&] {
    dnnl::post_ops ops;
    ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    const auto d = flat(x, dt);
    dnnl::binary::primitive_desc pd(engine(), dnnl::algorithm::binary_add, d,
                                    d, d, attr);
    run(threads, dnnl::binary(pd),
        {{DNNL_ARG_SRC_0, wrap(d, x)},
         {DNNL_ARG_SRC_1, wrap(d, y)},
         {DNNL_ARG_DST, wrap(d, out)}});
  });
  return {out};
}

std::vector<paddle::Tensor> AddReluGrad(const paddle::Tensor& out,
                                        const paddle::Tensor& dout,
                                        int threads) {
  const auto dx = ReluGrad(out, dout, threads)[0];
  paddle::Tensor dy = paddle::empty(dx.shape(), dx.dtype(), dx.place());
  guarded(kAddRelu, [&] {
    const auto d = flat(dx, data_type(dx, kAddRelu, "gradient"));
    run(threads, dnnl::reorder(wrap(d, dx), wrap(d, dy)),
        {{DNNL_ARG_FROM, wrap(d, dx)}, {DNNL_ARG_TO, wrap(d, dy)}});
  });
  return {dx, dy};
}

// ---------------------------------------------------- shapes and dtypes
// Used by Paddle's static graphs only; routed layers never reach the
// operators outside dynamic mode, so these just describe the outputs.

using Shape = std::vector<int64_t>;
using Shapes = std::vector<Shape>;
using DType = paddle::DataType;

Shapes BnTrainShape(const Shape& x, const Shape& s, const Shape& b,
                    const Shape& m, const Shape& v, float, float, int) {
  return {x, m, v};
}
std::vector<DType> BnTrainDtype(const DType& x, const DType&, const DType&,
                                const DType& m, const DType& v) {
  return {x, m, v};
}
Shapes BnReluTrainShape(const Shape& x, const Shape& s, const Shape& b,
                        const Shape& m, const Shape& v, float, float, int) {
  return {x, m, v, {-1}};
}
std::vector<DType> BnReluTrainDtype(const DType& x, const DType&, const DType&,
                                    const DType& m, const DType& v) {
  return {x, m, v, DType::UINT8};
}
Shapes BnInferShape(const Shape& x, const Shape&, const Shape&, const Shape&,
                    const Shape&, float, int) {
  return {x};
}
std::vector<DType> BnInferDtype(const DType& x, const DType&, const DType&,
                                const DType&, const DType&) {
  return {x};
}

Shape pooled(const Shape& x, const std::vector<int>& k,
             const std::vector<int>& s, const std::vector<int>& p) {
  auto size = [&](int64_t in, int i) -> int64_t {
    return in < 0 ? -1 : (in + p[2 * i] + p[2 * i + 1] - k[i]) / s[i] + 1;
  };
  return {x[0], x[1], size(x[2], 0), size(x[3], 1)};
}
Shapes MaxPoolShape(const Shape& x, const std::vector<int>& k,
                    const std::vector<int>& s, const std::vector<int>& p, int,
                    bool) {
  return {pooled(x, k, s, p), {-1}};
}
std::vector<DType> MaxPoolDtype(const DType& x) { return {x, DType::UINT8}; }
Shapes AvgPoolShape(const Shape& x, const std::vector<int>& k,
                    const std::vector<int>& s, const std::vector<int>& p, bool,
                    int) {
  return {pooled(x, k, s, p)};
}
std::vector<DType> SameDtype(const DType& x) { return {x}; }
std::vector<DType> PairDtype(const DType& x, const DType&) { return {x}; }
Shapes PairShape(const Shape& x, const Shape&, int) { return {x}; }
Shapes SameShape(const Shape& x, int) { return {x}; }

}  // namespace

PD_BUILD_OP(pcnn_batch_norm_train)
    .Inputs({"X", "Scale", "Shift", "Mean", "Variance"})
    .Outputs({"Y", "BatchMean", "BatchVariance"})
    .Attrs({"epsilon: float", "momentum: float", "threads: int"})
    .SetKernelFn(PD_KERNEL(BatchNormTrain))
    .SetInferShapeFn(PD_INFER_SHAPE(BnTrainShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(BnTrainDtype));

PD_BUILD_GRAD_OP(pcnn_batch_norm_train)
    .Inputs({"X", "Scale", "BatchMean", "BatchVariance", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Scale"), paddle::Grad("Shift")})
    .Attrs({"epsilon: float", "momentum: float", "threads: int"})
    .SetKernelFn(PD_KERNEL(BatchNormTrainGrad));

PD_BUILD_OP(pcnn_batch_norm_infer)
    .Inputs({"X", "Scale", "Shift", "Mean", "Variance"})
    .Outputs({"Y"})
    .Attrs({"epsilon: float", "threads: int"})
    .SetKernelFn(PD_KERNEL(BatchNormInfer))
    .SetInferShapeFn(PD_INFER_SHAPE(BnInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(BnInferDtype));

PD_BUILD_GRAD_OP(pcnn_batch_norm_infer)
    .Inputs({"X", "Scale", "Mean", "Variance", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Scale"), paddle::Grad("Shift")})
    .Attrs({"epsilon: float", "threads: int"})
    .SetKernelFn(PD_KERNEL(BatchNormInferGrad));

#define PCNN_POOL_ATTRS \
  "kernel: std::vector<int>", "strides: std::vector<int>", \
      "paddings: std::vector<int>"

PD_BUILD_OP(pcnn_max_pool2d)
    .Inputs({"X"})
    .Outputs({"Y", "Workspace"})
    .Attrs({PCNN_POOL_ATTRS, "threads: int", "training: bool"})
    .SetKernelFn(PD_KERNEL(MaxPool))
    .SetInferShapeFn(PD_INFER_SHAPE(MaxPoolShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(MaxPoolDtype));

PD_BUILD_GRAD_OP(pcnn_max_pool2d)
    .Inputs({"X", "Workspace", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X")})
    .Attrs({PCNN_POOL_ATTRS, "threads: int", "training: bool"})
    .SetKernelFn(PD_KERNEL(MaxPoolGrad));

PD_BUILD_OP(pcnn_avg_pool2d)
    .Inputs({"X"})
    .Outputs({"Y"})
    .Attrs({PCNN_POOL_ATTRS, "exclusive: bool", "threads: int"})
    .SetKernelFn(PD_KERNEL(AvgPool))
    .SetInferShapeFn(PD_INFER_SHAPE(AvgPoolShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SameDtype));

PD_BUILD_GRAD_OP(pcnn_avg_pool2d)
    .Inputs({"X", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X")})
    .Attrs({PCNN_POOL_ATTRS, "exclusive: bool", "threads: int"})
    .SetKernelFn(PD_KERNEL(AvgPoolGrad));

PD_BUILD_OP(pcnn_relu)
    .Inputs({"X"})
    .Outputs({"Y"})
    .Attrs({"threads: int"})
    .SetKernelFn(PD_KERNEL(Relu))
    .SetInferShapeFn(PD_INFER_SHAPE(SameShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SameDtype));

PD_BUILD_GRAD_OP(pcnn_relu)
    .Inputs({"Y", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"threads: int"})
    .SetKernelFn(PD_KERNEL(ReluGrad));

PD_BUILD_OP(pcnn_add_relu)
    .Inputs({"X", "Y"})
    .Outputs({"Out"})
    .Attrs({"threads: int"})
    .SetKernelFn(PD_KERNEL(AddRelu))
    .SetInferShapeFn(PD_INFER_SHAPE(PairShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(PairDtype));

PD_BUILD_GRAD_OP(pcnn_add_relu)
    .Inputs({"Out", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Y")})
    .Attrs({"threads: int"})
    .SetKernelFn(PD_KERNEL(AddReluGrad));

PD_BUILD_OP(pcnn_batch_norm_relu_train)
    .Inputs({"X", "Scale", "Shift", "Mean", "Variance"})
    .Outputs({"Y", "BatchMean", "BatchVariance", "Workspace"})
    .Attrs({"epsilon: float", "momentum: float", "threads: int"})
    .SetKernelFn(PD_KERNEL(BatchNormReluTrain))
    .SetInferShapeFn(PD_INFER_SHAPE(BnReluTrainShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(BnReluTrainDtype));

PD_BUILD_GRAD_OP(pcnn_batch_norm_relu_train)
    .Inputs({"X", "Scale", "BatchMean", "BatchVariance", "Workspace",
             paddle::Grad("Y")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Scale"), paddle::Grad("Shift")})
    .Attrs({"epsilon: float", "momentum: float", "threads: int"})
    .SetKernelFn(PD_KERNEL(BatchNormReluTrainGrad));
