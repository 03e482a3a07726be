//! Conditional instance normalisation++ (kernels/norm.cu): ncsn's
//! `ConditionalInstanceNorm2dPlus(C, n_classes, bias=True)`, SPEC section 9. For sample n at level
//! k = levels[n] and channel c:
//!
//! ```text
//! mu_c = mean_hw(x_c)          r_c = 1/sqrt(var_hw(x_c) + 1e-5)     (biased, as nn.InstanceNorm2d)
//! m = mean_c(mu_c)             s = 1/sqrt(var_c(mu) + 1e-5)         (UNBIASED, as torch.var)
//! u_c = (mu_c - m) s
//! y = gamma[k,c] ((x - mu_c) r_c + alpha[k,c] u_c) + beta[k,c]
//! ```
//!
//! gamma, alpha and beta are the column blocks [0,C), [C,2C), [2C,3C) of one embedding table
//! [n_classes, 3C], exactly ncsn's `embed.weight` (split by `chunk(3, dim=-1)`), so parameters load
//! from and compare with PyTorch without reshuffling. Levels are an f32 tensor [N] of integer
//! values; a value that is not an integer in [0, n_classes) makes that sample's output NaN.
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::launch::{check_same_device, launch, Arg, LaunchGeometry};
use crate::tensor::Tensor;

/// The variance epsilon of both normalisations (PyTorch's default, used by ncsn).
pub const CIN_PP_EPS: f32 = 1e-5;
/// Threads per plane block in kernels/norm.cu: a multiple of 32. Public for the occupancy
/// `dml info --kernels` reports.
pub const NORM_THREADS: u32 = 128;
/// Threads of the forward's block per sample: 8 warps, each reducing one plane at a time.
pub const NORM_SAMPLE_THREADS: u32 = 256;

/// What the backward pass needs from the forward: per plane the mean `mu`, the reciprocal
/// standard deviation `r` and the normalised channel mean `u`, as a [3, N*C] tensor, and whether
/// an ELU followed the norm.
pub struct CinPpSaved {
    pub stats: Tensor,
    pub elu: bool,
}

#[derive(Clone, Copy, Debug)]
struct NormDims {
    batch: usize,
    channels: usize,
    hw: usize,
    n_classes: usize,
}

impl NormDims {
    fn planes(&self) -> usize {
        self.batch * self.channels
    }
    fn args(&self) -> [Arg<'static>; 4] {
        [self.batch, self.channels, self.hw, self.n_classes].map(|v| Arg::I32(v as i32))
    }
    fn per_plane(&self) -> LaunchGeometry {
        LaunchGeometry::new([self.planes().max(1) as u32, 1, 1], [NORM_THREADS, 1, 1], 0)
    }

    /// The forward's one block per sample, with every plane's mu and r in shared memory.
    fn per_sample(&self) -> LaunchGeometry {
        let shared_bytes = 2 * self.channels * std::mem::size_of::<f32>();
        LaunchGeometry::new(
            [self.batch.max(1) as u32, 1, 1],
            [NORM_SAMPLE_THREADS, 1, 1],
            shared_bytes as u32,
        )
    }
}

/// The dimensions of `x`, checked against the levels and the embedding, all on one device.
fn check(x: &Tensor, levels: &Tensor, embed: &Tensor, op: &'static str) -> Result<NormDims> {
    check_same_device(&[x, levels, embed], op)?;
    let x_shape = x.shape();
    let &[batch, channels, h, w] = x_shape else {
        return Err(Error::shape(op, format!("input {x_shape:?} is not NCHW")));
    };
    let ok_embed = matches!(*embed.shape(), [k, w3] if k > 0 && w3 == 3 * channels);
    if !ok_embed || levels.shape() != [batch] || channels < 2 || h * w == 0 {
        return Err(Error::shape(
            op,
            format!(
                "input {x_shape:?}, levels {:?} (want [N]), embedding {:?} (want [n_classes, 3C]); \
                 at least 2 channels (the channel variance is unbiased)",
                levels.shape(),
                embed.shape()
            ),
        ));
    }
    let dims = NormDims {
        batch,
        channels,
        hw: h * w,
        n_classes: embed.shape()[0],
    };
    if batch * channels * h * w >= i32::MAX as usize {
        return Err(Error::invalid(format!(
            "{op}: {dims:?} too large for 32-bit indexing"
        )));
    }
    Ok(dims)
}

