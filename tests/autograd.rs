//! The tape: gradients through a composite of every layer (finite differences on cpu, and the
//! same backward pass on the kernel devices), parameter gradients by name, inference mode, and the
//! ParamStore's deterministic initialisation.
mod common;

use common::gradcheck::check_gradients_with_kinks;
use common::*;
use dalemeetslangevin::autograd::{ParamStore, Tape, Var};
use dalemeetslangevin::nn::{CondInstanceNormPp, Conv2d, Conv2dCfg, PoolCfg};
use dalemeetslangevin::{Device, Result, Tensor};

/// The block's first layer, whose output is the ELU's input: where it is zero the block is not
/// twice differentiable.
fn normalised<'p>(
    t: &mut Tape<'p>,
    x: &Var<'p>,
    embed: &Var<'p>,
    levels: &Var<'p>,
) -> Result<Var<'p>> {
    t.cond_instance_norm_pp(x, levels, embed)
}

/// A small residual block in the shape of ncsn's: norm, ELU, dilated conv, mean-pool, a 1x1
/// shortcut, chained 5x5 pooling, bilinear upsampling back, a 1x1 convolution fused with a
/// residual sum, a product and an affine map.
fn block<'p>(
    t: &mut Tape<'p>,
    x: &Var<'p>,
    w3: &Var<'p>,
    b3: &Var<'p>,
    w1: &Var<'p>,
    embed: &Var<'p>,
    levels: &Var<'p>,
) -> Result<Var<'p>> {
    let h = normalised(t, x, embed, levels)?;
    let h = t.elu(&h)?;
    let h = t.conv2d(&h, w3, Some(b3), Conv2dCfg::same(3, 2))?;
    let h = t.avg_pool2d(&h, PoolCfg::MEAN_POOL_2X2)?;
    let s = t.conv2d(x, w1, None, Conv2dCfg::same(1, 1))?;
    let s = t.avg_pool2d(&s, PoolCfg::MEAN_POOL_2X2)?;
    let h = t.add(&h, &s)?;
    let p = t.avg_pool2d(&h, PoolCfg::CRP_5X5)?;
    let h = t.axpby(1.0, &h, 0.5, &p)?;
    let size = (x.shape()[2], x.shape()[3]);
    let up = t.upsample_bilinear(&h, size)?;
    // A 1x1 convolution fused with the residual x that follows it (x's gradient gathers here too).
    let up = t.conv2d_add(&up, w1, None, x, Conv2dCfg::same(1, 1))?;
    let m = t.mul(&up, &up)?;
    let y = t.sub(&m, x)?;
    t.affine(&y, 2.0, -1.0)
}

const N: usize = 2;
const C: usize = 3;
const H: usize = 6;
const W: usize = 4;
const CLASSES: usize = 2;

/// Random inputs of the block. The norm divides by the standard deviation of the C = 3 channel
/// means; drawn alike, those means can nearly coincide, and then the block's third derivative
/// (1/std^3) swamps any finite difference. Channel c is shifted by 0.5 (c - 1), which keeps that
/// standard deviation near 0.5 (the means' own spread is 0.577/sqrt(H W) = 0.12).
fn block_inputs(rng: &mut rand::rngs::StdRng) -> Vec<(Vec<f32>, Vec<usize>)> {
    let mut x = random_vec(rng, N * C * H * W, -1.0, 1.0);
    for (i, v) in x.iter_mut().enumerate() {
        let c = (i / (H * W)) % C;
        *v += 0.5 * (c as f32 - 1.0);
    }
    vec![
        (x, vec![N, C, H, W]),
        (random_vec(rng, C * C * 9, -0.5, 0.5), vec![C, C, 3, 3]),
        (random_vec(rng, C, -0.5, 0.5), vec![C]),
        (random_vec(rng, C * C, -0.5, 0.5), vec![C, C, 1, 1]),
        (
            random_vec(rng, CLASSES * 3 * C, 0.5, 1.5),
            vec![CLASSES, 3 * C],
        ),
    ]
}

fn levels<'p>(t: &Tape<'p>, dev: &Device) -> Var<'p> {
    t.constant(Tensor::from_slice(&[1.0, 0.0], &[N], dev).unwrap())
}

