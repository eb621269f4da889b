//! Gradient checks of the layers: the dfdx-composed reference ops against
//! central finite differences; the CPU kernels on the tape against finite
//! differences and against the reference; whole models and training steps
//! of both against each other.

use dfdx::prelude::*;
use runner::config::{Activation, ModelConfig, Pooling, RunConfig};
use runner::engine::composed::{activate, conv2d, linear, pool2d, view, ComposedOps, Maps};
use runner::engine::model::{Act4, ConvLayer, LayerOps, LeNet5, Param, PARAMS};
use runner::engine::tape::TapeOps;
use runner::kernels::activation::Act;
use runner::kernels::shapes::{ConvDims, Pool};

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

/// Images [B, C, H, W] as the composed ops' batch-last maps [C*H*W, B] (a view).
fn batch_last<T: Tape<f32, Cpu>>(x: Act4<Cpu, T>) -> Maps<Cpu, T> {
    let (n, c, h, w) = *x.shape();
    view(x, &(n, c * h * w)).permute::<_, Axes2<1, 0>>()
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

impl ConvCase {
    fn dims(&self) -> ConvDims {
        let (_, c, h, w) = self.shape;
        let [o, _, k, _] = self.w_shape;
        ConvDims {
            c,
            h,
            w,
            o,
            k,
            pad: self.pad,
        }
    }
}

/// The reference convolution `act(conv2d(x, w) + b)`: the value of
/// `sum(out * r)` and the gradients of x, w and b.
fn conv_value(c: &ConvCase, act: Act, v: &[Vec<f32>], r: &[f32]) -> (f64, Vec<Vec<f32>>) {
    let dev = Cpu::default();
    let x: Act4<Cpu, NoneTape> = dev.tensor_from_vec(v[0].clone(), c.shape);
    let w: Param<Cpu> = dev.tensor_from_vec(v[1].clone(), (v[1].len(),));
    let b: Param<Cpu> = dev.tensor_from_vec(v[2].clone(), (v[2].len(),));
    let d = c.dims();
    let out = activate(conv2d(batch_last(x.clone()), &w, &b, &d), act);
    let value = dot64(&out.as_vec(), r);
    let traced = batch_last(x.clone().leaky_traced());
    let out = activate(conv2d(traced, &w, &b, &d), act);
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

#[test]
fn composed_conv_gradients_match_finite_differences() {
    for c in &CONV_CASES {
        for act in [Act::Identity, Act::Sigmoid, Act::Tanh] {
            let v = conv_inputs(c);
            let r = pseudo_random(out_len(c), 4, 1.0);
            let (_, analytic) = conv_value(c, act, &v, &r);
            check_against_fd(
                &format!("composed conv {:?} {act:?}", c.shape),
                &v,
                &analytic,
                &|v| conv_value(c, act, v, &r).0,
            );
        }
    }
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

/// A chain of conv + activation + pool stages: `input` [B, C, H, W] and
/// per stage its weight shape and padding. Values in `v`: x, then weights
/// and bias of each stage.
struct Chain {
    input: (usize, usize, usize, usize),
    stages: &'static [([usize; 4], usize)],
}

/// LeNet's c1-s2-c3-s4, smaller, with a padded 3x3 second stage; 9
/// images: a full block of eight and a partial one.
const SMALL_LENET: Chain = Chain {
    input: (9, 1, 12, 12),
    stages: &[([2, 1, 5, 5], 2), ([3, 2, 3, 3], 1)],
};
/// Odd channel counts (2 in, 5 out), 11 images.
const ODD_CHANNELS: Chain = Chain {
    input: (11, 2, 6, 6),
    stages: &[([5, 2, 3, 3], 1)],
};

impl Chain {
    fn inputs(&self) -> Vec<Vec<f32>> {
        let (n, c, h, w) = self.input;
        let mut v = vec![pseudo_random(n * c * h * w, 21, 1.0)];
        for (i, (shape, _)) in self.stages.iter().enumerate() {
            let seed = 22 + 2 * i as u64;
            v.push(pseudo_random(shape.iter().product(), seed, 0.5));
            v.push(pseudo_random(shape[0], seed + 1, 0.5));
        }
        v
    }

    fn output_len(&self) -> usize {
        let (n, _, mut h, mut w) = self.input;
        let mut c = 0;
        for ([o, _, k, _], pad) in self.stages {
            (c, h, w) = (*o, (h + 2 * pad + 1 - k) / 2, (w + 2 * pad + 1 - k) / 2);
        }
        n * c * h * w
    }

    /// The value of `sum(out * r)` and the gradients of x and every parameter.
    fn value<O: LayerOps<Cpu>>(
        &self,
        ops: &O,
        act: Act,
        pool: Pool,
        v: &[Vec<f32>],
        r: &[f32],
    ) -> (f64, Vec<Vec<f32>>) {
        let dev = Cpu::default();
        let x: Act4<Cpu, NoneTape> = dev.tensor_from_vec(v[0].clone(), self.input);
        let p: Vec<Param<Cpu>> = v[1..]
            .iter()
            .map(|values| dev.tensor_from_vec(values.clone(), (values.len(),)))
            .collect();
        let layers: Vec<ConvLayer<Cpu>> = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, &(shape, pad))| ConvLayer {
                w: &p[2 * i],
                b: &p[2 * i + 1],
                shape,
                pad,
            })
            .collect();
        let out = ops.conv_pool_chain(x.clone(), &layers, act, pool, true);
        let value = dot64(&out.as_vec(), r);
        let out = ops.conv_pool_chain(x.clone().leaky_traced(), &layers, act, pool, true);
        let r_t = dev.tensor_from_vec(r.to_vec(), *out.shape());
        let grads = (out * r_t).sum().backward();
        let mut all = vec![grads.get(&x).as_vec()];
        all.extend(p.iter().map(|t| grads.get(t).as_vec()));
        (value, all)
    }
}

#[test]
fn conv_pool_chains_match_finite_differences_and_each_other() {
    for chain in [SMALL_LENET, ODD_CHANNELS] {
        let v = chain.inputs();
        let r = pseudo_random(chain.output_len(), 26, 1.0);
        for (act, pool) in [
            (Act::Sigmoid, Pool::Avg),
            (Act::Tanh, Pool::Avg),
            (Act::Relu, Pool::Max),
            (Act::Sigmoid, Pool::Max),
        ] {
            let what = format!("chain {:?} {act:?} {pool:?}", chain.stages);
            let (fv, fg) = chain.value(&TapeOps, act, pool, &v, &r);
            let (cv, cg) = chain.value(&ComposedOps, act, pool, &v, &r);
            assert!(
                (fv - cv).abs() < 1e-4 * (1.0 + cv.abs()),
                "{what}: {fv} vs {cv}"
            );
            for (i, (f, c)) in fg.iter().zip(&cg).enumerate() {
                assert_close(&format!("{what} grad {i}"), f, c, 1e-4);
            }
            // Finite differences need smooth functions: no max-pool or relu kinks.
            if pool == Pool::Avg {
                check_against_fd(&format!("tape {what}"), &v, &fg, &|v| {
                    chain.value(&TapeOps, act, pool, v, &r).0
                });
            }
        }
    }
}

/// The reference pooling of batch-last maps [C*H*W, B] (as a convolution
/// leaves them): the value of `sum(out * r)` and the gradient of x.
fn pool_value(
    shape: (usize, usize, usize, usize),
    kind: Pool,
    x: &[f32],
    r: &[f32],
) -> (f64, Vec<f32>) {
    let dev = Cpu::default();
    let (n, c, h, w) = shape;
    let xt: Maps<Cpu, NoneTape> = dev.tensor_from_vec(x.to_vec(), (c * h * w, n));
    let value = dot64(&pool2d(xt.clone(), (c, h, w), kind).as_vec(), r);
    let out = pool2d(xt.clone().leaky_traced(), (c, h, w), kind);
    let r_t = dev.tensor_from_vec(r.to_vec(), *out.shape());
    let grads = (out * r_t).sum().backward();
    (value, grads.get(&xt).as_vec())
}

#[test]
fn composed_pool_gradients_match_finite_differences() {
    let shape = (2, 3, 6, 4);
    // Distinct values, far apart relative to eps, so max pooling has no ties.
    let mut x: Vec<f32> = (0..2 * 3 * 6 * 4)
        .map(|i| (i * 37 % 144) as f32 * 0.05)
        .collect();
    let jitter = pseudo_random(x.len(), 9, 0.01);
    x.iter_mut().zip(jitter).for_each(|(a, b)| *a += b);
    let r = pseudo_random(2 * 3 * 3 * 2, 6, 1.0);
    for kind in [Pool::Avg, Pool::Max] {
        let (_, grad) = pool_value(shape, kind, &x, &r);
        check_against_fd(
            &format!("composed {kind:?} pool"),
            &[x.clone()],
            &[grad],
            &|v| pool_value(shape, kind, &v[0], &r).0,
        );
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
fn model_step<O: LayerOps<Cpu>>(
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
    let grads = loss.backward();
    let read = model.params.iter().map(|p| grads.get(p).as_vec()).collect();
    (logits.as_vec(), read)
}

#[test]
fn whole_model_on_the_tape_and_composed_agree_for_every_variant() {
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
                let (fl, fg) = model_step(&TapeOps, &arch, &x, &labels);
                let (cl, cg) = model_step(&ComposedOps, &arch, &x, &labels);
                assert_close(&format!("{arch:?} logits"), &fl, &cl, 1e-4);
                for (i, (f, c)) in fg.iter().zip(&cg).enumerate() {
                    assert_close(&format!("{arch:?} grad of {}", PARAMS[i].0), f, c, 2e-4);
                }
            }
        }
    }
}

