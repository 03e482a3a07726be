//! Noise schedules (SPEC section 2): closed forms, shapes, validation, metadata round trip.
use dalemeetslangevin::diffusion::additive::NoiseLevels;
use dalemeetslangevin::diffusion::{Drift, Schedule, SigmaShape};

#[test]
fn constant_schedule_matches_closed_form() {
    let (n, sigma, mu) = (50usize, 0.8f64, 0.5f64);
    let s =
        Schedule::with_drift(SigmaShape::Constant, n, sigma, sigma, Drift::Constant(mu)).unwrap();
    let delta = 1.0 / n as f64;
    for k in 0..n {
        let m_k = k as f64 * delta * (mu - sigma * sigma / 2.0);
        let s_k = (k as f64 * delta * sigma * sigma).sqrt();
        assert!((s.m(k) as f64 - m_k).abs() < 1e-6, "m_{k}");
        assert!((s.s(k) as f64 - s_k).abs() < 1e-6, "s_{k}");
    }
    // The paper's default drift mu = sigma^2/2 gives m_k = 0.
    let paper = Schedule::paper_default();
    assert!((0..paper.n_levels()).all(|k| paper.m(k) == 0.0));
    assert_eq!(paper.n_levels(), 1000);
    assert!((paper.s(999) as f64 - (0.64f64 * 0.999).sqrt()).abs() < 1e-5);
}

#[test]
fn shapes_run_from_sigma_min_to_sigma_max_monotonically() {
    for shape in [
        SigmaShape::Geometric,
        SigmaShape::Sigmoid,
        SigmaShape::Cosine,
    ] {
        assert!(
            (shape.value(0.0, 0.1, 2.0) - 0.1).abs() < 1e-12,
            "{shape:?} at 0"
        );
        assert!(
            (shape.value(1.0, 0.1, 2.0) - 2.0).abs() < 1e-12,
            "{shape:?} at 1"
        );
        let s = Schedule::new(shape, 100, 0.1, 2.0).unwrap();
        for k in 1..100 {
            assert!(
                s.sigma(k) > s.sigma(k - 1),
                "{shape:?} not increasing at {k}"
            );
            // s_k^2 accumulates sigma_i^2 delta.
            let want = (s.s(k - 1) as f64).powi(2) + (s.sigma(k - 1) as f64).powi(2) / 100.0;
            assert!(((s.s(k) as f64).powi(2) - want).abs() < 1e-5);
        }
    }
    // Geometric midpoint is the geometric mean.
    assert!((SigmaShape::Geometric.value(0.5, 0.01, 1.0) - 0.1).abs() < 1e-12);
}

#[test]
fn invalid_schedules_are_errors_not_panics() {
    assert!(Schedule::constant(0, 0.8).is_err());
    assert!(Schedule::constant(1, 0.8).is_err());
    assert!(Schedule::constant(10, 0.0).is_err());
    assert!(Schedule::constant(10, -1.0).is_err());
    assert!(Schedule::constant(10, f64::NAN).is_err());
    assert!(Schedule::new(SigmaShape::Geometric, 10, 2.0, 1.0).is_err());
    assert!(SigmaShape::parse("linear").is_err());
    assert!(Drift::parse("constant:abc").is_err());
    assert!(NoiseLevels::new(SigmaShape::Geometric, 0, 1.0, 0.01).is_err());
    assert!(NoiseLevels::new(SigmaShape::Geometric, 10, 0.01, 1.0).is_err());
    let err = Schedule::constant(10, 0.8)
        .unwrap()
        .check_level(10, "test")
        .unwrap_err();
    assert!(err.to_string().contains("level 10"), "{err}");
}

#[test]
fn schedules_round_trip_through_metadata() {
    for drift in [
        Drift::HalfSigmaSquared,
        Drift::Constant(0.3),
        Drift::SigmaSquaredTimes(1.5),
    ] {
        let s = Schedule::with_drift(SigmaShape::Cosine, 37, 0.05, 1.3, drift).unwrap();
        let back = Schedule::from_describe(&s.describe()).unwrap();
        assert_eq!(back, s);
    }
    let mut pairs = Schedule::paper_default().describe();
    pairs.retain(|(k, _)| k != "schedule.levels");
    assert!(Schedule::from_describe(&pairs).is_err());

    let levels = NoiseLevels::new(SigmaShape::Sigmoid, 7, 2.0, 0.1).unwrap();
    assert_eq!(
        NoiseLevels::from_describe(&levels.describe()).unwrap(),
        levels
    );
}

#[test]
fn additive_levels_decrease_from_sigma_max_to_sigma_min() {
    let d = NoiseLevels::paper_default();
    assert_eq!(d.len(), 10);
    assert!((d.sigma(0) - 1.0).abs() < 1e-6 && (d.sigma(9) - 0.01).abs() < 1e-7);
    let ratio = d.sigma(1) / d.sigma(0);
    for i in 1..10 {
        assert!(
            (d.sigma(i) / d.sigma(i - 1) - ratio).abs() < 1e-4,
            "geometric at {i}"
        );
    }
    for shape in [SigmaShape::Sigmoid, SigmaShape::Cosine] {
        let l = NoiseLevels::new(shape, 10, 1.0, 0.01).unwrap();
        assert!((l.sigma(0) - 1.0).abs() < 1e-6 && (l.sigma(9) - 0.01).abs() < 1e-6);
        assert!(l.sigmas().windows(2).all(|w| w[1] < w[0]), "{shape:?}");
    }
}

#[test]
fn a_schedule_beyond_the_f32_range_is_refused_naming_sigma_max() {
    let err = Schedule::new(SigmaShape::Constant, 1000, 100.0, 100.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--sigma-max"), "{err}");
    // The paper's sigma = 0.8 and a wide geometric schedule are well inside.
    Schedule::new(SigmaShape::Constant, 1000, 0.8, 0.8).unwrap();
    Schedule::new(SigmaShape::Geometric, 1000, 0.01, 5.0).unwrap();
}
