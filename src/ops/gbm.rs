//! The diffusions' element-wise kernels (kernels/gbm.cu): closed-form forward noising, GBM
//! (SPEC section 2) and additive (SPEC section 8), and the fused sampler steps of SPEC section 4
//! (Dale-Langevin in log space, sign-agnostic in ambient space with its [`FlipCounter`]) and
//! SPEC section 8 (additive annealed Langevin). Every kernel draws its normals in registers from
//! Philox ([`PhiloxDraw`], SPEC section 5) and, for the steps, updates `x` in place.
//!
//! The arguments are the kernels' own: per-sample constants and step coefficients folded on the
//! host by the caller (diffusion/ computes them from the schedule and the noise levels).
use std::sync::atomic::{AtomicU32, Ordering};

use super::cpu_exp;
use super::cpu_parallel::for_each_element_chunk;
use super::cpu_simd::map3;
use super::launch::{check_same_device, launch, with_partials, Arg, LaunchGeometry};
use super::random::{fill_normals, PhiloxDraw};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Samples in `x` (its leading dimension) and elements per sample; fails on a scalar or on a
/// per-sample list of the wrong length.
pub(super) fn batch_layout(
    x: &Tensor,
    per_sample_values: usize,
    op: &'static str,
) -> Result<(usize, usize)> {
    let batch = *x
        .shape()
        .first()
        .ok_or_else(|| Error::shape(op, "a batch needs a leading dimension; got a scalar"))?;
    if batch != per_sample_values {
        return Err(Error::shape(
            op,
            format!(
                "{per_sample_values} levels for a batch of {batch} ({:?})",
                x.shape()
            ),
        ));
    }
    let per_sample = x.numel().checked_div(batch).unwrap_or(1);
    Ok((batch, per_sample))
}

/// `x_k = x_0 * exp(m_b + s_b z)` per sample `b` (SPEC section 2), with `z` element `i` the
/// normal of `draw` for `i`; `m` and `s` hold one value per sample. Returns `(x_k, z)`.
pub fn gbm_forward(
    x0: &Tensor,
    m: &[f32],
    s: &[f32],
    draw: PhiloxDraw,
) -> Result<(Tensor, Tensor)> {
    noise_per_sample(
        x0,
        &[m, s],
        draw,
        "gbm_forward",
        "gbm_forward_f32",
        |x, b, z| x * cpu_exp::exp(m[b] + s[b] * z),
    )
}

/// `x_0 + sigma_b z` per sample `b` (SPEC section 8), `z` element `i` the normal of `draw` for
/// `i`; `sigma` holds one value per sample. Returns `(x_noisy, z)`.
pub fn additive_forward(x0: &Tensor, sigma: &[f32], draw: PhiloxDraw) -> Result<(Tensor, Tensor)> {
    noise_per_sample(
        x0,
        &[sigma],
        draw,
        "additive_forward",
        "additive_forward_f32",
        |x, b, z| x + sigma[b] * z,
    )
}

/// The closed-form forward noising both diffusions share: `z` element `i` the normal of `draw`
/// for `i`, and element `i` of sample `b` of the result `cpu(x_0[i], b, z[i])`. `coefs` are the
/// per-sample values (one per sample each, checked in order); on a GPU `kernel` computes the same
/// from `x_0`, one `[B]` tensor per entry of `coefs`, the two outputs, the Philox stream, the
/// elements per sample and the count. Returns `(result, z)`.
fn noise_per_sample(
    x0: &Tensor,
    coefs: &[&[f32]],
    draw: PhiloxDraw,
    op: &'static str,
    kernel: &'static str,
    cpu: impl Fn(f32, usize, f32) -> f32 + Sync,
) -> Result<(Tensor, Tensor)> {
    let mut per_sample = 0;
    for c in coefs {
        per_sample = batch_layout(x0, c.len(), op)?.1;
    }
    let dev = x0.device();
    let mut out = Tensor::uninit(x0.shape(), dev)?;
    let mut z = Tensor::uninit(x0.shape(), dev)?;
    let n = x0.numel();
    match dev {
        Device::Cpu => {
            let xs = x0.host()?;
            fill_normals(z.host_mut()?, draw);
            let zs = z.host()?;
            for_each_element_chunk(out.host_mut()?, |offset, part| {
                for (j, o) in part.iter_mut().enumerate() {
                    let i = offset + j;
                    *o = cpu(xs[i], i / per_sample, zs[i]);
                }
            });
        }
        _ => {
            let coef_t = coefs
                .iter()
                .map(|c| Tensor::from_vec(c.to_vec(), &[c.len()], dev))
                .collect::<Result<Vec<_>>>()?;
            let mut args = vec![Arg::In(x0)];
            args.extend(coef_t.iter().map(Arg::In));
            args.extend([Arg::Out(&mut out), Arg::Out(&mut z)]);
            args.extend(Arg::philox(draw));
            args.extend([Arg::U64(per_sample as u64), Arg::U64(n as u64)]);
            launch(dev, kernel, LaunchGeometry::elementwise(n), &mut args)?
        }
    }
    Ok((out, z))
}