#[test]
fn composite_gradients_match_finite_differences() {
    let mut rng = test_rng("composite_gradcheck");
    let inputs = block_inputs(&mut rng);
    // Tolerance: round-off, e_L / eps, with L a sum of 48 float32 outputs of size <= 10 each
    // off by a few ulp (e_L ~ sqrt(48) 10 4e-7 ~ 1e-5), is ~1e-3 at eps = 1e-2 and ~8e-3 at
    // the smallest step the kink guard takes (eps/8); truncation, eps^2/6 times the third
    // derivative, is ~2e-3 (1 + |dL/dx|) at eps with the channel means spread and no step across
    // the ELU's kink. tol = 1e-2 covers their sum at either step.
    check_gradients_with_kinks(
        "composite block",
        &mut rng,
        &inputs,
        1e-2,
        1e-2,
        &|t, v| {
            let l = levels(t, &Device::Cpu);
            block(t, &v[0], &v[1], &v[2], &v[3], &v[4], &l)
        },
        &|t, v| {
            let l = levels(t, &Device::Cpu);
            Ok(vec![normalised(t, &v[0], &v[4], &l)?])
        },
    );
}

#[test]
fn composite_backward_on_kernel_devices_matches_cpu() {
    let mut rng = test_rng("composite_devices");
    let inputs = block_inputs(&mut rng);
    let seed = random_vec(&mut rng, N * C * H * W, -1.0, 1.0);
    let run = |dev: &Device| {
        let store = ParamStore::new(dev, 0);
        let mut t = Tape::new(&store);
        let v: Vec<Var<'_>> = inputs
            .iter()
            .map(|(x, s)| t.leaf(Tensor::from_slice(x, s, dev).unwrap()))
            .collect();
        let l = levels(&t, dev);
        let y = block(&mut t, &v[0], &v[1], &v[2], &v[3], &v[4], &l).unwrap();
        let out = y.value().to_vec().unwrap();
        let g = t
            .backward(&y, Tensor::from_slice(&seed, y.shape(), dev).unwrap())
            .unwrap();
        let mut all = vec![out];
        all.extend(v.iter().map(|x| g.wrt(x).unwrap().to_vec().unwrap()));
        all
    };
    let want = run(&Device::Cpu);
    for dev in kernel_devices("composite_devices") {
        for (i, (g, w)) in run(&dev).iter().zip(&want).enumerate() {
            assert_close(&format!("composite result {i} on {dev}"), g, w, 1e-3, 1e-4);
        }
    }
}

#[test]
fn parameter_gradients_are_keyed_by_name_and_accumulate() {
    let dev = Device::Cpu;
    let mut store = ParamStore::new(&dev, 7);
    let conv = Conv2d::new(
        &mut store,
        "res1.0.conv1",
        2,
        2,
        3,
        Conv2dCfg::same(3, 1),
        true,
    )
    .unwrap();
    let norm = CondInstanceNormPp::new(&mut store, "res1.0.normalize1", 2, 3).unwrap();
    let unused = Conv2d::new(&mut store, "unused", 2, 2, 1, Conv2dCfg::default(), false).unwrap();
    let mut rng = test_rng("param_grads");
    let x = random_vec(&mut rng, 2 * 2 * 5 * 5, -1.0, 1.0);
    let r = random_vec(&mut rng, x.len(), -1.0, 1.0);
    // The conv is applied twice: its weight's gradient is the sum of both uses.
    let loss_and_grads = |store: &ParamStore, record: bool| {
        let mut t = if record {
            Tape::new(store)
        } else {
            Tape::inference(store)
        };
        let xv = t.constant(Tensor::from_slice(&x, &[2, 2, 5, 5], &dev).unwrap());
        let l = t.constant(Tensor::from_slice(&[2.0, 0.0], &[2], &dev).unwrap());
        let h = norm.forward(&mut t, &xv, &l).unwrap();
        let h = conv.forward(&mut t, &h).unwrap();
        let h = t.elu(&h).unwrap();
        let y = conv.forward(&mut t, &h).unwrap();
        let yv = y.value().to_vec().unwrap();
        let loss: f64 = yv.iter().zip(&r).map(|(&a, &b)| a as f64 * b as f64).sum();
        let grads = record.then(|| {
            t.backward(&y, Tensor::from_slice(&r, y.shape(), &dev).unwrap())
                .unwrap()
        });
        (loss, grads)
    };
    let grads = loss_and_grads(&store, true).1.unwrap();
    assert_eq!(
        grads.param_names(),
        [
            "res1.0.conv1.bias",
            "res1.0.conv1.weight",
            "res1.0.normalize1.embed.weight"
        ]
    );
    assert!(grads.param(&unused.weight).is_none());
    let eps = 1e-2f32;
    for name in grads.param_names() {
        let analytic = grads.param(name).unwrap().to_vec().unwrap();
        let values = store.get(name).unwrap().to_vec().unwrap();
        let shape = store.get(name).unwrap().shape().to_vec();
        for j in 0..values.len() {
            let probe = |delta: f32| {
                let mut v = values.clone();
                v[j] += delta;
                let mut s = store.to_device(&dev).unwrap();
                s.set(name, Tensor::from_vec(v, &shape, &dev).unwrap())
                    .unwrap();
                loss_and_grads(&s, false).0
            };
            let numeric = (probe(eps) - probe(-eps)) / (2.0 * eps as f64);
            let a = analytic[j] as f64;
            assert!(
                (a - numeric).abs() <= 1e-2 * (1.0 + numeric.abs()),
                "{name}[{j}]: {a} vs {numeric}"
            );
        }
    }
}

