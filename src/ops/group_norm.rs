//! Group normalisation (kernels/group_norm.cu): PyTorch's `nn.GroupNorm(G, C, eps)` with its
//! affine weight and bias, the normalisation of the DDPM++ score network (docs/SPEC.md section
//! 11), which uses `GroupNorm(min(C/4, 32), C, eps=1e-6)`. For x of shape [B, C, ...] (the
//! trailing dimensions, P values per channel, are the plane) and G groups of C/G consecutive
//! channels, over each group (b, g) of n = (C/G) P values:
//!
//! ```text
//! mean = mean(x)      rstd = 1/sqrt(var(x) + eps)      (biased variance, as PyTorch)
//! y = (x - mean) rstd weight[c] + bias[c]
//! ```
//!
//! The backward pass gives dx, dweight and dbias (the kernel file has the formulas); every sum
//! runs in a fixed order on every backend, so results are deterministic.
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::launch::{check_same_device, launch, Arg, LaunchGeometry};
use crate::ops::norm::NORM_THREADS;
use crate::tensor::Tensor;

/// Threads per group or plane block in kernels/group_norm.cu: a multiple of 32. The CIN++
/// kernels' block size, one of the sizes whose occupancy `dml info --kernels` reports.
pub const GROUP_NORM_THREADS: u32 = NORM_THREADS;

/// What the backward pass needs from the forward: per group (b, g) the mean and the reciprocal
/// standard deviation, as a [2, B*G] tensor, and the number of groups.
pub struct GroupNormSaved {
    pub stats: Tensor,
    pub groups: usize,
}

#[derive(Clone, Copy, Debug)]
struct GroupDims {
    batch: usize,
    channels: usize,
    groups: usize,
    /// Values per channel: the product of the trailing dimensions.
    hw: usize,
}

impl GroupDims {
    fn per_group(&self) -> usize {
        self.channels / self.groups
    }
    /// Values per group.
    fn group_len(&self) -> usize {
        self.per_group() * self.hw
    }
    fn n_groups(&self) -> usize {
        self.batch * self.groups
    }
    fn planes(&self) -> usize {
        self.batch * self.channels
    }
    fn args(&self) -> [Arg<'static>; 4] {
        [self.batch, self.channels, self.groups, self.hw].map(|v| Arg::I32(v as i32))
    }
    /// One block per item; one block, which returns at once, for an empty batch.
    fn blocks(items: usize) -> LaunchGeometry {
        LaunchGeometry::new([items.max(1) as u32, 1, 1], [GROUP_NORM_THREADS, 1, 1], 0)
    }
}

/// The dimensions of `x` [B, C, ...] split into `groups` groups.
fn dims(x: &Tensor, groups: usize, op: &'static str) -> Result<GroupDims> {
    let shape = x.shape();
    let &[batch, channels, ref plane @ ..] = shape else {
        return Err(Error::shape(
            op,
            format!("input {shape:?} is not [B, C, ...]"),
        ));
    };
    let hw = plane.iter().product::<usize>();
    if channels == 0 || hw == 0 {
        return Err(Error::shape(
            op,
            format!("input {shape:?} has no channels or empty planes to normalise"),
        ));
    }
    if groups == 0 || channels % groups != 0 {
        return Err(Error::shape(
            op,
            format!("{groups} groups do not divide the {channels} channels of input {shape:?}"),
        ));
    }
    let d = GroupDims {
        batch,
        channels,
        groups,
        hw,
    };
    if x.numel() >= i32::MAX as usize {
        return Err(Error::invalid(format!(
            "{op}: {d:?} too large for 32-bit indexing"
        )));
    }
    Ok(d)
}

/// An error unless the per-channel parameter `t` (`name`) is [C].
fn check_channel_param(t: &Tensor, name: &str, d: &GroupDims, op: &'static str) -> Result<()> {
    if t.shape() == [d.channels] {
        return Ok(());
    }
    Err(Error::shape(
        op,
        format!(
            "{name} {:?} for {} channels (want [{}])",
            t.shape(),
            d.channels,
            d.channels
        ),
    ))
}

