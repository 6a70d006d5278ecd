// Convolution and linear layers that compute in bfloat16 and keep float32
// tensors on both sides, as Paddle custom operators (issue #24).
//
// Why: Paddle's CPU has no bf16 kernels for conv2d, matmul or add, so a bf16
// training step cannot carry bf16 tensors through a model. These operators
// take Paddle's float32 activations and master weights, convert them to bf16
// inside oneDNN (a reorder into the primitive's blocked layout, which the
// float32 path needs as well), run the bf16 primitive, and write float32
// outputs and gradients (oneDNN's bf16 convolution and matmul accumulate in
// float32 and may write float32 results). Everything between these layers
// (batch norm, pooling, ReLU, residual adds, the loss) stays float32.
//
// Activations in bf16 (issue 38, paddle_cnn.accel.bf16's "bf16 activations"):
// the convolution also takes a bfloat16 input, and then its output and both
// activation gradients are bfloat16 too (its output follows its input's type;
// the weights, the bias and their gradients stay float32), and the linear
// layer takes a bfloat16 input (its output stays float32, for the loss). So a
// chain of routed layers (conv -> batch norm -> ReLU -> pooling, the residual
// add) can pass bf16 tensors from one to the next.
//
// Same rules as conv_onednn.cc: oneDNN v3.0 API only, Paddle's libdnnl.so.3,
// NCHW, groups 1. Buffers come from oneDNN per call; primitives from
// oneDNN's primitive cache.

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
using DT = memory::data_type;
using Args = std::unordered_map<int, memory>;
using pcnn::dense;
using pcnn::engine;

void check_f32(const paddle::Tensor& t, const char* op, const char* name) {
  PD_CHECK(t.is_cpu() && t.dtype() == paddle::DataType::FLOAT32, "oneDNN ", op,
           ": ", name, " must be a float32 CPU tensor");
}

// An activation: float32 or bfloat16.
DT act_type(const paddle::Tensor& t, const char* op, const char* name) {
  PD_CHECK(t.is_cpu(), "oneDNN ", op, ": ", name, " must be a CPU tensor");
  if (t.dtype() == paddle::DataType::FLOAT32) return DT::f32;
  PD_CHECK(t.dtype() == paddle::DataType::BFLOAT16, "oneDNN ", op, ": ", name,
           " must be float32 or bfloat16");
  return DT::bf16;
}

float* fptr(const paddle::Tensor& t) {
  return const_cast<float*>(t.data<float>());
}

void* vptr(const paddle::Tensor& t) { return const_cast<void*>(t.data()); }

// A user tensor as the primitive wants it: the tensor's own memory when the
// layouts agree, else a oneDNN-allocated copy (this is where f32 -> bf16 happens).
memory input(dnnl::stream& s, const memory::desc& user, void* data,
             const memory::desc& wanted) {
  memory m(user, engine(), data);
  if (user == wanted) return m;
  memory staged(wanted, engine());
  dnnl::reorder(m, staged).execute(s, m, staged);
  return staged;
}

// Where a primitive writes: the tensor itself when the layouts agree.
memory output(const memory::desc& produced, const memory::desc& user,
              void* data) {
  if (produced == user) return memory(user, engine(), data);
  return memory(produced, engine());
}

void finish(dnnl::stream& s, memory produced, const memory::desc& user,
            void* data) {
  if (produced.get_desc() == user) return;
  memory m(user, engine(), data);
  dnnl::reorder(produced, m).execute(s, produced, m);
}

std::string failure(const char* op, const dnnl::error& e) {
  std::ostringstream s;
  s << "oneDNN " << op << " failed: " << e.what() << " (status " << e.status
    << ")";
  return s.str();
}

template <typename Body>
void guarded(const char* op, int threads, Body body) {
  pcnn::Call call(threads);
  try {
    body(pcnn::stream());
    pcnn::stream().wait();
  } catch (const dnnl::error& e) {
    PD_THROW(failure(op, e));
  }
}

// ------------------------------------------------------------ convolution

const char kConv[] = "bf16 conv2d";

struct Conv {
  memory::dims src, weights, dst, strides, dilates, pad_l, pad_r;
  bool bias;
  DT act;  // the activations' type: x, the output and both their gradients
  memory::desc user_src() const { return {src, act, Tag::nchw}; }
  memory::desc user_weights() const { return {weights, DT::f32, Tag::oihw}; }
  memory::desc user_dst() const { return {dst, act, Tag::nchw}; }
  memory::desc bias_desc() const { return {{dst[1]}, DT::f32, Tag::x}; }
};

