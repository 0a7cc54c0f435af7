//! CPU kernels under the layers: fused forward and backward passes for training
//! (`fused`), im2col convolution (`conv`) and bf16 weight matrices for batch-1 steps (`bf16`).

pub mod bf16;
pub mod conv;
pub mod fused;