/// Through the engine seam: a few SGD steps of the CPU engine and of the
/// reference (composed ops) end with the same weights and momentum, and
/// the same logits along the way, within float tolerance.
#[test]
fn training_steps_through_the_engine_agree_with_the_reference() {
    let mut config = RunConfig::default();
    config.model.activation = Activation::Relu;
    config.model.pooling = Pooling::Max;
    config.train.momentum = 0.9;
    config.train.weight_decay = 5e-4;
    let backend = runner::engine::resolve(runner::config::DeviceChoice::Cpu).unwrap();
    let mut cpu = runner::engine::open(backend, &config);
    let mut reference = runner::engine::open_reference(&config);
    let n = 11;
    for step in 0..3 {
        let x: Vec<f32> = pseudo_random(n * 784, 30 + step, 0.5)
            .iter()
            .map(|v| v + 0.5)
            .collect();
        let labels: Vec<usize> = (0..n).map(|i| (i * 3 + step as usize) % 10).collect();
        let a = cpu.train_step(x.clone(), &labels, 0.05);
        let b = reference.train_step(x, &labels, 0.05);
        assert_close(&format!("step {step} logits"), &a, &b, 1e-4);
    }
    for (what, a, b) in [
        ("weights", cpu.weights(), reference.weights()),
        ("momentum", cpu.momentum(), reference.momentum()),
    ] {
        for ((name, _, x), (_, _, y)) in a.tensors.iter().zip(&b.tensors) {
            assert_close(&format!("{what} {name}"), x, y, 1e-3);
        }
    }
}