/// The forward pass: the output and what the backward pass needs. `x` is [B, C, ...], `weight`
/// and `bias` are [C], `groups` divides C, `eps` is finite and not negative.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f32,
) -> Result<(Tensor, GroupNormSaved)> {
    let op = "group_norm";
    let d = dims(x, groups, op)?;
    check_channel_param(weight, "weight", &d, op)?;
    check_channel_param(bias, "bias", &d, op)?;
    check_same_device(&[x, weight, bias], op)?;
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::invalid(format!(
            "{op}: eps {eps} is not a finite number >= 0"
        )));
    }
    let mut y = Tensor::uninit(x.shape(), x.device())?;
    let mut stats = Tensor::uninit(&[2, d.n_groups()], x.device())?;
    match x.device() {
        Device::Cpu => cpu::forward(
            &d,
            [x.host()?, weight.host()?, bias.host()?],
            eps,
            stats.host_mut()?,
            y.host_mut()?,
        ),
        dev => {
            let mut args = vec![
                Arg::In(x),
                Arg::In(weight),
                Arg::In(bias),
                Arg::Out(&mut stats),
                Arg::Out(&mut y),
                Arg::F32(eps),
            ];
            args.extend(d.args());
            launch(
                dev,
                "group_norm_forward_f32",
                GroupDims::blocks(d.n_groups()),
                &mut args,
            )?;
        }
    }
    Ok((y, GroupNormSaved { stats, groups }))
}

/// The backward pass: (dx, dweight, dbias) from the output gradient `dy`, the forward's input
/// and weight, and what it saved.
pub fn group_norm_backward(
    dy: &Tensor,
    x: &Tensor,
    weight: &Tensor,
    saved: &GroupNormSaved,
) -> Result<(Tensor, Tensor, Tensor)> {
    let op = "group_norm_backward";
    let d = dims(x, saved.groups, op)?;
    check_channel_param(weight, "weight", &d, op)?;
    dy.check_same_shape(x, op)?;
    check_same_device(&[x, dy, weight, &saved.stats], op)?;
    if saved.stats.shape() != [2, d.n_groups()] {
        return Err(Error::shape(
            op,
            format!(
                "saved statistics {:?} for input {:?} in {} groups",
                saved.stats.shape(),
                x.shape(),
                d.groups
            ),
        ));
    }
    let dev = x.device();
    let mut dx = Tensor::uninit(x.shape(), dev)?;
    let mut dweight = Tensor::uninit(&[d.channels], dev)?;
    let mut dbias = Tensor::uninit(&[d.channels], dev)?;
    match dev {
        Device::Cpu => cpu::backward(
            &d,
            [dy.host()?, x.host()?, weight.host()?, saved.stats.host()?],
            dx.host_mut()?,
            dweight.host_mut()?,
            dbias.host_mut()?,
        ),
        dev => {
            let mut plane_sums = Tensor::uninit(&[2, d.planes()], dev)?;
            let mut args = vec![
                Arg::In(x),
                Arg::In(dy),
                Arg::In(&saved.stats),
                Arg::Out(&mut plane_sums),
            ];
            args.extend(d.args());
            let per_plane = GroupDims::blocks(d.planes());
            launch(dev, "group_norm_backward_sums_f32", per_plane, &mut args)?;
            let mut args = vec![
                Arg::In(x),
                Arg::In(dy),
                Arg::In(weight),
                Arg::In(&saved.stats),
                Arg::In(&plane_sums),
                Arg::Out(&mut dx),
            ];
            args.extend(d.args());
            launch(dev, "group_norm_backward_input_f32", per_plane, &mut args)?;
            launch(
                dev,
                "group_norm_param_grad_f32",
                LaunchGeometry::elementwise(d.channels),
                &mut [
                    Arg::In(&plane_sums),
                    Arg::Out(&mut dweight),
                    Arg::Out(&mut dbias),
                    Arg::I32(d.batch as i32),
                    Arg::I32(d.channels as i32),
                ],
            )?;
        }
    }
    Ok((dx, dweight, dbias))
}

/// The cpu reference: statistics and gradient sums accumulated in f64 (so the reference stays
/// accurate for groups of many values), the per-element arithmetic in f32 as the kernels do it.
/// Groups and planes are spread over threads; each one's value does not depend on how.
mod cpu {
    use super::*;
    use crate::ops::cpu_parallel::{batch_workers, for_each_item_chunk};
    use crate::ops::cpu_sum::{lane_sum, lane_sum_of};

