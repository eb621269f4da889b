//! Gradient checks of the conv, pool and linear ops, both implementations
//! (fast CPU kernels and dfdx-composed reference), against central finite
//! differences, and the two implementations against each other.

use dfdx::prelude::*;
use runner::config::{Activation, ModelConfig, Pooling};
use runner::model::kernels::{Act, Pool};
use runner::model::{linear, Act4, ComposedOps, ConvLayer, ConvOps, FastCpuOps, LeNet5, Param};

fn pseudo_random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Checks `analytic` against central differences of `loss` in each of `params`' entries
/// (every entry for small tensors, a spread sample of 40 for large ones).
fn check_against_fd(
    what: &str,
    params: &[Vec<f32>],
    analytic: &[Vec<f32>],
    loss: &dyn Fn(&[Vec<f32>]) -> f64,
) {
    let eps = 1e-2f32;
    for (pi, p) in params.iter().enumerate() {
        let step = (p.len() / 40).max(1);
        for i in (0..p.len()).step_by(step) {
            let mut plus = params.to_vec();
            plus[pi][i] += eps;
            let mut minus = params.to_vec();
            minus[pi][i] -= eps;
            let numeric = (loss(&plus) - loss(&minus)) / (2.0 * eps as f64);
            let got = analytic[pi][i] as f64;
            let tol = 2e-3 + 2e-2 * numeric.abs().max(got.abs());
            assert!(
                (numeric - got).abs() <= tol,
                "{what}: input {pi} entry {i}: analytic {got} vs numeric {numeric}"
            );
        }
    }
}

struct ConvCase {
    shape: (usize, usize, usize, usize),
    w_shape: [usize; 4],
    pad: usize,
}

const CONV_CASES: [ConvCase; 3] = [
    ConvCase {
        shape: (3, 1, 8, 8),
        w_shape: [2, 1, 5, 5],
        pad: 2,
    },
    ConvCase {
        shape: (2, 3, 7, 6),
        w_shape: [4, 3, 3, 3],
        pad: 0,
    },
    // Kernel as large as the input: the c5 case, where the batch is one matrix product.
    ConvCase {
        shape: (9, 2, 5, 5),
        w_shape: [3, 2, 5, 5],
        pad: 0,
    },
];

fn conv_value<O: ConvOps<Cpu>>(
    ops: &O,
    c: &ConvCase,
    act: Act,
    v: &[Vec<f32>],
    r: &[f32],
) -> (f64, Vec<Vec<f32>>) {
    let dev = Cpu::default();
    let x: Act4<Cpu, NoneTape> = dev.tensor_from_vec(v[0].clone(), c.shape);
    let w: Param<Cpu> = dev.tensor_from_vec(v[1].clone(), (v[1].len(),));
    let b: Param<Cpu> = dev.tensor_from_vec(v[2].clone(), (v[2].len(),));
    // Value without a tape, in f64.
    let out = ops
        .conv(x.clone(), &w, &b, c.w_shape, c.pad, act, true)
        .as_vec();
    let value = dot64(&out, r);
    // Gradients with a tape.
    let out = ops.conv(
        x.clone().leaky_traced(),
        &w,
        &b,
        c.w_shape,
        c.pad,
        act,
        true,
    );
    let r_t = dev.tensor_from_vec(r.to_vec(), *out.shape());
    let grads = (out * r_t).sum().backward();
    (
        value,
        vec![
            grads.get(&x).as_vec(),
            grads.get(&w).as_vec(),
            grads.get(&b).as_vec(),
        ],
    )
}

fn conv_inputs(c: &ConvCase) -> Vec<Vec<f32>> {
    let (n, ch, h, w) = c.shape;
    let [o, _, k, _] = c.w_shape;
    vec![
        pseudo_random(n * ch * h * w, 1, 1.0),
        pseudo_random(o * ch * k * k, 2, 0.5),
        pseudo_random(o, 3, 0.5),
    ]
}

