//! Philox4x32-10 is bit-identical on every backend, and the normals agree to rounding
//! (SPEC section 5).
mod common;

use common::*;
use dalemeetslangevin::ops::PhiloxDraw;
use dalemeetslangevin::{ops, rng, Device};

#[test]
fn philox_words_are_bit_identical_across_backends() {
    for dev in kernel_devices("philox") {
        for &(seed, stream, step) in &[
            (0u64, 0u32, 0u32),
            (u64::MAX, 7, 123_456),
            (0xDEAD_BEEF_0042, 3, 1),
        ] {
            let n = 1031;
            let want =
                ops::philox_words(n, PhiloxDraw::new(seed, stream, step), &Device::Cpu).unwrap();
            let got = ops::philox_words(n, PhiloxDraw::new(seed, stream, step), &dev).unwrap();
            assert_eq!(got, want, "philox words on {dev} for seed {seed}");
        }
    }
}

#[test]
fn philox_kernel_reproduces_known_answer() {
    // Counter (0,0,0,0), key (0,0): the first Random123 known-answer vector, through the kernel.
    for dev in kernel_devices("philox-kat") {
        let words = ops::philox_words(1, PhiloxDraw::new(0, 0, 0), &dev).unwrap();
        assert_eq!(
            words,
            vec![0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
            "on {dev}"
        );
    }
}

#[test]
fn normals_agree_across_backends() {
    for dev in kernel_devices("normal") {
        let shape = [3, 5, 67];
        let want = ops::normal(&shape, PhiloxDraw::new(42, 1, 9), &Device::Cpu)
            .unwrap()
            .to_vec()
            .unwrap();
        let got = ops::normal(&shape, PhiloxDraw::new(42, 1, 9), &dev)
            .unwrap()
            .to_vec()
            .unwrap();
        assert_close(&format!("normals on {dev}"), &got, &want, 1e-5, 1e-5);
        assert_eq!(want[17], rng::normal(42, 1, 9, 17));
    }
}