Conv make_conv(const paddle::Tensor& x, const paddle::Tensor& w, bool bias,
               const std::vector<int>& strides,
               const std::vector<int>& paddings,
               const std::vector<int>& dilations) {
  const DT act = act_type(x, kConv, "x");
  check_f32(w, kConv, "weight");
  const auto xs = x.shape(), ws = w.shape();
  PD_CHECK(xs.size() == 4 && ws.size() == 4, "oneDNN bf16 conv2d: x and weight "
           "must be 4-D");
  PD_CHECK(ws[1] == xs[1], "oneDNN bf16 conv2d: weight expects ", ws[1],
           " input channels, x has ", xs[1], " (groups must be 1)");
  PD_CHECK(strides.size() == 2 && dilations.size() == 2 && paddings.size() == 4,
           "oneDNN bf16 conv2d: strides and dilations take 2 values, paddings 4");
  Conv c;
  c.src = {xs[0], xs[1], xs[2], xs[3]};
  c.weights = {ws[0], ws[1], ws[2], ws[3]};
  int64_t out[2];
  for (int i = 0; i < 2; ++i) {
    PD_CHECK(strides[i] > 0 && dilations[i] > 0 && paddings[2 * i] >= 0 &&
                 paddings[2 * i + 1] >= 0,
             "oneDNN bf16 conv2d: bad strides, dilations or paddings");
    const int64_t extent = (ws[2 + i] - 1) * dilations[i] + 1;
    out[i] = (xs[2 + i] + paddings[2 * i] + paddings[2 * i + 1] - extent) /
                 strides[i] + 1;
    PD_CHECK(out[i] > 0, "oneDNN bf16 conv2d: the kernel does not fit");
  }
  c.dst = {xs[0], ws[0], out[0], out[1]};
  c.strides = {strides[0], strides[1]};
  c.dilates = {dilations[0] - 1, dilations[1] - 1};
  c.pad_l = {paddings[0], paddings[2]};
  c.pad_r = {paddings[1], paddings[3]};
  c.bias = bias;
  c.act = act;
  return c;
}

dnnl::convolution_forward::primitive_desc conv_forward_desc(const Conv& c) {
  const memory::desc src(c.src, DT::bf16, Tag::any),
      wei(c.weights, DT::bf16, Tag::any), dst(c.dst, c.act, Tag::any);
  using Pd = dnnl::convolution_forward::primitive_desc;
  const auto prop = dnnl::prop_kind::forward_training;
  const auto alg = dnnl::algorithm::convolution_direct;
  if (c.bias) {
    return Pd(engine(), prop, alg, src, wei, c.bias_desc(), dst, c.strides,
              c.dilates, c.pad_l, c.pad_r);
  }
  return Pd(engine(), prop, alg, src, wei, dst, c.strides, c.dilates, c.pad_l,
            c.pad_r);
}

std::vector<paddle::Tensor> conv_forward(const paddle::Tensor& x_in,
                                         const paddle::Tensor& w_in,
                                         const paddle::Tensor* b_in,
                                         const std::vector<int>& strides,
                                         const std::vector<int>& paddings,
                                         const std::vector<int>& dilations,
                                         int threads) {
  const paddle::Tensor x = dense(x_in), w = dense(w_in);
  const Conv c = make_conv(x, w, b_in != nullptr, strides, paddings, dilations);
  paddle::Tensor b;
  if (b_in != nullptr) {
    b = dense(*b_in);
    check_f32(b, kConv, "bias");
    PD_CHECK(b.numel() == c.dst[1], "oneDNN bf16 conv2d: wrong bias size");
  }
  paddle::Tensor out = paddle::empty(c.dst, x.dtype(), x.place());
  guarded(kConv, threads, [&](dnnl::stream& s) {
    auto pd = conv_forward_desc(c);
    Args args{{DNNL_ARG_SRC, input(s, c.user_src(), vptr(x), pd.src_desc())},
              {DNNL_ARG_WEIGHTS,
               input(s, c.user_weights(), fptr(w), pd.weights_desc())}};
    if (c.bias) args.insert({DNNL_ARG_BIAS, memory(c.bias_desc(), engine(), fptr(b))});
    memory dst = output(pd.dst_desc(), c.user_dst(), vptr(out));
    args.insert({DNNL_ARG_DST, dst});
    dnnl::convolution_forward(pd).execute(s, args);
    finish(s, dst, c.user_dst(), vptr(out));
  });
  return {out};
}