fn out_len(c: &ConvCase) -> usize {
    let (n, _, h, w) = c.shape;
    let [o, _, k, _] = c.w_shape;
    n * o * (h + 2 * c.pad + 1 - k) * (w + 2 * c.pad + 1 - k)
}

fn conv_fd<O: ConvOps<Cpu>>(ops: O, name: &str, acts: &[Act]) {
    for c in &CONV_CASES {
        for &act in acts {
            let v = conv_inputs(c);
            let r = pseudo_random(out_len(c), 4, 1.0);
            let (_, analytic) = conv_value(&ops, c, act, &v, &r);
            check_against_fd(
                &format!("{name} conv {:?} {act:?}", c.shape),
                &v,
                &analytic,
                &|v| conv_value(&ops, c, act, v, &r).0,
            );
        }
    }
}

#[test]
fn fast_conv_gradients_match_finite_differences() {
    conv_fd(
        FastCpuOps,
        "fast",
        &[Act::Identity, Act::Sigmoid, Act::Tanh],
    );
}

#[test]
fn composed_conv_gradients_match_finite_differences() {
    conv_fd(
        ComposedOps,
        "composed",
        &[Act::Identity, Act::Sigmoid, Act::Tanh],
    );
}

fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + x.abs().max(y.abs())),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

#[test]
fn fast_conv_matches_composed_conv_values_and_gradients() {
    for c in &CONV_CASES {
        for act in [Act::Identity, Act::Sigmoid, Act::Relu, Act::Tanh] {
            let v = conv_inputs(c);
            let r = pseudo_random(out_len(c), 5, 1.0);
            let (fv, fg) = conv_value(&FastCpuOps, c, act, &v, &r);
            let (cv, cg) = conv_value(&ComposedOps, c, act, &v, &r);
            assert!(
                (fv - cv).abs() < 1e-4 * (1.0 + cv.abs()),
                "{:?} {act:?}: {fv} vs {cv}",
                c.shape
            );
            for (i, (f, g)) in fg.iter().zip(&cg).enumerate() {
                assert_close(&format!("conv {:?} {act:?} grad {i}", c.shape), f, g, 1e-4);
            }
        }
    }
}

/// A chain of two conv + activation + pool stages (LeNet's c1-s2-c3-s4,
/// smaller, with a padded second stage): `v` holds x, then weights and
/// bias of each stage. Returns the value of `sum(out * r)` and the
/// gradients of x and every parameter.
fn chain_value<O: ConvOps<Cpu>>(
    ops: &O,
    act: Act,
    pool: Pool,
    v: &[Vec<f32>],
    r: &[f32],
) -> (f64, Vec<Vec<f32>>) {
    let dev = Cpu::default();
    // 9 images: a full block of eight and a partial one.
    let x: Act4<Cpu, NoneTape> = dev.tensor_from_vec(v[0].clone(), CHAIN_INPUT);
    let p: Vec<Param<Cpu>> = v[1..]
        .iter()
        .map(|values| dev.tensor_from_vec(values.clone(), (values.len(),)))
        .collect();
    let layers = [
        ConvLayer {
            w: &p[0],
            b: &p[1],
            shape: [2, 1, 5, 5],
            pad: 2,
        },
        ConvLayer {
            w: &p[2],
            b: &p[3],
            shape: [3, 2, 3, 3],
            pad: 1,
        },
    ];
    let out = ops.conv_pool_chain(x.clone(), &layers, act, pool, true);
    let value = dot64(&out.as_vec(), r);
    let out = ops.conv_pool_chain(x.clone().leaky_traced(), &layers, act, pool, true);
    let r_t = dev.tensor_from_vec(r.to_vec(), *out.shape());
    let grads = (out * r_t).sum().backward();
    let mut all = vec![grads.get(&x).as_vec()];
    all.extend(p.iter().map(|t| grads.get(t).as_vec()));
    (value, all)
}

