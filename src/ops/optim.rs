//! The optimisers' element updates (kernels/optim.cu), SPEC section 7: AdamW, exponentiated
//! gradient descent and the EMA of the weights, each reading its gradient times `grad_scale` so
//! that clipping costs no extra pass; and the two pieces of global-norm gradient clipping, the
//! norm (per-tensor sums of squares into one buffer of partials, summed in a fixed order) and the
//! in-place scaling. The scalars (learning rate after warm-up, bias corrections, clip factor) are
//! computed by the optimisers in optim/.
use rayon::prelude::*;

use super::cpu_parallel::element_chunk_len;
use super::launch::{check_same_device, launch, with_partials, Arg, LaunchGeometry};
use crate::device::Device;
use crate::error::Result;
use crate::tensor::Tensor;

/// The scalars of one AdamW update (`adamw_step_f32`): `bias1 = 1 - beta1^t` and
/// `bias2 = 1 - beta2^t` for update number `t`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWCoefficients {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub bias1: f32,
    pub bias2: f32,
    pub grad_scale: f32,
}

/// [`adamw_step`] on the cpu over one chunk of the elements: zipped, so the loop vectorises, and
/// in an AVX2 copy where the core has it (8 lanes of its divisions and square roots; the same
/// bits, as in `cpu_simd`).
fn adamw_chunk(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], h: &AdamWCoefficients) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn wide(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], h: &AdamWCoefficients) {
        adamw_body(p, m, v, g, h)
    }
    #[cfg(target_arch = "x86_64")]
    if super::cpu_simd::avx2_fma() {
        // SAFETY: the core runs AVX2 and FMA.
        return unsafe { wide(p, m, v, g, h) };
    }
    adamw_body(p, m, v, g, h)
}

#[inline(always)]
fn adamw_body(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], h: &AdamWCoefficients) {
    let moments = p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut());
    for (((p, m), v), &g) in moments.zip(g) {
        let gi = g * h.grad_scale;
        *m = h.beta1 * *m + (1.0 - h.beta1) * gi;
        *v = h.beta2 * *v + (1.0 - h.beta2) * gi * gi;
        let decayed = *p * (1.0 - h.lr * h.weight_decay);
        *p = decayed - h.lr * (*m / h.bias1) / ((*v / h.bias2).sqrt() + h.eps);
    }
}

/// One AdamW update of `param` with its moments `m` and `v`, all updated in place, in the order
/// PyTorch applies it: decoupled weight decay, the moments, then the bias-corrected step.
pub fn adamw_step(
    param: &mut Tensor,
    grad: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    h: &AdamWCoefficients,
) -> Result<()> {
    param.check_same_shape(grad, "adamw_step (param vs grad)")?;
    param.check_same_shape(m, "adamw_step (param vs m)")?;
    param.check_same_shape(v, "adamw_step (param vs v)")?;
    let n = param.numel();
    match param.device().clone() {
        Device::Cpu => {
            let (m, v, g) = (m.host_mut()?, v.host_mut()?, grad.host()?);
            // Elements are independent: chunks over the cores, each a loop in vector lanes.
            let chunk = element_chunk_len(n);
            let p = param.host_mut()?;
            if chunk >= n {
                adamw_chunk(p, m, v, g, h);
            } else {
                p.par_chunks_mut(chunk)
                    .zip(m.par_chunks_mut(chunk))
                    .zip(v.par_chunks_mut(chunk))
                    .zip(g.par_chunks(chunk))
                    .for_each(|(((p, m), v), g)| adamw_chunk(p, m, v, g, h));
            }
            Ok(())
        }
        dev => launch(
            &dev,
            "adamw_step_f32",
            LaunchGeometry::elementwise(n),
            &mut [
                Arg::Out(param),
                Arg::In(grad),
                Arg::Out(m),
                Arg::Out(v),
                Arg::F32(h.lr),
                Arg::F32(h.beta1),
                Arg::F32(h.beta2),
                Arg::F32(h.eps),
                Arg::F32(h.weight_decay),
                Arg::F32(h.bias1),
                Arg::F32(h.bias2),
                Arg::F32(h.grad_scale),
                Arg::U64(n as u64),
            ],
        ),
    }
}

/// One exponentiated-gradient update (SPEC section 7) of `param` in place, with rate `lr` and
/// gradient `grad * grad_scale`: `theta <- theta * exp(-lr * g * sign(theta))`, the magnitude
/// kept within the normal f32 range; an exact zero takes the additive step `-lr * g`.
pub fn egd_step(param: &mut Tensor, grad: &Tensor, lr: f32, grad_scale: f32) -> Result<()> {
    let op = ("egd_step", "egd_step_f32");
    update_in_place(param, grad, op, &[lr, grad_scale], |p, g| {
        egd_element(p, g * grad_scale, lr)
    })
}