/// The embedding row of a level, or None when it is not an integer in [0, n_classes).
fn level_row(level: f32, n_classes: usize) -> Option<usize> {
    (level >= 0.0 && level.fract() == 0.0 && (level as usize) < n_classes).then_some(level as usize)
}

/// The forward pass: the output and what the backward pass needs.
pub fn cond_instance_norm_pp(
    x: &Tensor,
    levels: &Tensor,
    embed: &Tensor,
) -> Result<(Tensor, CinPpSaved)> {
    forward(x, levels, embed, false)
}

/// `elu(cond_instance_norm_pp(x))` in one pass, the pair the network always runs (SPEC section
/// 9): the ELU is applied as each output is written, and [`cond_instance_norm_pp_backward`]
/// takes its gradient as it reads `dy`, recomputing the pre-activation from `x` and the saved
/// statistics. Equal to the two ops in sequence (the same f32 operations on each element).
pub fn cond_instance_norm_pp_elu(
    x: &Tensor,
    levels: &Tensor,
    embed: &Tensor,
) -> Result<(Tensor, CinPpSaved)> {
    forward(x, levels, embed, true)
}

fn forward(x: &Tensor, levels: &Tensor, embed: &Tensor, elu: bool) -> Result<(Tensor, CinPpSaved)> {
    let d = check(x, levels, embed, "cond_instance_norm_pp")?;
    let mut y = Tensor::uninit(x.shape(), x.device())?;
    let mut stats = Tensor::uninit(&[3, d.planes()], x.device())?;
    match x.device() {
        Device::Cpu => cpu::forward(
            &d,
            [x.host()?, levels.host()?, embed.host()?],
            elu,
            stats.host_mut()?,
            y.host_mut()?,
        ),
        dev => {
            let mut args = vec![
                Arg::In(x),
                Arg::In(levels),
                Arg::In(embed),
                Arg::Out(&mut stats),
                Arg::Out(&mut y),
                Arg::I32(elu as i32),
            ];
            args.extend(d.args());
            launch(dev, "cin_pp_forward_f32", d.per_sample(), &mut args)?;
        }
    }
    Ok((y, CinPpSaved { stats, elu }))
}