std::vector<paddle::Tensor> conv_backward(
    const paddle::Tensor& x_in, const paddle::Tensor& w_in,
    const paddle::Tensor& dout_in, bool bias, const std::vector<int>& strides,
    const std::vector<int>& paddings, const std::vector<int>& dilations,
    int threads, bool need_dx) {
  const paddle::Tensor x = dense(x_in), w = dense(w_in), dout = dense(dout_in);
  const Conv c = make_conv(x, w, bias, strides, paddings, dilations);
  PD_CHECK(act_type(dout, kConv, "output gradient") == c.act,
           "oneDNN bf16 conv2d: the output gradient must have x's type");
  PD_CHECK(dout.shape() == std::vector<int64_t>(c.dst.begin(), c.dst.end()),
           "oneDNN bf16 conv2d: the output gradient has the wrong shape");
  const auto place = x.place();
  paddle::Tensor dx = need_dx ? paddle::empty(x.shape(), x.dtype(), place)
                              : paddle::zeros(x.shape(), x.dtype(), place);
  paddle::Tensor dw = paddle::empty(w.shape(), paddle::DataType::FLOAT32, place);
  paddle::Tensor db;
  if (bias) db = paddle::empty({c.dst[1]}, paddle::DataType::FLOAT32, place);
  guarded(kConv, threads, [&](dnnl::stream& s) {
    auto hint = conv_forward_desc(c);
    const auto alg = dnnl::algorithm::convolution_direct;
    const memory::desc src_any(c.src, DT::bf16, Tag::any),
        wei_any(c.weights, DT::bf16, Tag::any),
        dst_any(c.dst, DT::bf16, Tag::any);
    if (need_dx) {
      dnnl::convolution_backward_data::primitive_desc pd(
          engine(), alg, memory::desc(c.src, c.act, Tag::any), wei_any,
          dst_any, c.strides, c.dilates, c.pad_l, c.pad_r, hint);
      memory dsrc = output(pd.diff_src_desc(), c.user_src(), vptr(dx));
      dnnl::convolution_backward_data(pd).execute(
          s, {{DNNL_ARG_DIFF_DST,
               input(s, c.user_dst(), vptr(dout), pd.diff_dst_desc())},
              {DNNL_ARG_WEIGHTS,
               input(s, c.user_weights(), fptr(w), pd.weights_desc())},
              {DNNL_ARG_DIFF_SRC, dsrc}});
      finish(s, dsrc, c.user_src(), vptr(dx));
    }
    using Pd = dnnl::convolution_backward_weights::primitive_desc;
    const memory::desc dwei_any(c.weights, DT::f32, Tag::any);
    auto pd = bias ? Pd(engine(), alg, src_any, dwei_any, c.bias_desc(),
                        dst_any, c.strides, c.dilates, c.pad_l, c.pad_r, hint)
                   : Pd(engine(), alg, src_any, dwei_any, dst_any, c.strides,
                        c.dilates, c.pad_l, c.pad_r, hint);
    memory dwei = output(pd.diff_weights_desc(), c.user_weights(), fptr(dw));
    Args args{{DNNL_ARG_SRC, input(s, c.user_src(), vptr(x), pd.src_desc())},
              {DNNL_ARG_DIFF_DST,
               input(s, c.user_dst(), vptr(dout), pd.diff_dst_desc())},
              {DNNL_ARG_DIFF_WEIGHTS, dwei}};
    if (bias) {
      args.insert({DNNL_ARG_DIFF_BIAS, memory(c.bias_desc(), engine(), fptr(db))});
    }
    dnnl::convolution_backward_weights(pd).execute(s, args);
    finish(s, dwei, c.user_weights(), fptr(dw));
  });
  if (bias) return {dx, dw, db};
  return {dx, dw};
}

std::vector<paddle::Tensor> ConvForward(const paddle::Tensor& x,
                                        const paddle::Tensor& w,
                                        const std::vector<int>& strides,
                                        const std::vector<int>& paddings,
                                        const std::vector<int>& dilations,
                                        int threads, bool need_dx) {
  return conv_forward(x, w, nullptr, strides, paddings, dilations, threads);
}

std::vector<paddle::Tensor> ConvBiasForward(
    const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& b,
    const std::vector<int>& strides, const std::vector<int>& paddings,
    const std::vector<int>& dilations, int threads, bool need_dx) {
  return conv_forward(x, w, &b, strides, paddings, dilations, threads);
}

std::vector<paddle::Tensor> ConvBackward(
    const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& dout,
    const std::vector<int>& strides, const std::vector<int>& paddings,
    const std::vector<int>& dilations, int threads, bool need_dx) {
  return conv_backward(x, w, dout, false, strides, paddings, dilations, threads,
                       need_dx);
}