const CHAIN_INPUT: (usize, usize, usize, usize) = (9, 1, 12, 12);
/// 3 channels of 3 x 3 per image: 12 -> conv -> 12 -> pool -> 6 -> conv -> 6 -> pool -> 3.
const CHAIN_OUTPUT_LEN: usize = 9 * 3 * 3 * 3;

fn chain_inputs() -> Vec<Vec<f32>> {
    vec![
        pseudo_random(9 * 144, 21, 1.0),
        pseudo_random(2 * 25, 22, 0.5),
        pseudo_random(2, 23, 0.5),
        pseudo_random(3 * 2 * 9, 24, 0.5),
        pseudo_random(3, 25, 0.5),
    ]
}

#[test]
fn conv_pool_chains_match_finite_differences_and_each_other() {
    let v = chain_inputs();
    let r = pseudo_random(CHAIN_OUTPUT_LEN, 26, 1.0);
    for (act, pool) in [
        (Act::Sigmoid, Pool::Avg),
        (Act::Tanh, Pool::Avg),
        (Act::Relu, Pool::Max),
        (Act::Sigmoid, Pool::Max),
    ] {
        let (fv, fg) = chain_value(&FastCpuOps, act, pool, &v, &r);
        let (cv, cg) = chain_value(&ComposedOps, act, pool, &v, &r);
        assert!(
            (fv - cv).abs() < 1e-4 * (1.0 + cv.abs()),
            "{act:?} {pool:?}: {fv} vs {cv}"
        );
        for (i, (f, c)) in fg.iter().zip(&cg).enumerate() {
            assert_close(&format!("chain {act:?} {pool:?} grad {i}"), f, c, 1e-4);
        }
        // Finite differences need smooth functions: no max-pool or relu kinks.
        if pool == Pool::Avg {
            check_against_fd(&format!("fast chain {act:?}"), &v, &fg, &|v| {
                chain_value(&FastCpuOps, act, pool, v, &r).0
            });
        }
    }
}

fn pool_value<O: ConvOps<Cpu>>(
    ops: &O,
    shape: (usize, usize, usize, usize),
    kind: Pool,
    x: &[f32],
    r: &[f32],
) -> (f64, Vec<f32>) {
    let dev = Cpu::default();
    let xt: Act4<Cpu, NoneTape> = dev.tensor_from_vec(x.to_vec(), shape);
    let value = dot64(&ops.pool(xt.clone(), kind).as_vec(), r);
    let out = ops.pool(xt.clone().leaky_traced(), kind);
    let r_t = dev.tensor_from_vec(r.to_vec(), *out.shape());
    let grads = (out * r_t).sum().backward();
    (value, grads.get(&xt).as_vec())
}

#[test]
fn pool_gradients_match_finite_differences_and_each_other() {
    let shape = (2, 3, 6, 4);
    // Distinct values, far apart relative to eps, so max pooling has no ties.
    let mut x: Vec<f32> = (0..2 * 3 * 6 * 4)
        .map(|i| (i * 37 % 144) as f32 * 0.05)
        .collect();
    let jitter = pseudo_random(x.len(), 9, 0.01);
    x.iter_mut().zip(jitter).for_each(|(a, b)| *a += b);
    let r = pseudo_random(2 * 3 * 3 * 2, 6, 1.0);
    for kind in [Pool::Avg, Pool::Max] {
        let (fv, fg) = pool_value(&FastCpuOps, shape, kind, &x, &r);
        let (cv, cg) = pool_value(&ComposedOps, shape, kind, &x, &r);
        assert!((fv - cv).abs() < 1e-5, "{kind:?}: {fv} vs {cv}");
        assert_close(&format!("{kind:?} pool grad"), &fg, &cg, 1e-6);
        for (name, grad) in [("fast", &fg), ("composed", &cg)] {
            check_against_fd(
                &format!("{name} {kind:?} pool"),
                &[x.clone()],
                std::slice::from_ref(grad),
                &|v| pool_value(&FastCpuOps, shape, kind, &v[0], &r).0,
            );
        }
    }
}

