//! Every launch is checked against the kernel's CUDA signature (build.rs reads it from
//! kernels/*.cu): a wrong count, a wrong scalar type, a const buffer for a written parameter or an
//! unknown kernel is an error before anything runs, on every kernel device. Launches are counted
//! (what `dml bench` reports per network forward).
mod common;

use common::*;
use dalemeetslangevin::bench;
use dalemeetslangevin::device::launch::{
    check_arguments, launch, launches_on_this_thread, signature, KernelArg, LaunchGeometry,
    ParamType,
};
use dalemeetslangevin::device::EmuSchedule;
use dalemeetslangevin::nn::{ConvPrecision, Preset};
use dalemeetslangevin::{ops, Device, Error, Tensor};

#[test]
fn the_signature_table_is_read_from_the_kernel_source() {
    let sig = signature("add_f32").unwrap();
    let types: Vec<ParamType> = sig.params.iter().map(|(_, t)| *t).collect();
    assert_eq!(
        types,
        [
            ParamType::ConstF32Ptr,
            ParamType::ConstF32Ptr,
            ParamType::MutF32Ptr,
            ParamType::F32,
            ParamType::F32,
            ParamType::U64
        ]
    );
    assert_eq!(sig.params[2].0, "out");
    let words = signature("philox_bits_u32").unwrap();
    assert_eq!(words.params[0].1, ParamType::MutU32Ptr);
    assert!(matches!(
        signature("no_such_kernel"),
        Err(Error::UnknownKernel(_))
    ));
}

/// `add_f32(const float* a, const float* b, float* out, float alpha, float beta, uint64_t n)`,
/// called wrongly in each way the check knows, then rightly.
#[test]
fn wrong_launches_are_errors_before_the_kernel_runs() {
    for dev in kernel_devices("wrong_launches") {
        let a = Tensor::from_slice(&[1.0, 2.0, 3.0], &[3], &dev).unwrap();
        let b = Tensor::from_slice(&[4.0, 5.0, 6.0], &[3], &dev).unwrap();
        let mut out = Tensor::from_slice(&[7.0; 3], &[3], &dev).unwrap();
        let g = LaunchGeometry::elementwise(3);
        let expect = |args: &mut [KernelArg<'_>], says: &str| {
            let err = launch(&dev, "add_f32", g, args).unwrap_err();
            assert!(
                matches!(err, Error::KernelArguments { .. }) && err.to_string().contains(says),
                "on {dev}: {err}"
            );
        };
        // One argument short.
        expect(
            &mut [
                KernelArg::In(a.buffer()),
                KernelArg::In(b.buffer()),
                KernelArg::Out(out.buffer_mut()),
                KernelArg::F32(1.0),
                KernelArg::F32(1.0),
            ],
            "5 arguments given, the kernel takes 6",
        );
        // n as a 32-bit value where the kernel reads 64 bits.
        expect(
            &mut [
                KernelArg::In(a.buffer()),
                KernelArg::In(b.buffer()),
                KernelArg::Out(out.buffer_mut()),
                KernelArg::F32(1.0),
                KernelArg::F32(1.0),
                KernelArg::U32(3),
            ],
            "argument 5 (`n`) is uint64_t, given uint32_t",
        );
        // The output passed read-only.
        expect(
            &mut [
                KernelArg::In(a.buffer()),
                KernelArg::In(b.buffer()),
                KernelArg::In(a.buffer()),
                KernelArg::F32(1.0),
                KernelArg::F32(1.0),
                KernelArg::U64(3),
            ],
            "argument 2 (`out`) is float*, given const float*",
        );
        // Nothing was written by the refused launches; the right one runs.
        assert_eq!(out.to_vec().unwrap(), [7.0; 3], "on {dev}");
        launch(
            &dev,
            "add_f32",
            g,
            &mut [
                KernelArg::In(a.buffer()),
                KernelArg::In(b.buffer()),
                KernelArg::Out(out.buffer_mut()),
                KernelArg::F32(1.0),
                KernelArg::F32(2.0),
                KernelArg::U64(3),
            ],
        )
        .unwrap();
        assert_eq!(out.to_vec().unwrap(), [9.0, 12.0, 15.0], "on {dev}");
        assert!(matches!(
            launch(&dev, "no_such_kernel", g, &mut []),
            Err(Error::UnknownKernel(_))
        ));
    }
}

#[test]
fn memory_of_another_backend_is_refused() {
    let host = Tensor::from_slice(&[1.0], &[1], &Device::Cpu).unwrap();
    let mut out = Tensor::from_slice(&[0.0], &[1], &Device::Cpu).unwrap();
    let args = [
        KernelArg::In(host.buffer()),
        KernelArg::Out(out.buffer_mut()),
        KernelArg::U64(1),
    ];
    check_arguments("copy_f32", &args).unwrap();
    for dev in kernel_devices("other_backend") {
        if dev.is_host() {
            continue;
        }
        let mut args = [
            KernelArg::In(host.buffer()),
            KernelArg::Out(out.buffer_mut()),
            KernelArg::U64(1),
        ];
        let err = launch(&dev, "copy_f32", LaunchGeometry::elementwise(1), &mut args).unwrap_err();
        assert!(err.to_string().contains("another backend"), "{err}");
    }
}