/// The scalars of one fused sampler step in the device's memory, `[coefs.., noise_coef, step]`
/// with the Philox step's bits in the last float (kernels/gbm.cu). The kernels read them from
/// there rather than from their arguments, so that a step captured in a graph
/// ([`crate::device::graph`]) reads each step's own values when replayed: [`Self::set`] writes
/// them in place before each step. The Philox seed and stream are fixed for a run.
pub struct StepScalars {
    values: Tensor,
    /// What was last written, for the CPU path.
    host: Vec<f32>,
    seed: u64,
    stream: u32,
}

impl StepScalars {
    /// Scalars for steps with `coefs.len()` coefficients drawing from `draw`'s seed and stream,
    /// set to `coefs`, `noise_coef` and `draw`'s step.
    pub fn new(device: &Device, coefs: &[f32], noise_coef: f32, draw: PhiloxDraw) -> Result<Self> {
        let host = Self::layout(coefs, noise_coef, draw.step);
        Ok(Self {
            values: Tensor::from_slice(&host, &[host.len()], device)?,
            host,
            seed: draw.seed,
            stream: draw.stream,
        })
    }

    /// Writes the next step's values in place.
    pub fn set(&mut self, coefs: &[f32], noise_coef: f32, step: u32) -> Result<()> {
        let host = Self::layout(coefs, noise_coef, step);
        if host.len() != self.host.len() {
            return Err(Error::invalid(format!(
                "step scalars made for {} coefficients, set with {}",
                self.host.len() - 2,
                coefs.len()
            )));
        }
        // Compared as bits: the step's bits are not a number to compare (step 2^31 reads as
        // -0.0, equal to step 0's +0.0).
        if host
            .iter()
            .zip(&self.host)
            .any(|(a, b)| a.to_bits() != b.to_bits())
        {
            self.values.write(&host)?;
            self.host = host;
        }
        Ok(())
    }

    fn layout(coefs: &[f32], noise_coef: f32, step: u32) -> Vec<f32> {
        let mut v = coefs.to_vec();
        v.extend([noise_coef, f32::from_bits(step)]);
        v
    }

    fn coefs(&self) -> &[f32] {
        &self.host[..self.host.len() - 2]
    }

    fn noise_coef(&self) -> f32 {
        self.host[self.host.len() - 2]
    }

    fn draw(&self) -> PhiloxDraw {
        PhiloxDraw::new(
            self.seed,
            self.stream,
            self.host[self.host.len() - 1].to_bits(),
        )
    }

    /// Fails unless these scalars hold `n` coefficients, for `op`.
    fn check(&self, n: usize, op: &'static str) -> Result<()> {
        if self.coefs().len() != n {
            return Err(Error::invalid(format!(
                "{op}: step scalars with {} coefficients, the step takes {n}",
                self.coefs().len()
            )));
        }
        Ok(())
    }
}

/// The Dale-Langevin step, or any log-space step (SPEC section 4), with `scalars` =
/// `[drift, score_coef]`, noise coefficient and step:
/// `x <- x * exp(drift + score_coef * h + noise_coef * z)`, `x` updated in place; never changes
/// a sign.
pub fn gbm_dale_step(x: &mut Tensor, h: &Tensor, scalars: &StepScalars) -> Result<()> {
    scalars.check(2, "dale_step")?;
    let [drift, score_coef] = [scalars.coefs()[0], scalars.coefs()[1]];
    let step = FusedStep {
        op: "dale_step",
        kernel: "gbm_dale_step_f32",
        scalars,
    };
    step.apply(x, h, None, |x, h, z| {
        x * cpu_exp::exp(drift + score_coef * h + z)
    })
}

/// A device-side count of entries that changed sign or hit zero (SPEC sections 4 and 10),
/// accumulated by [`gbm_sign_agnostic_step`] without a host round trip; [`FlipCounter::drain`]
/// reads and resets it. A u32 held in f32 storage: drain at least every 2^32 flips (once per
/// level is plenty).
pub struct FlipCounter {
    count: Tensor,
}

impl FlipCounter {
    pub fn new(device: &Device) -> Result<Self> {
        Ok(Self {
            count: Tensor::zeros(&[1], device)?,
        })
    }

    /// The flips since the last drain. The count is reset in place, so a captured step that
    /// adds to it keeps adding to the same memory.
    pub fn drain(&mut self) -> Result<u64> {
        let bits = self.count.item()?.to_bits();
        if bits != 0 {
            self.count.write(&[0.0])?;
        }
        Ok(bits as u64)
    }

    /// Adds `changed` on the host (the CPU path of [`gbm_sign_agnostic_step`]).
    fn add(&mut self, changed: u32) -> Result<()> {
        let slot = &mut self.count.host_mut()?[0];
        *slot = f32::from_bits(slot.to_bits().wrapping_add(changed));
        Ok(())
    }
}