std::vector<paddle::Tensor> ConvBiasBackward(
    const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& dout,
    const std::vector<int>& strides, const std::vector<int>& paddings,
    const std::vector<int>& dilations, int threads, bool need_dx) {
  return conv_backward(x, w, dout, true, strides, paddings, dilations, threads,
                       need_dx);
}

std::vector<int64_t> conv_shape(const std::vector<int64_t>& x,
                                const std::vector<int64_t>& w,
                                const std::vector<int>& s,
                                const std::vector<int>& p,
                                const std::vector<int>& d) {
  auto size = [&](int64_t in, int64_t k, int i) -> int64_t {
    return in < 0 ? -1 : (in + p[2 * i] + p[2 * i + 1] - (k - 1) * d[i] - 1) / s[i] + 1;
  };
  return {x[0], w[0], size(x[2], w[2], 0), size(x[3], w[3], 1)};
}

std::vector<std::vector<int64_t>> ConvShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& w,
    const std::vector<int>& s, const std::vector<int>& p,
    const std::vector<int>& d, int, bool) {
  return {conv_shape(x, w, s, p, d)};
}

std::vector<std::vector<int64_t>> ConvBiasShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& w,
    const std::vector<int64_t>&, const std::vector<int>& s,
    const std::vector<int>& p, const std::vector<int>& d, int, bool) {
  return {conv_shape(x, w, s, p, d)};
}

// ----------------------------------------------------------------- linear

const char kLinear[] = "bf16 linear";

// y[n, m] = x[n, k] @ w[k, m] + b[m], Paddle's nn.Linear (weight [in, out]).
std::vector<paddle::Tensor> LinearForward(const paddle::Tensor& x_in,
                                          const paddle::Tensor& w_in,
                                          const paddle::Tensor& b_in,
                                          int threads) {
  const paddle::Tensor x = dense(x_in), w = dense(w_in), b = dense(b_in);
  const DT act = act_type(x, kLinear, "x");
  check_f32(w, kLinear, "weight");
  check_f32(b, kLinear, "bias");
  PD_CHECK(x.shape().size() == 2 && w.shape().size() == 2 &&
               x.shape()[1] == w.shape()[0] && b.numel() == w.shape()[1],
           "oneDNN bf16 linear: expects x [N, K], weight [K, M], bias [M]");
  const int64_t n = x.shape()[0], k = x.shape()[1], m = w.shape()[1];
  paddle::Tensor y = paddle::empty({n, m}, paddle::DataType::FLOAT32, x.place());
  guarded(kLinear, threads, [&](dnnl::stream& s) {
    const memory::desc src({n, k}, DT::bf16, Tag::ab), wei({k, m}, DT::bf16, Tag::any),
        bias({1, m}, DT::f32, Tag::ab), dst({n, m}, DT::f32, Tag::ab);
    dnnl::matmul::primitive_desc pd(engine(), src, wei, bias, dst);
    dnnl::matmul(pd).execute(
        s, {{DNNL_ARG_SRC, input(s, {{n, k}, act, Tag::ab}, vptr(x), src)},
            {DNNL_ARG_WEIGHTS,
             input(s, {{k, m}, DT::f32, Tag::ab}, fptr(w), pd.weights_desc())},
            {DNNL_ARG_BIAS, memory(bias, engine(), fptr(b))},
            {DNNL_ARG_DST, memory(dst, engine(), fptr(y))}});
  });
  return {y};
}