/// The backward pass: (dx, d embed) from the output gradient `dy` (of the ELU's output when the
/// forward was [`cond_instance_norm_pp_elu`]).
pub fn cond_instance_norm_pp_backward(
    dy: &Tensor,
    x: &Tensor,
    levels: &Tensor,
    embed: &Tensor,
    saved: &CinPpSaved,
) -> Result<(Tensor, Tensor)> {
    let op = "cond_instance_norm_pp_backward";
    let d = check(x, levels, embed, op)?;
    dy.check_same_shape(x, op)?;
    check_same_device(&[x, &saved.stats], op)?;
    if saved.stats.shape() != [3, d.planes()] {
        return Err(Error::shape(
            op,
            format!(
                "saved statistics {:?} for input {:?}",
                saved.stats.shape(),
                x.shape()
            ),
        ));
    }
    let mut dx = Tensor::uninit(x.shape(), x.device())?;
    let mut dembed = Tensor::uninit(embed.shape(), x.device())?;
    match x.device() {
        Device::Cpu => cpu::backward(
            &d,
            [
                dy.host()?,
                x.host()?,
                levels.host()?,
                embed.host()?,
                saved.stats.host()?,
            ],
            saved.elu,
            dx.host_mut()?,
            dembed.host_mut()?,
        ),
        dev => {
            let width = 3 * d.channels;
            let mut sums = Tensor::uninit(&[2, d.planes()], dev)?;
            let mut dembed_sample = Tensor::uninit(&[d.batch, width], dev)?;
            let ins = [x, dy, levels, embed, &saved.stats];
            let own = [Arg::Out(&mut sums), Arg::Out(&mut dembed_sample)];
            let mut args = backward_args(ins, own, saved.elu, &d);
            launch(dev, "cin_pp_backward_sums_f32", d.per_plane(), &mut args)?;
            let own = [Arg::In(&sums), Arg::Out(&mut dx)];
            let mut args = backward_args(ins, own, saved.elu, &d);
            launch(dev, "cin_pp_backward_input_f32", d.per_plane(), &mut args)?;
            launch(
                dev,
                "cin_pp_embed_grad_f32",
                LaunchGeometry::elementwise(d.n_classes * width),
                &mut [
                    Arg::In(levels),
                    Arg::In(&dembed_sample),
                    Arg::Out(&mut dembed),
                    Arg::I32(d.batch as i32),
                    Arg::I32(d.n_classes as i32),
                    Arg::I32(width as i32),
                ],
            )?;
        }
    }
    Ok((dx, dembed))
}

/// The argument list both per-plane backward kernels take: `(x, dy, levels, embed, stats)`, the
/// two arguments of each kernel's own, the ELU flag, then the dimensions.
fn backward_args<'a>(
    ins: [&'a Tensor; 5],
    own: [Arg<'a>; 2],
    elu: bool,
    d: &NormDims,
) -> Vec<Arg<'a>> {
    let mut args: Vec<Arg<'a>> = ins.into_iter().map(Arg::In).collect();
    args.extend(own);
    args.push(Arg::I32(elu as i32));
    args.extend(d.args());
    args
}

/// The cpu reference, f64 accumulation.
mod cpu {
    use super::*;
    use crate::ops::cpu_exp;
    use crate::ops::cpu_parallel::{batch_workers, for_each_item_chunk};
    use crate::ops::cpu_simd::{map1, map2};
    use crate::ops::cpu_sum::{lane_sum, lane_sum_of};

    /// gamma, alpha, beta of sample n's level for channel c (NaN for an invalid level).
    fn modulation(
        d: &NormDims,
        levels: &[f32],
        embed: &[f32],
        n: usize,
        c: usize,
    ) -> (f32, f32, f32) {
        match level_row(levels[n], d.n_classes) {
            Some(k) => {
                let row = &embed[k * 3 * d.channels..][..3 * d.channels];
                (row[c], row[d.channels + c], row[2 * d.channels + c])
            }
            None => (f32::NAN, f32::NAN, f32::NAN),
        }
    }

    /// m and s of one sample's channel means (SPEC section 9, torch.var: unbiased).
    fn channel_stats(mu: &[f32]) -> (f64, f64) {
        let c = mu.len() as f64;
        let m = mu.iter().map(|&v| v as f64).sum::<f64>() / c;
        let v = mu.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / (c - 1.0);
        (m, 1.0 / (v + CIN_PP_EPS as f64).sqrt())
    }

    /// Per plane: the mean and the reciprocal standard deviation (SPEC section 9), f64 sums.
    fn plane_moments(d: &NormDims, x: &[f32]) -> Vec<[f64; 2]> {
        let mut moments = vec![[0.0f64; 2]; d.planes()];
        let workers = batch_workers(d.planes(), 3 * d.hw);
        for_each_item_chunk(&mut moments, 1, workers, |first, part| {
            for (i, m) in part.iter_mut().enumerate() {
                let xp = &x[(first + i) * d.hw..][..d.hw];
                let mu = lane_sum_of(xp, |v| v as f64) / d.hw as f64;
                let var = lane_sum_of(xp, |v| (v as f64 - mu).powi(2)) / d.hw as f64;
                *m = [mu, 1.0 / (var + CIN_PP_EPS as f64).sqrt()];
            }
        });
        moments
    }