/// The sign-agnostic step (SPEC section 4):
/// `x <- x * (1 + drift + score_coef * h + noise_coef * z)` with `scalars` = `[drift,
/// score_coef]`, noise coefficient and step, `x` updated in place; entries that were non-zero
/// and changed sign or became zero are added to `flips`.
pub fn gbm_sign_agnostic_step(
    x: &mut Tensor,
    h: &Tensor,
    flips: &mut FlipCounter,
    scalars: &StepScalars,
) -> Result<()> {
    check_same_device(&[x, &flips.count], "sign_agnostic_step")?;
    scalars.check(2, "sign_agnostic_step")?;
    let [drift, score_coef] = [scalars.coefs()[0], scalars.coefs()[1]];
    let step = FusedStep {
        op: "sign_agnostic_step",
        kernel: "gbm_sign_agnostic_step_f32",
        scalars,
    };
    step.apply(x, h, Some(flips), |x, h, z| {
        x * (1.0 + drift + score_coef * h + z)
    })
}

/// The additive baseline's annealed Langevin step (SPEC section 8) with `scalars` =
/// `[half_alpha]`, noise coefficient and step: `x <- x + half_alpha * score + noise_coef * z`,
/// `x` updated in place.
pub fn additive_langevin_step(x: &mut Tensor, score: &Tensor, scalars: &StepScalars) -> Result<()> {
    scalars.check(1, "additive_langevin_step")?;
    let half_alpha = scalars.coefs()[0];
    let step = FusedStep {
        op: "additive_langevin_step",
        kernel: "additive_langevin_step_f32",
        scalars,
    };
    step.apply(x, score, None, |x, s, z| x + (half_alpha * s + z))
}

/// What the three fused sampler steps share: `x` updated in place from itself, the network's
/// output `h` and a scaled Philox normal. The kernel takes `(x, h, [flips], scalars, seed,
/// stream, n)`; the CPU path computes the same per element.
struct FusedStep<'a> {
    op: &'static str,
    kernel: &'static str,
    scalars: &'a StepScalars,
}

impl FusedStep<'_> {
    /// Runs the step; on the CPU element `i` becomes `update(x_i, h_i, noise_coef * z_i)`, and
    /// `flips`, when given, counts the non-zero entries that changed sign or became zero.
    fn apply(
        &self,
        x: &mut Tensor,
        h: &Tensor,
        flips: Option<&mut FlipCounter>,
        update: impl Fn(f32, f32, f32) -> f32 + Sync,
    ) -> Result<()> {
        x.check_same_shape(h, self.op)?;
        check_same_device(&[x, &self.scalars.values], self.op)?;
        let n = x.numel();
        let (noise_coef, draw) = (self.scalars.noise_coef(), self.scalars.draw());
        match x.device().clone() {
            Device::Cpu => {
                let hs = h.host()?;
                // A count is the same whatever the order its parts are added in.
                let changed = AtomicU32::new(0);
                let count = flips.is_some();
                for_each_element_chunk(x.host_mut()?, |offset, part| {
                    let mut part_changed = 0u32;
                    // A block at a time: the normals (drawn in vector lanes; none when the noise
                    // coefficient is 0, as in the kernels), scaled, then the update in vector
                    // lanes from a copy of the block's old values.
                    let (mut z, mut old) = ([0.0f32; 256], [0.0f32; 256]);
                    for (k, block) in part.chunks_mut(z.len()).enumerate() {
                        let at = offset + k * z.len();
                        let (z, old) = (&mut z[..block.len()], &mut old[..block.len()]);
                        if noise_coef != 0.0 {
                            draw.fill_normals(at as u64, z);
                        }
                        z.iter_mut().for_each(|v| *v *= noise_coef);
                        old.copy_from_slice(block);
                        map3(block, old, &hs[at..at + block.len()], z, &update);
                        if count {
                            part_changed += block
                                .iter()
                                .zip(old.iter())
                                .map(|(&new, &old)| {
                                    (old != 0.0 && (new == 0.0 || (new < 0.0) != (old < 0.0)))
                                        as u32
                                })
                                .sum::<u32>();
                        }
                    }
                    changed.fetch_add(part_changed, Ordering::Relaxed);
                });
                if let Some(flips) = flips {
                    flips.add(changed.into_inner())?;
                }
            }
            dev => {
                let geometry = match flips {
                    Some(_) => with_partials(n),
                    None => LaunchGeometry::elementwise(n),
                };
                let mut args = vec![Arg::Out(x), Arg::In(h)];
                args.extend(flips.map(|f| Arg::OutWords(&mut f.count)));
                args.extend([
                    Arg::In(&self.scalars.values),
                    Arg::U64(draw.seed),
                    Arg::U32(draw.stream),
                    Arg::U64(n as u64),
                ]);
                launch(&dev, self.kernel, geometry, &mut args)?
            }
        }
        Ok(())
    }
}
