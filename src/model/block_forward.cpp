#include "block_forward.h"

namespace gum {

BlockBuffers BlockBuffers::in_arena(const Arena& acts, const std::string& prefix, const Arena* f32) {
  const Arena& stats = f32 ? *f32 : acts;
  BlockBuffers b;
  b.ln1 = acts.view(prefix + "ln1");
  b.ln1_rstd = stats.view(prefix + "ln1_rstd");
  b.qkv = acts.view(prefix + "qkv");
  b.att = acts.view(prefix + "att");
  if (stats.contains(prefix + "att_aux")) b.att_aux = stats.view(prefix + "att_aux");
  b.mid = acts.view(prefix + "mid");
  b.ln2 = acts.view(prefix + "ln2");
  b.ln2_rstd = stats.view(prefix + "ln2_rstd");
  b.gate_up = acts.view(prefix + "gate_up");
  b.act = acts.view(prefix + "act");
  b.scratch = acts.view("scratch");
  return b;
}

BlockBuffers BlockBuffers::first_rows(int64_t n) const {
  auto rows = [n](const Tensor& t) { return t.empty() ? t : gum::first_rows(t, n); };
  return {rows(input), rows(ln1),      rows(ln1_rstd), rows(qkv), rows(att),     att_aux,     rows(mid),
          rows(ln2),   rows(ln2_rstd), rows(gate_up),  rows(act), rows(scratch), rows(output)};
}

void block_forward(Backend& be, const BlockTensors& w, const BlockBuffers& a, const Tensor& positions,
                   const Tensor& cos_sin, const AttentionShape& shape, float eps, const AttendFn& attend) {
  be.rmsnorm_forward(a.ln1, a.ln1_rstd, a.input, w.ln1, eps);
  be.linear_forward(a.qkv, a.ln1, w.qkv_weight, optional(w.qkv_bias));
  be.rope_forward(a.qkv, positions, cos_sin, shape);
  attend(a.att, a.qkv);
  be.linear_forward(a.scratch, a.att, w.o_weight, optional(w.o_bias));
  be.add_rmsnorm_forward(a.mid, a.ln2, a.ln2_rstd, a.input, a.scratch, w.ln2, eps);
  be.linear_forward(a.gate_up, a.ln2, w.gate_up_weight, nullptr);
  be.swiglu_forward(a.act, a.gate_up);
  be.linear_forward(a.scratch, a.act, w.down_weight, nullptr);
  be.add(a.output, a.mid, a.scratch);
}

}  // namespace gum