// dx = dy @ w^T, dw = x^T @ dy (both in bf16, written as float32), db = sum(dy).
std::vector<paddle::Tensor> LinearBackward(const paddle::Tensor& x_in,
                                           const paddle::Tensor& w_in,
                                           const paddle::Tensor& dy_in,
                                           int threads) {
  const paddle::Tensor x = dense(x_in), w = dense(w_in), dy = dense(dy_in);
  const DT act = act_type(x, kLinear, "x");
  check_f32(dy, kLinear, "output gradient");
  const int64_t n = x.shape()[0], k = x.shape()[1], m = w.shape()[1];
  PD_CHECK(dy.shape() == std::vector<int64_t>({n, m}),
           "oneDNN bf16 linear: the output gradient has the wrong shape");
  const auto place = x.place();
  paddle::Tensor dx = paddle::empty({n, k}, x.dtype(), place);  // x's type
  paddle::Tensor dw = paddle::empty({k, m}, paddle::DataType::FLOAT32, place);
  paddle::Tensor db = paddle::empty({m}, paddle::DataType::FLOAT32, place);
  guarded(kLinear, threads, [&](dnnl::stream& s) {
    const memory::desc dy_bf({n, m}, DT::bf16, Tag::ab);
    memory dy16 = input(s, {{n, m}, DT::f32, Tag::ab}, fptr(dy), dy_bf);
    {  // dx[n, k] = dy[n, m] @ w^T[m, k]; w^T is w's memory read with strides (1, m)
      const memory::desc wt({m, k}, DT::bf16, Tag::any);
      dnnl::matmul::primitive_desc pd(engine(), dy_bf, wt,
                                      memory::desc({n, k}, act, Tag::ab));
      dnnl::matmul(pd).execute(
          s, {{DNNL_ARG_SRC, dy16},
              {DNNL_ARG_WEIGHTS, input(s, {{m, k}, DT::f32, Tag::ba}, fptr(w),
                                       pd.weights_desc())},
              {DNNL_ARG_DST, memory(pd.dst_desc(), engine(), vptr(dx))}});
    }
    {  // dw[k, m] = x^T[k, n] @ dy[n, m]
      const memory::desc xt({k, n}, DT::bf16, Tag::ab);
      dnnl::matmul::primitive_desc pd(engine(), xt, memory::desc({n, m}, DT::bf16, Tag::any),
                                      memory::desc({k, m}, DT::f32, Tag::ab));
      dnnl::matmul(pd).execute(
          s, {{DNNL_ARG_SRC, input(s, {{k, n}, act, Tag::ba}, vptr(x), xt)},
              {DNNL_ARG_WEIGHTS, input(s, dy_bf, dy16.get_data_handle(), pd.weights_desc())},
              {DNNL_ARG_DST, memory(pd.dst_desc(), engine(), fptr(dw))}});
    }
  });
  // The bias gradient in float32 from the float32 output gradient.
  const float* g = dy.data<float>();
  float* out = fptr(db);
  for (int64_t j = 0; j < m; ++j) out[j] = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < m; ++j) out[j] += g[i * m + j];
  }
  return {dx, dw, db};
}

std::vector<std::vector<int64_t>> LinearShape(const std::vector<int64_t>& x,
                                              const std::vector<int64_t>& w,
                                              const std::vector<int64_t>&, int) {
  return {{x[0], w[1]}};
}

// The convolution's output has its input's type (float32 or bfloat16).
std::vector<paddle::DataType> SameAsX(const paddle::DataType& x, const paddle::DataType&) {
  return {x};
}
std::vector<paddle::DataType> SameAsXb(const paddle::DataType& x, const paddle::DataType&,
                                       const paddle::DataType&) {
  return {x};
}
std::vector<paddle::DataType> F32b(const paddle::DataType&, const paddle::DataType&,
                                   const paddle::DataType&) {
  return {paddle::DataType::FLOAT32};
}

}  // namespace

#define PCNN_BF16_CONV_ATTRS                                              \
  {                                                                       \
    "strides: std::vector<int>", "paddings: std::vector<int>",            \
        "dilations: std::vector<int>", "threads: int", "need_dx: bool"    \
  }

PD_BUILD_OP(pcnn_conv2d_bf16)
    .Inputs({"X", "W"})
    .Outputs({"Out"})
    .Attrs(PCNN_BF16_CONV_ATTRS)
    .SetKernelFn(PD_KERNEL(ConvForward))
    .SetInferShapeFn(PD_INFER_SHAPE(ConvShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SameAsX));

PD_BUILD_GRAD_OP(pcnn_conv2d_bf16)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W")})
    .Attrs(PCNN_BF16_CONV_ATTRS)
    .SetKernelFn(PD_KERNEL(ConvBackward));

PD_BUILD_OP(pcnn_conv2d_bias_bf16)
    .Inputs({"X", "W", "Bias"})
    .Outputs({"Out"})
    .Attrs(PCNN_BF16_CONV_ATTRS)
    .SetKernelFn(PD_KERNEL(ConvBiasForward))
    .SetInferShapeFn(PD_INFER_SHAPE(ConvBiasShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SameAsXb));

PD_BUILD_GRAD_OP(pcnn_conv2d_bias_bf16)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W"), paddle::Grad("Bias")})
    .Attrs(PCNN_BF16_CONV_ATTRS)
    .SetKernelFn(PD_KERNEL(ConvBiasBackward));

PD_BUILD_OP(pcnn_linear_bf16)
    .Inputs({"X", "W", "Bias"})
    .Outputs({"Out"})
    .Attrs({"threads: int"})
    .SetKernelFn(PD_KERNEL(LinearForward))
    .SetInferShapeFn(PD_INFER_SHAPE(LinearShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(F32b));

PD_BUILD_GRAD_OP(pcnn_linear_bf16)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W"), paddle::Grad("Bias")})
    .Attrs({"threads: int"})
    .SetKernelFn(PD_KERNEL(LinearBackward));