/// The reference of `egd_step_f32`: the multiplicative step, its magnitude kept within the normal
/// f32 range (an underflow to zero would let the zero rule flip the sign on the next step), and
/// the additive step for an exact zero.
fn egd_element(p: f32, g: f32, lr: f32) -> f32 {
    if p == 0.0 {
        return -lr * g;
    }
    let step = if p > 0.0 { -lr * g } else { lr * g };
    let magnitude = (p.abs() * step.exp()).clamp(f32::MIN_POSITIVE, f32::MAX);
    magnitude.copysign(p)
}

/// `ema <- decay * ema + (1 - decay) * w`, in place.
pub fn ema_update(ema: &mut Tensor, w: &Tensor, decay: f32) -> Result<()> {
    let op = ("ema_update", "ema_update_f32");
    update_in_place(ema, w, op, &[decay], |e, x| decay * e + (1.0 - decay) * x)
}

/// `target[i] <- f(target[i], source[i])` on the CPU; on a GPU the kernel `op.1` does the same
/// from `(target, source, scalars.., n)`.
fn update_in_place(
    target: &mut Tensor,
    source: &Tensor,
    (op, kernel): (&'static str, &'static str),
    scalars: &[f32],
    f: impl Fn(f32, f32) -> f32,
) -> Result<()> {
    target.check_same_shape(source, op)?;
    let n = target.numel();
    match target.device().clone() {
        Device::Cpu => {
            for (t, &x) in target.host_mut()?.iter_mut().zip(source.host()?) {
                *t = f(*t, x);
            }
            Ok(())
        }
        dev => {
            let mut args = vec![Arg::Out(target), Arg::In(source)];
            args.extend(scalars.iter().map(|&c| Arg::F32(c)));
            args.push(Arg::U64(n as u64));
            launch(&dev, kernel, LaunchGeometry::elementwise(n), &mut args)
        }
    }
}

/// `sqrt(sum over all tensors of x^2)`, deterministic: a fixed number of partial sums of squares
/// per tensor (`sum_squares_partial_f32`), all in one buffer, summed in a fixed order. All
/// tensors must be on one device; no tensors give 0.
pub fn global_norm(tensors: &[&Tensor]) -> Result<f32> {
    let Some(first) = tensors.first() else {
        return Ok(0.0);
    };
    check_same_device(tensors, "global_norm")?;
    let device = first.device().clone();
    if device.is_cpu() {
        let mut total = 0f64;
        for t in tensors {
            total += t.host()?.iter().map(|&v| v as f64 * v as f64).sum::<f64>();
        }
        return Ok(total.sqrt() as f32);
    }
    let geometries: Vec<LaunchGeometry> =
        tensors.iter().map(|t| with_partials(t.numel())).collect();
    let n_partials: usize = geometries.iter().map(|g| g.grid[0] as usize).sum();
    let mut partial = Tensor::uninit(&[n_partials], &device)?;
    let mut offset = 0u64;
    for (t, geometry) in tensors.iter().zip(&geometries) {
        launch(
            &device,
            "sum_squares_partial_f32",
            *geometry,
            &mut [
                Arg::In(t),
                Arg::Out(&mut partial),
                Arg::U64(offset),
                Arg::U64(t.numel() as u64),
            ],
        )?;
        offset += geometry.grid[0] as u64;
    }
    let total = super::sum(&partial)?.item()?;
    Ok(total.sqrt())
}

/// `x <- alpha * x`.
pub fn scale_in_place(x: &mut Tensor, alpha: f32) -> Result<()> {
    let n = x.numel();
    match x.device().clone() {
        Device::Cpu => {
            x.host_mut()?.iter_mut().for_each(|v| *v *= alpha);
            Ok(())
        }
        dev => launch(
            &dev,
            "scale_in_place_f32",
            LaunchGeometry::elementwise(n),
            &mut [Arg::Out(x), Arg::F32(alpha), Arg::U64(n as u64)],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{fill_normals, stream};

    /// The AVX2 copy gives the bits of the baseline loop (this test's own call of the body is
    /// compiled for the baseline), over lengths that leave every vector tail.
    #[test]
    fn adamw_chunk_gives_the_baseline_bits() {
        let mut x = vec![0.0f32; 4 * 1031];
        fill_normals(3, stream::TEST, 0, 0, &mut x);
        let h = AdamWCoefficients {
            lr: 2e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            bias1: 0.19,
            bias2: 0.002,
            grad_scale: 0.7,
        };
        for len in [1, 7, 8, 9, 1031] {
            let parts = |x: &[f32]| -> [Vec<f32>; 4] {
                std::array::from_fn(|k| x[k * 1031..][..len].to_vec())
            };
            let [mut p, mut m, mut v, g] = parts(&x);
            v.iter_mut().for_each(|v| *v = v.abs());
            let (mut p2, mut m2, mut v2) = (p.clone(), m.clone(), v.clone());
            adamw_chunk(&mut p, &mut m, &mut v, &g, &h);
            adamw_body(&mut p2, &mut m2, &mut v2, &g, &h);
            for (a, b) in [(&p, &p2), (&m, &m2), (&v, &v2)] {
                assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
            }
        }
    }
}