    /// Inputs in order: x, weight, bias.
    pub(super) fn forward(
        d: &GroupDims,
        [x, weight, bias]: [&[f32]; 3],
        eps: f32,
        stats: &mut [f32],
        y: &mut [f32],
    ) {
        let (n, n_groups) = (d.group_len(), d.n_groups());
        let mut moments = vec![[0.0f32; 2]; n_groups];
        let workers = batch_workers(n_groups, 3 * n);
        for_each_item_chunk(&mut moments, 1, workers, |first, part| {
            for (i, m) in part.iter_mut().enumerate() {
                let xg = &x[(first + i) * n..][..n];
                // The mean first, then the squared deviations from it (no cancellation).
                let mean = lane_sum_of(xg, |v| v as f64) / n as f64;
                let var = lane_sum_of(xg, |v| (v as f64 - mean).powi(2)) / n as f64;
                *m = [mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32];
            }
        });
        for (group, [mean, rstd]) in moments.iter().enumerate() {
            stats[group] = *mean;
            stats[n_groups + group] = *rstd;
        }
        let workers = batch_workers(n_groups, 4 * n);
        for_each_item_chunk(y, n, workers, |first, ys| {
            for (i, yg) in ys.chunks_mut(n).enumerate() {
                let group = first + i;
                let [mean, rstd] = moments[group];
                let first_channel = (group % d.groups) * d.per_group();
                let xg = &x[group * n..][..n];
                for (k, (yc, xc)) in yg.chunks_mut(d.hw).zip(xg.chunks(d.hw)).enumerate() {
                    let (w, b) = (weight[first_channel + k], bias[first_channel + k]);
                    for (o, &v) in yc.iter_mut().zip(xc) {
                        *o = (v - mean) * rstd * w + b;
                    }
                }
            }
        });
    }

    /// Inputs in order: dy, x, weight, stats. Per plane sum(dy) and sum(dy xhat); from them the
    /// group means of g' = dy weight and g' xhat, dx, and dweight, dbias (the planes of a
    /// channel added in sample order).
    pub(super) fn backward(
        d: &GroupDims,
        [dy, x, weight, stats]: [&[f32]; 4],
        dx: &mut [f32],
        dweight: &mut [f32],
        dbias: &mut [f32],
    ) {
        let (hw, planes, n_groups) = (d.hw, d.planes(), d.n_groups());
        let group_stats = |plane: usize| {
            let group = plane / d.per_group();
            (stats[group], stats[n_groups + group])
        };
        let mut plane_sums = vec![[0.0f64; 2]; planes];
        let workers = batch_workers(planes, 4 * hw);
        for_each_item_chunk(&mut plane_sums, 1, workers, |first, part| {
            for (i, sums) in part.iter_mut().enumerate() {
                let plane = first + i;
                let (mean, rstd) = group_stats(plane);
                let (gp, xp) = (&dy[plane * hw..][..hw], &x[plane * hw..][..hw]);
                sums[0] = lane_sum_of(gp, |g| g as f64);
                sums[1] = lane_sum(gp, xp, |g, v| g as f64 * ((v - mean) * rstd) as f64);
            }
        });
        // Per group: mean(g') and mean(g' xhat).
        let n = d.group_len() as f64;
        let group_means: Vec<[f64; 2]> = plane_sums
            .chunks(d.per_group())
            .enumerate()
            .map(|(group, sums)| {
                let first_channel = (group % d.groups) * d.per_group();
                let mut acc = [0.0f64; 2];
                for (k, [sg, sgx]) in sums.iter().enumerate() {
                    let w = weight[first_channel + k] as f64;
                    acc[0] += w * sg;
                    acc[1] += w * sgx;
                }
                acc.map(|a| a / n)
            })
            .collect();
        let workers = batch_workers(planes, 6 * hw);
        for_each_item_chunk(dx, hw, workers, |first, dxs| {
            for (i, out) in dxs.chunks_mut(hw).enumerate() {
                let plane = first + i;
                let (mean, rstd) = group_stats(plane);
                let [mean_g, mean_gx] = group_means[plane / d.per_group()];
                let w = weight[plane % d.channels] as f64;
                let (gp, xp) = (&dy[plane * hw..][..hw], &x[plane * hw..][..hw]);
                for ((o, &g), &v) in out.iter_mut().zip(gp).zip(xp) {
                    let xhat = ((v - mean) * rstd) as f64;
                    *o = (rstd as f64 * (g as f64 * w - mean_g - xhat * mean_gx)) as f32;
                }
            }
        });
        for c in 0..d.channels {
            let mut acc = [0.0f64; 2];
            for b in 0..d.batch {
                let [sg, sgx] = plane_sums[b * d.channels + c];
                acc[0] += sg;
                acc[1] += sgx;
            }
            dbias[c] = acc[0] as f32;
            dweight[c] = acc[1] as f32;
        }
    }
}