    /// The pre-activation `gamma ((x - mu) r + alpha u) + beta` of one plane's elements, as a
    /// function of `x`.
    fn pre_activation(
        d: &NormDims,
        [levels, embed, stats]: [&[f32]; 3],
        plane: usize,
    ) -> impl Fn(f32) -> f32 {
        let (mu, r, u) = plane_stats(stats, d.planes(), plane);
        let (gamma, alpha, beta) =
            modulation(d, levels, embed, plane / d.channels, plane % d.channels);
        move |v: f32| gamma * ((v - mu) * r + alpha * u) + beta
    }

    /// The pre-activation of every element of one plane written to `out` (then the ELU, when
    /// one follows).
    fn plane_output(
        d: &NormDims,
        [x, levels, embed, stats]: [&[f32]; 4],
        plane: usize,
        elu: bool,
        out: &mut [f32],
    ) {
        let pre = pre_activation(d, [levels, embed, stats], plane);
        let xp = &x[plane * d.hw..][..d.hw];
        if elu {
            map1(out, xp, &|v| cpu_exp::elu(pre(v)));
        } else {
            map1(out, xp, &pre);
        }
    }

    /// Inputs in order: x, levels, embed. Planes are spread over threads; each plane's value
    /// does not depend on how.
    pub(super) fn forward(
        d: &NormDims,
        [x, levels, embed]: [&[f32]; 3],
        elu: bool,
        stats: &mut [f32],
        y: &mut [f32],
    ) {
        let planes = d.planes();
        for (plane, [mu, r]) in plane_moments(d, x).into_iter().enumerate() {
            stats[plane] = mu as f32;
            stats[planes + plane] = r as f32;
        }
        for n in 0..d.batch {
            let (m, s) = channel_stats(&stats[n * d.channels..][..d.channels]);
            for plane in n * d.channels..(n + 1) * d.channels {
                stats[2 * planes + plane] = ((stats[plane] as f64 - m) * s) as f32;
            }
        }
        let stats = &*stats;
        let workers = batch_workers(planes, 8 * d.hw);
        for_each_item_chunk(y, d.hw, workers, |first, ys| {
            for (i, out) in ys.chunks_mut(d.hw).enumerate() {
                plane_output(d, [x, levels, embed, stats], first + i, elu, out);
            }
        });
    }

    /// A plane's mean, reciprocal standard deviation and normalised channel mean, from the
    /// [3, planes] statistics.
    fn plane_stats(stats: &[f32], planes: usize, plane: usize) -> (f32, f32, f32) {
        (
            stats[plane],
            stats[planes + plane],
            stats[2 * planes + plane],
        )
    }

    /// The gradient reaching the norm's output: `dy`, times the ELU's slope at the recomputed
    /// pre-activation when one followed.
    fn norm_output_grad(
        d: &NormDims,
        [dy, x, levels, embed, stats]: [&[f32]; 5],
        elu: bool,
    ) -> Vec<f32> {
        if !elu {
            return dy.to_vec();
        }
        let mut g = vec![0.0; dy.len()];
        let workers = batch_workers(d.planes(), 8 * d.hw);
        for_each_item_chunk(&mut g, d.hw, workers, |first, gs| {
            for (i, gp) in gs.chunks_mut(d.hw).enumerate() {
                let plane = first + i;
                let pre = pre_activation(d, [levels, embed, stats], plane);
                let (xp, dyp) = (&x[plane * d.hw..][..d.hw], &dy[plane * d.hw..][..d.hw]);
                map2(gp, xp, dyp, &|v, dv| dv * cpu_exp::elu_slope(pre(v)));
            }
        });
        g
    }

