//! LeNet-5's CPU kernels on plain slices: no tensors, no autodiff. The
//! engine (`src/engine/tape.rs`) puts them on its tape.
//!
//! | layer                 | forward                                 | backward                                                  |
//! |-----------------------|-----------------------------------------|-----------------------------------------------------------|
//! | c1-s2-c3-s4, per batch| `chain::chain_forward`                  | `chain::chain_backward`                                   |
//! | c1, c3 conv (a block) | `conv::conv_forward` (s2/s4 fused in)   | weight: `conv::conv_weight_grad`; input (c3 only; c1's input is data): `conv::conv_input_grad_from_margins` |
//! | s2, s4 pool + act     | `pool::pool_forward`                    | `pool::pool_act_backward` (also c1/c3's bias gradient)    |
//! | c5, f6, output        | `dense::dense_forward`                  | `dense::dense_backward`                                   |
//! | activations           | `activation::Act::forward`, `apply`     | `activation::Act::backward`, `backward_from_output`       |
//!
//! Files by concern, as in gemm-common: `simd/` (the vector traits, one
//! file per instruction set), `pack.rs` (NCHW images to and from blocks
//! of eight images in lanes), `shapes.rs` (dimensions, the pooling kind,
//! row layouts), `grads.rs` (gradients and their deterministic sums), then
//! one file per kind of layer, and `chain.rs`, which drives c1-s2-c3-s4
//! block by block.
//!
//! Determinism: a batch is cut into blocks of eight images (`pack::BLOCK`),
//! whatever the CPU; each block's gradients are summed on their own and
//! the blocks added in order (`grads.rs`), so results are the same bits for
//! any thread count, and for AVX2 and AVX-512 (`simd/mod.rs` says why).

pub mod activation;
pub mod chain;
pub mod conv;
pub mod dense;
pub mod grads;
pub mod pack;
pub mod pool;
pub mod shapes;
pub mod simd;

#[cfg(test)]
mod tests;