/// The guard that keeps the composed ops free of runtime-compiled CUDA
/// kernels: reshaping a strided tensor (which dfdx copies with a kernel it
/// compiles at run time) fails.
#[test]
#[should_panic(expected = "reshape of a strided tensor")]
fn view_refuses_a_strided_tensor() {
    let dev = Cpu::default();
    let x: Tensor<(usize, usize), f32, Cpu> = dev.tensor_from_vec(vec![0.0; 6], (2, 3));
    let _ = view(x.permute::<_, Axes2<1, 0>>(), &(6usize,));
}

/// The other dfdx ops whose CUDA kernels are compiled at run time (from
/// headers at the build machine's paths) appear nowhere on the engine's
/// device-generic path, and every reshape there goes through `view`.
#[test]
fn the_gpu_path_uses_only_precompiled_dfdx_kernels() {
    let runtime_compiled = ["concat", "stack(", "to_dtype", "contiguous(", "reshape("];
    for file in ["composed.rs", "model.rs", "sgd.rs", "trainer.rs"] {
        let path = format!("{}/src/engine/{file}", env!("CARGO_MANIFEST_DIR"));
        let source = std::fs::read_to_string(&path).unwrap();
        let code: String = source
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for op in runtime_compiled {
            assert!(!code.contains(op), "{path} calls {op}");
        }
        let reshapes = code.matches("reshape_like").count();
        let allowed = if file == "composed.rs" { 1 } else { 0 };
        assert_eq!(reshapes, allowed, "{path}: reshape outside composed::view");
    }
}