#[test]
fn linear_gradients_match_finite_differences() {
    let (n, inp, out) = (5, 7, 3);
    let v = vec![
        pseudo_random(n * inp, 1, 1.0),
        pseudo_random(out * inp, 2, 0.5),
        pseudo_random(out, 3, 0.5),
    ];
    let r = pseudo_random(n * out, 4, 1.0);
    let eval = |v: &[Vec<f32>], traced: bool| -> (f64, Vec<Vec<f32>>) {
        let dev = Cpu::default();
        let x: Tensor<(usize, usize), f32, Cpu> = dev.tensor_from_vec(v[0].clone(), (n, inp));
        let w: Param<Cpu> = dev.tensor_from_vec(v[1].clone(), (out * inp,));
        let b: Param<Cpu> = dev.tensor_from_vec(v[2].clone(), (out,));
        if !traced {
            return (dot64(&linear(x, &w, &b, out, inp).as_vec(), &r), vec![]);
        }
        let y = linear(x.clone().leaky_traced(), &w, &b, out, inp);
        let r_t = dev.tensor_from_vec(r.clone(), (n, out));
        let g = (y * r_t).sum().backward();
        (
            0.0,
            vec![g.get(&x).as_vec(), g.get(&w).as_vec(), g.get(&b).as_vec()],
        )
    };
    let (_, analytic) = eval(&v, true);
    check_against_fd("linear", &v, &analytic, &|v| eval(v, false).0);
}

/// Logits and every parameter gradient of a whole LeNet-5 step.
fn model_step<O: ConvOps<Cpu>>(
    ops: &O,
    arch: &ModelConfig,
    x: &[f32],
    labels: &[usize],
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let dev = Cpu::default();
    let model = LeNet5::init(&dev, arch, 42);
    let n = labels.len();
    let xt = dev.tensor_from_vec(x.to_vec(), (n, 1usize, 28usize, 28usize));
    let logits = model.forward(ops, xt.clone());
    let mut onehot = vec![0.0; n * 10];
    labels
        .iter()
        .enumerate()
        .for_each(|(i, &l)| onehot[i * 10 + l] = 1.0);
    let targets = dev.tensor_from_vec(onehot, (n, 10usize));
    let loss = cross_entropy_with_logits_loss(model.forward(ops, xt.leaky_traced()), targets);
    let mut grads = loss.backward();
    // Read as the SGD step reads them, which must be dfdx's own values.
    let read: Vec<Vec<f32>> = model
        .params
        .iter()
        .map(|p| {
            let mut out = vec![f32::NAN; p.shape().0];
            ops.read_grad(&mut grads, p, &mut out);
            assert_eq!(out, grads.get(p).as_vec(), "read_grad");
            out
        })
        .collect();
    (logits.as_vec(), read)
}

#[test]
fn whole_model_fast_and_composed_agree_for_every_variant() {
    let n = 11; // spans two kernel chunks, the second one partial
    let x: Vec<f32> = pseudo_random(n * 784, 7, 0.5)
        .iter()
        .map(|v| v + 0.5)
        .collect();
    let labels: Vec<usize> = (0..n).map(|i| (i * 7) % 10).collect();
    for activation in [Activation::Sigmoid, Activation::Relu, Activation::Tanh] {
        for pooling in [Pooling::Avg, Pooling::Max] {
            for activate_c5_f6 in [false, true] {
                let arch = ModelConfig {
                    activation,
                    pooling,
                    activate_c5_f6,
                };
                let (fl, fg) = model_step(&FastCpuOps, &arch, &x, &labels);
                let (cl, cg) = model_step(&ComposedOps, &arch, &x, &labels);
                assert_close(&format!("{arch:?} logits"), &fl, &cl, 1e-4);
                for (i, (f, c)) in fg.iter().zip(&cg).enumerate() {
                    assert_close(
                        &format!("{arch:?} grad of {}", runner::model::PARAMS[i].0),
                        f,
                        c,
                        2e-4,
                    );
                }
            }
        }
    }
}