    /// Per plane: sum(g) and sum(g xhat), f64 sums.
    fn plane_grad_sums(d: &NormDims, g: &[f32], x: &[f32], stats: &[f32]) -> Vec<[f64; 2]> {
        let mut sums = vec![[0.0f64; 2]; d.planes()];
        let workers = batch_workers(d.planes(), 4 * d.hw);
        for_each_item_chunk(&mut sums, 1, workers, |first, part| {
            for (i, out) in part.iter_mut().enumerate() {
                let plane = first + i;
                let (mu, r, _) = plane_stats(stats, d.planes(), plane);
                let (gp, xp) = (&g[plane * d.hw..][..d.hw], &x[plane * d.hw..][..d.hw]);
                out[0] = lane_sum_of(gp, |g| g as f64);
                out[1] = lane_sum(gp, xp, |g, v| g as f64 * ((v - mu) * r) as f64);
            }
        });
        sums
    }

    /// Inputs in order: dy, x, levels, embed, stats. The per-plane passes are spread over
    /// threads; the embedding gradient is summed over samples in sample order.
    pub(super) fn backward(
        d: &NormDims,
        inputs: [&[f32]; 5],
        elu: bool,
        dx: &mut [f32],
        dembed: &mut [f32],
    ) {
        let g_norm = norm_output_grad(d, inputs, elu);
        let [_, x, levels, embed, stats] = inputs;
        let dy = &g_norm[..];
        let (planes, ch, hw) = (d.planes(), d.channels, d.hw as f64);
        let sums = plane_grad_sums(d, dy, x, stats);
        // Per plane: the gradient reaching its mean through the channel statistics.
        let mut dmu = vec![0.0f64; planes];
        dembed.fill(0.0);
        for n in 0..d.batch {
            let (_, s) = channel_stats(&stats[n * ch..][..ch]);
            // du = gamma alpha sum(g), per channel.
            let mut du = vec![0.0f64; ch];
            for c in 0..ch {
                let plane = n * ch + c;
                let (_, _, u) = plane_stats(stats, planes, plane);
                let (gamma, alpha, _) = modulation(d, levels, embed, n, c);
                let [sg, sgx] = sums[plane];
                du[c] = gamma as f64 * alpha as f64 * sg;
                if let Some(k) = level_row(levels[n], d.n_classes) {
                    let row = &mut dembed[k * 3 * ch..][..3 * ch];
                    row[c] += (sgx + alpha as f64 * u as f64 * sg) as f32;
                    row[ch + c] += (gamma as f64 * u as f64 * sg) as f32;
                    row[2 * ch + c] += sg as f32;
                }
            }
            let mean_du = du.iter().sum::<f64>() / ch as f64;
            let sum_duu: f64 = (0..ch)
                .map(|c| du[c] * stats[2 * planes + n * ch + c] as f64)
                .sum();
            for c in 0..ch {
                let u = stats[2 * planes + n * ch + c] as f64;
                dmu[n * ch + c] = s * (du[c] - mean_du) - s * u * sum_duu / (ch as f64 - 1.0);
            }
        }
        let workers = batch_workers(planes, 8 * d.hw);
        for_each_item_chunk(dx, d.hw, workers, |first, dxs| {
            for (i, out) in dxs.chunks_mut(d.hw).enumerate() {
                let plane = first + i;
                let (mu, r, _) = plane_stats(stats, planes, plane);
                let (gamma, _, _) = modulation(d, levels, embed, plane / ch, plane % ch);
                let [sg, sgx] = sums[plane];
                let (mean_g, mean_gx) = (sg / hw, sgx / hw);
                let xp = &x[plane * d.hw..][..d.hw];
                let gp = &dy[plane * d.hw..][..d.hw];
                for ((o, &v), &g) in out.iter_mut().zip(xp).zip(gp) {
                    let xhat = ((v - mu) * r) as f64;
                    let val = r as f64 * gamma as f64 * (g as f64 - mean_g - xhat * mean_gx)
                        + dmu[plane] / hw;
                    *o = val as f32;
                }
            }
        });
    }
}