#[test]
fn launches_are_counted_per_thread_one_per_kernel() {
    let emu = Device::Emu(EmuSchedule::Forward);
    let x = Tensor::from_vec(vec![-1.0, 0.5, 2.0], &[3], &emu).unwrap();
    let before = launches_on_this_thread();
    ops::elu(&x).unwrap();
    assert_eq!(launches_on_this_thread() - before, 1, "one kernel on emu");
    // The cpu runs the Rust reference: no launch. Another thread's launches are its own.
    let host = x.to_device(&Device::Cpu).unwrap();
    let before = launches_on_this_thread();
    ops::elu(&host).unwrap();
    std::thread::spawn(move || ops::elu(&x).map(drop))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(launches_on_this_thread(), before);
}

#[test]
fn a_network_forward_launches_the_same_kernels_at_any_preset_width() {
    // tiny and paper share their topology; the count is what `dml bench` reports. Each CIN++
    // forward is one launch, with its ELU when one follows, and each convolution that a residual
    // sum follows directly adds it in its epilogue (172 launches; 201 with the sums apart, 272
    // with the norm's statistics in a launch of their own too, 329 without the ELU fused either).
    let emu = Device::Emu(EmuSchedule::Forward);
    let fp32 = ConvPrecision::Fp32;
    let tiny = bench::launch_counts(Preset::Tiny, fp32, &emu).unwrap();
    let paper = bench::launch_counts(Preset::Paper, fp32, &emu).unwrap();
    assert_eq!(tiny, paper);
    assert!(
        tiny.forward > 100 && tiny.forward < 201,
        "{} launches per forward",
        tiny.forward
    );
    // A sampler step replayed from its graph is one launch (docs/DESIGN.md section 10).
    assert_eq!(tiny.replayed_step, 1);
    assert!(bench::launch_counts(Preset::Tiny, fp32, &Device::Cpu).is_err());
    // tiny's 8-16 channels take no channel-slice convolution, so tf32 launches the same kernels.
    let tf32 = ConvPrecision::Tf32;
    assert_eq!(
        bench::launch_counts(Preset::Tiny, tf32, &emu).unwrap(),
        tiny
    );
}

#[test]
fn a_channel_slice_convolution_reorders_its_weights_once_until_they_change() {
    // A convolution whose input channels are a multiple of 32 runs its channel-slice form in
    // tf32 or bf16 (kernels/conv.cu), which first reorders the weights (one launch). The reordered
    // copy is kept with the weight tensor until its data changes: a second call launches only the
    // convolution, and one after a write to the weights reorders again and uses the new values.
    let emu = Device::Emu(EmuSchedule::Forward);
    let mut rng = test_rng("reorder_once");
    let x = Tensor::from_slice(
        &random_vec(&mut rng, 32 * 16, -1.0, 1.0),
        &[1, 32, 4, 4],
        &emu,
    )
    .unwrap();
    let values = random_vec(&mut rng, 8 * 32 * 9, -1.0, 1.0);
    let counted = |w: &Tensor, x: &Tensor, precision: ConvPrecision| {
        let cfg = ops::conv::Conv2dCfg::same(3, 1).with_precision(precision);
        let before = launches_on_this_thread();
        let y = ops::conv::conv2d(x, w, None, cfg).unwrap();
        (launches_on_this_thread() - before, y.to_vec().unwrap())
    };
    let w = Tensor::from_slice(&values, &[8, 32, 3, 3], &emu).unwrap();
    assert_eq!(counted(&w, &x, ConvPrecision::Fp32).0, 1);
    for precision in [ConvPrecision::Tf32, ConvPrecision::Bf16] {
        let mut w = Tensor::from_slice(&values, &[8, 32, 3, 3], &emu).unwrap();
        let (first, y1) = counted(&w, &x, precision);
        let (second, y2) = counted(&w, &x, precision);
        assert_eq!((first, second), (2, 1), "{precision}");
        assert_eq!(y1, y2, "{precision}");
        // A write through the tensor (an optimiser step's way) drops the reordered copy.
        w.host_mut().unwrap().iter_mut().for_each(|v| *v *= -2.0);
        let (third, y3) = counted(&w, &x, precision);
        assert_eq!(third, 2, "{precision}");
        let w_cpu = w.to_device(&Device::Cpu).unwrap();
        let x_cpu = x.to_device(&Device::Cpu).unwrap();
        let (_, want) = counted(&w_cpu, &x_cpu, precision);
        for (i, (g, r)) in y3.iter().zip(&want).enumerate() {
            assert!(
                (g - r).abs() <= 1e-3 * (1.0 + r.abs()),
                "{precision} element {i}: {g} vs {r}"
            );
        }
        // Too few input channels for the channel-slice form: the general kernel alone.
        let narrow = Tensor::zeros(&[1, 3, 4, 4], &emu).unwrap();
        let w3 = Tensor::zeros(&[8, 3, 3, 3], &emu).unwrap();
        assert_eq!(counted(&w3, &narrow, precision).0, 1, "{precision}");
    }
}