#[test]
fn inference_tape_records_nothing() {
    let dev = Device::Cpu;
    let mut store = ParamStore::new(&dev, 1);
    let conv = Conv2d::new(&mut store, "c", 1, 1, 3, Conv2dCfg::same(3, 1), true).unwrap();
    let mut t = Tape::inference(&store);
    let x = t.constant(Tensor::zeros(&[1, 1, 4, 4], &dev).unwrap());
    let y = conv.forward(&mut t, &x).unwrap();
    assert!(t.is_empty() && !y.requires_grad());
    let err = t
        .backward(&y, Tensor::zeros(&[1, 1, 4, 4], &dev).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("inference"), "{err}");
    // A recording tape refuses a seed of the wrong shape and an output without parameters.
    let mut t = Tape::new(&store);
    let x = t.constant(Tensor::zeros(&[1, 1, 4, 4], &dev).unwrap());
    let c = t.elu(&x).unwrap();
    assert!(!c.requires_grad());
    let y = conv.forward(&mut t, &x).unwrap();
    assert!(t
        .backward(&y, Tensor::zeros(&[1, 1, 4, 3], &dev).unwrap())
        .is_err());
}

#[test]
fn param_init_is_deterministic_and_pytorch_like() {
    let dev = Device::Cpu;
    let build = |seed: u64, reversed: bool| {
        let mut s = ParamStore::new(&dev, seed);
        let mut layers: Vec<(&str, usize)> = vec![("begin_conv", 3), ("res1.0.conv1", 8)];
        if reversed {
            layers.reverse();
        }
        for (name, c_in) in layers {
            Conv2d::new(&mut s, name, c_in, 8, 3, Conv2dCfg::same(3, 1), true).unwrap();
        }
        CondInstanceNormPp::new(&mut s, "normalizer", 8, 10).unwrap();
        s
    };
    let (a, b, other) = (build(3, false), build(3, true), build(4, false));
    let names: Vec<&str> = a.names().collect();
    assert_eq!(
        names,
        [
            "begin_conv.weight",
            "begin_conv.bias",
            "res1.0.conv1.weight",
            "res1.0.conv1.bias",
            "normalizer.embed.weight"
        ]
    );
    assert_eq!(a.num_elements(), 8 * 3 * 9 + 8 + 8 * 8 * 9 + 8 + 10 * 24);
    for (name, t) in a.iter() {
        let v = t.to_vec().unwrap();
        // The same values whatever the construction order; different ones for another seed.
        assert_eq!(v, b.get(name).unwrap().to_vec().unwrap(), "{name}");
        assert_ne!(v, other.get(name).unwrap().to_vec().unwrap(), "{name}");
        if let Some(layer) = name.strip_suffix(".embed.weight") {
            // gamma, alpha ~ N(1, 0.02), beta = 0 (ncsn).
            for row in v.chunks(24) {
                assert!(row[..16].iter().all(|g| (g - 1.0).abs() < 0.15), "{layer}");
                assert!(row[16..].iter().all(|&b| b == 0.0), "{layer}");
            }
            let mean = v.chunks(24).flat_map(|r| &r[..16]).sum::<f32>() / 160.0;
            assert!((mean - 1.0).abs() < 0.01);
        } else {
            // U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = c_in * 9, spread over the range.
            let c_in = if name.starts_with("begin") { 3.0 } else { 8.0 };
            let bound = 1.0 / (c_in * 9.0f32).sqrt();
            assert!(v.iter().all(|x| x.abs() <= bound), "{name}");
            let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            assert!(max > 0.5 * bound, "{name}");
        }
    }
    let mut s = ParamStore::new(&dev, 0);
    s.init_constant("x", &[2], 1.0).unwrap();
    assert!(s.init_constant("x", &[2], 1.0).is_err());
    assert!(s.set("x", Tensor::zeros(&[3], &dev).unwrap()).is_err());
    assert!(s
        .get("y")
        .unwrap_err()
        .to_string()
        .contains("no parameter named y"));
}
