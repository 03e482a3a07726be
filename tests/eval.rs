//! Evaluation (SPEC section 10): the engine's classifier, the report, and `dml eval` end to end.
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::gradcheck::check_gradients;
use dalemeetslangevin::checkpoint::Checkpoint;
use dalemeetslangevin::data::{Dataset, PixelRange, Split};
use dalemeetslangevin::eval::{
    evaluate, fixed_subset, Classifier, ClassifierSpec, ClassifierTraining, CopyTest, EvalOptions,
    Samples, EVAL_CSV_HEADER,
};
use dalemeetslangevin::nn::{Conv2dCfg, PoolCfg};
use dalemeetslangevin::{Device, Tensor};

fn range() -> PixelRange {
    PixelRange::new(1.0, 2.0).unwrap()
}

fn shapes(split: Split) -> Dataset {
    Dataset::load("shapes", split).unwrap()
}

fn train_classifier(steps: u64) -> Classifier {
    let train = shapes(Split::Train);
    let training = ClassifierTraining {
        steps,
        batch: 32,
        ..ClassifierTraining::default()
    };
    let spec = ClassifierSpec::for_dataset(&train, range());
    Classifier::train(spec, &train, training, &Device::Cpu, &mut |_, _| {}).unwrap()
}

/// The classifier's fully connected layers are convolutions whose kernel covers the whole
/// (non-square) input map, then a 1x1 convolution: the tape's gradients through that graph, with
/// ELU and mean-pooling before it, against finite differences.
#[test]
fn fully_connected_as_whole_map_convolution_gradients() {
    let mut rng = common::test_rng("fully_connected_gradcheck");
    let (b, c, h, w, f, k) = (2, 3, 6, 4, 5, 4);
    let inputs = [
        (
            common::random_vec(&mut rng, b * c * h * w, -1.0, 1.0),
            vec![b, c, h, w],
        ),
        (
            common::random_vec(&mut rng, f * c * (h / 2) * (w / 2), -0.5, 0.5),
            vec![f, c, h / 2, w / 2],
        ),
        (common::random_vec(&mut rng, f, -0.5, 0.5), vec![f]),
        (
            common::random_vec(&mut rng, k * f, -0.5, 0.5),
            vec![k, f, 1, 1],
        ),
    ];
    check_gradients(
        "fully connected",
        &mut rng,
        &inputs,
        1e-2,
        1e-2,
        &move |t, v| {
            let x = t.elu(&v[0])?;
            let x = t.avg_pool2d(&x, PoolCfg::MEAN_POOL_2X2)?;
            let features = t.conv2d(&x, &v[1], Some(&v[2]), Conv2dCfg::default())?;
            assert_eq!(features.shape(), [b, f, 1, 1]);
            let features = t.elu(&features)?;
            t.conv2d(&features, &v[3], None, Conv2dCfg::default())
        },
    );
}

#[test]
fn classifier_learns_the_shapes() {
    let classifier = train_classifier(150);
    let accuracy = classifier.accuracy(&shapes(Split::Test), 1000).unwrap();
    // Five balanced classes: chance is 20%.
    assert!(accuracy > 0.6, "test accuracy {accuracy}");
}

#[test]
fn training_is_deterministic_and_save_load_keeps_the_features() {
    let a = train_classifier(3);
    let b = train_classifier(3);
    let images = shapes(Split::Test).images_in_range(&[0, 1, 2, 3], range());
    let features = a.features(&images).unwrap();
    assert_eq!(
        features,
        b.features(&images).unwrap(),
        "same seed, same classifier"
    );
    assert_eq!(features.len(), 4 * a.spec.feature_dim);

    let dir = common::tempdir("classifier-round-trip");
    let path = dir.join("classifier.safetensors");
    let mut a = a;
    a.test_accuracy = Some(0.625);
    a.save(&path).unwrap();
    let loaded = Classifier::load(&path, &Device::Cpu).unwrap();
    assert_eq!(loaded.spec, a.spec);
    assert_eq!(loaded.test_accuracy, Some(0.625));
    assert_eq!(loaded.steps, 3);
    assert_eq!(loaded.features(&images).unwrap(), features);
}

#[test]
fn a_classifier_for_other_data_is_an_error() {
    let classifier = Classifier::new(
        ClassifierSpec::for_dataset(&shapes(Split::Test), range()),
        &Device::Cpu,
        0,
    )
    .unwrap();
    let fashion = Dataset {
        name: "fashion-mnist".into(),
        ..shapes(Split::Test)
    };
    classifier
        .spec
        .check_matches(&fashion, range())
        .expect("the same content under another name is the same data");
    let mut other = shapes(Split::Test);
    other.images[0] ^= 1;
    let err = classifier
        .spec
        .check_matches(&other, range())
        .unwrap_err()
        .to_string();
    assert!(err.contains("'shapes'") && err.contains("content"), "{err}");
    assert!(classifier
        .spec
        .check_matches(&shapes(Split::Train), range())
        .is_err());
    assert!(classifier
        .spec
        .check_matches(&shapes(Split::Test), PixelRange::new(1.0, 3.0).unwrap())
        .is_err());
    classifier
        .spec
        .check_matches(&shapes(Split::Test), range())
        .unwrap();

    let colour = Dataset {
        name: "colour".into(),
        images: vec![0; 2 * 3 * 32 * 32],
        labels: vec![0, 1],
        n: 2,
        channels: 3,
        height: 32,
        width: 32,
        n_classes: 5,
    };
    let err = classifier.accuracy(&colour, 2).unwrap_err().to_string();
    assert!(err.contains("colour"), "{err}");

    let dir = common::tempdir("classifier-foreign");
    let foreign = dir.join("foreign.safetensors");
    let mut ckpt = Checkpoint::new();
    ckpt.put_tensor(
        "x",
        &Tensor::from_vec(vec![1.0], &[1], &Device::Cpu).unwrap(),
    )
    .unwrap();
    ckpt.save(&foreign).unwrap();
    let err = Classifier::load(&foreign, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a dml classifier"), "{err}");
}

#[test]
fn evaluate_separates_real_from_shifted_images() {
    let classifier = train_classifier(20);
    let train = shapes(Split::Train).truncated(500);
    let test = shapes(Split::Test).truncated(200);
    let options = EvalOptions {
        max_reference: 200,
        neighbours: 2,
    };
    let all_test: Vec<usize> = (0..test.n).collect();
    let real = test.images_in_range(&all_test, range());
    let run = |images: &[f32]| {
        let samples = Samples {
            images,
            sign_changes: Some(7),
        };
        evaluate(&samples, &train, &test, &classifier, &options).unwrap()
    };

    // The samples are the reference itself.
    let same = run(&real);
    assert_eq!((same.n_samples, same.n_reference), (200, 200));
    assert!(same.frechet.abs() < 1e-6, "Frechet {}", same.frechet);
    assert!(same.kid.abs() < 0.05, "KID {}", same.kid);
    assert_eq!(same.sampler_sign_changes, Some(7));
    assert_eq!(same.nonpositive_fraction, 0.0);
    // The same images in the same classes as the reference.
    assert_eq!(same.class_balance_tv, 0.0);
    assert!((same.class_fractions.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert!(same.floor_class_balance_tv > 0.0 && same.floor_class_balance_tv < 1.0);

    // Every sample the same image: all in its class, as far from the reference's classes as
    // the other classes' share of it.
    let image_len = train.image_len();
    let one_image: Vec<f32> = real[..image_len].repeat(test.n);
    let single = run(&one_image);
    let class = single.class_fractions.iter().position(|&f| f == 1.0);
    let class = class.expect("every sample in one class");
    let want = 1.0 - same.class_fractions[class];
    assert!((single.class_balance_tv - want).abs() < 1e-12, "{single:?}");
    assert_eq!(single.floor_class_balance_tv, same.floor_class_balance_tv);

    // Brighter images with some entries negated.
    let mut shifted: Vec<f32> = real.iter().map(|v| v + 0.4).collect();
    shifted[..100].iter_mut().for_each(|v| *v = -*v);
    let far = run(&shifted);
    assert!(
        far.frechet > 10.0 * same.frechet.abs().max(1e-3),
        "Frechet {}",
        far.frechet
    );
    assert!(far.kid > 10.0 * same.kid.abs().max(1e-3), "KID {}", far.kid);
    assert!(far.frechet > far.floor_frechet, "{far:?}");
    assert_eq!(far.nonpositive_fraction, 100.0 / real.len() as f64);
    assert_eq!(
        far.floor_frechet, same.floor_frechet,
        "the floor ignores the samples"
    );

    // Training images are their own nearest neighbours, at distance 0.
    let copies = train.images_in_range(&[5, 17, 42], range());
    let memorised = run(&copies);
    assert_eq!(memorised.nn_mean, 0.0);
    let found: Vec<usize> = memorised.neighbours.iter().map(|n| n[0].index).collect();
    assert_eq!(found, [5, 17, 42]);
    assert!(memorised.neighbours.iter().all(|n| n.len() == 2));
    assert!(memorised.test_nn_mean > 0.0);

    // The copy test compares each sample with 200 training and 200 test images (the smaller
    // split). Test images lie at 0 from the test set; copies of images in the training set at
    // 0 from it; training images the test left out are, like a model that does not copy, as
    // often nearer one set as the other.
    assert_eq!(same.copy_test.images_per_set, 200);
    assert_eq!(same.copy_test.test_mean, 0.0);
    assert_eq!(same.copy_test.nearer_train_fraction, 0.0);
    let in_set = fixed_subset(train.n, test.n);
    let copies = run(&train.images_in_range(&in_set[..50], range()));
    assert_eq!(copies.copy_test.train_mean, 0.0);
    assert_eq!(copies.copy_test.nearer_train_fraction, 1.0);
    let unseen: Vec<usize> = (0..train.n).filter(|i| !in_set.contains(i)).collect();
    let fresh = run(&train.images_in_range(&unseen, range()));
    let sigma = CopyTest::no_copying_std_error(unseen.len());
    let fraction = fresh.copy_test.nearer_train_fraction;
    assert!(
        (fraction - 0.5).abs() < 4.0 * sigma,
        "{fraction} of {}",
        unseen.len()
    );
}

#[test]
fn evaluate_rejects_samples_of_the_wrong_shape() {
    let classifier = train_classifier(1);
    let train = shapes(Split::Train).truncated(50);
    let test = shapes(Split::Test).truncated(50);
    let samples = Samples {
        images: &[1.5; 3 * 27 * 28],
        sign_changes: None,
    };
    let err = evaluate(
        &samples,
        &train,
        &test,
        &classifier,
        &EvalOptions::default(),
    );
    assert!(err.is_err());
}

/// Splits a CSV line into fields, honouring quoted fields with doubled quotes.
fn csv_fields(line: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[test]
fn csv_row_matches_the_header_and_table_names_the_metrics() {
    let classifier = train_classifier(1);
    let train = shapes(Split::Train).truncated(50);
    let test = shapes(Split::Test).truncated(50);
    let images = test.images_in_range(&[0, 1, 2, 3], range());
    let samples = Samples {
        images: &images,
        sign_changes: None,
    };
    let report = evaluate(
        &samples,
        &train,
        &test,
        &classifier,
        &EvalOptions::default(),
    )
    .unwrap();
    let header = csv_fields(EVAL_CSV_HEADER);
    let row = csv_fields(&report.csv_row("run \"a\", adls"));
    assert_eq!(row.len(), header.len(), "{row:?}");
    assert_eq!(row[0], "run \"a\", adls");
    let column = |name: &str| &row[header.iter().position(|h| h == name).unwrap()];
    assert_eq!(column("sampler_sign_changes"), "", "no count was recorded");
    assert_eq!(
        column("inception_fid"),
        "",
        "no Inception weights were given"
    );
    let tv: f64 = column("class_balance_tv").parse().unwrap();
    assert_eq!(tv, report.class_balance_tv);
    let table = report.to_table();
    assert!(
        table.contains("Frechet distance in classifier features"),
        "{table}"
    );
    assert!(!table.contains("FID"));
    assert!(table.contains("class balance"), "{table}");
}

fn dml(args: &[&str], cache: &Path) -> Output {
    let out = Command::new(common::cli::dml_exe())
        .args(["--device", "cpu"])
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .output()
        .unwrap();
    eprintln!(
        "dml {args:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn dml_eval_end_to_end() {
    let dir = common::tempdir("dml-eval");
    let (run, cache) = (dir.join("run"), dir.join("cache"));
    let run_s = run.to_str().unwrap();
    let train = dml(
        &[
            "train", "--data", "shapes", "--preset", "tiny", "--steps", "3", "--levels", "10",
            "--batch", "4", "--out", run_s,
        ],
        &cache,
    );
    assert!(train.status.success());

    let eval_args = [
        "eval",
        "--checkpoint",
        run_s,
        "--count",
        "6",
        "--batch",
        "6",
        "--classifier-steps",
        "5",
        "--max-reference",
        "100",
    ];
    let first = dml(&eval_args, &cache);
    assert!(first.status.success());
    assert!(stdout(&first).contains("Frechet distance in classifier features"));
    assert!(
        stdout(&first).contains("classifier: test accuracy"),
        "trained on first use"
    );
    assert!(run.join("neighbours.png").is_file());
    let cached = cache.join(format!(
        "dml/classifier-{}-1-2-5steps.safetensors",
        shapes(Split::Train).fingerprint()
    ));
    assert!(cached.is_file());

    // Samples written by `dml sample --tensors`, and the cached classifier.
    let tensors = dir.join("samples.safetensors");
    let sample = dml(
        &[
            "sample",
            "--checkpoint",
            run_s,
            "--count",
            "4",
            "--batch",
            "4",
            "--sampler",
            "asams",
            "--out",
            dir.join("s.png").to_str().unwrap(),
            "--tensors",
            tensors.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(sample.status.success());
    let mut from_file = eval_args.to_vec();
    from_file.extend(["--samples", tensors.to_str().unwrap()]);
    let second = dml(&from_file, &cache);
    assert!(second.status.success());
    assert!(stderr(&second).contains("using the cached classifier"));
    let csv = std::fs::read_to_string(run.join("eval.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert_eq!(lines[0], EVAL_CSV_HEADER);
    let columns = csv_fields(EVAL_CSV_HEADER).len();
    assert!(
        lines[1..].iter().all(|l| csv_fields(l).len() == columns),
        "{csv}"
    );
    assert!(lines[2].starts_with(tensors.to_str().unwrap()));

    // Errors: no checkpoint, samples of another shape, a classifier for other data.
    let missing = dml(
        &["eval", "--checkpoint", dir.join("nope").to_str().unwrap()],
        &cache,
    );
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no checkpoint"),
        "{}",
        stderr(&missing)
    );

    let wrong = dir.join("wrong.safetensors");
    let mut ckpt = Checkpoint::new();
    let t = Tensor::from_vec(vec![1.5; 4 * 32 * 32], &[4, 1, 32, 32], &Device::Cpu).unwrap();
    ckpt.put_tensor("samples", &t).unwrap();
    ckpt.save(&wrong).unwrap();
    let mut wrong_args = eval_args.to_vec();
    wrong_args.extend(["--samples", wrong.to_str().unwrap()]);
    let bad_shape = dml(&wrong_args, &cache);
    assert!(!bad_shape.status.success());
    assert!(
        stderr(&bad_shape).contains("[4, 1, 32, 32]"),
        "{}",
        stderr(&bad_shape)
    );

    let other = dir.join("other.safetensors");
    let mut spec = ClassifierSpec::for_dataset(&shapes(Split::Test), range());
    spec.dataset = "fashion-mnist".into();
    Classifier::new(spec, &Device::Cpu, 0)
        .unwrap()
        .save(&other)
        .unwrap();
    let mut other_args = eval_args.to_vec();
    other_args.extend(["--classifier", other.to_str().unwrap()]);
    let foreign = dml(&other_args, &cache);
    assert!(!foreign.status.success());
    assert!(
        stderr(&foreign).contains("trained on 'fashion-mnist'"),
        "{}",
        stderr(&foreign)
    );
}

/// A directory of Fashion-MNIST-style IDX files, train and test splits of `n` 28x28 images whose
/// pixels depend on `variant`.
fn write_idx_dataset(dir: &Path, n: u32, variant: u8) {
    std::fs::create_dir_all(dir).unwrap();
    for prefix in ["train", "t10k"] {
        let mut images = vec![0, 0, 8, 3];
        [n, 28, 28]
            .iter()
            .for_each(|d| images.extend(d.to_be_bytes()));
        images.extend((0..n * 784).map(|i| (i % 253) as u8 ^ variant));
        let mut labels = vec![0, 0, 8, 1];
        labels.extend(n.to_be_bytes());
        labels.extend((0..n).map(|i| (i % 10) as u8));
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
}

/// The cached classifier belongs to the data's content: another spelling of the same
/// directory reuses it, other data behind the same path never does.
#[test]
fn the_cached_classifier_is_keyed_by_the_data_content() {
    let dir = common::tempdir("eval-data-identity");
    let (data, run, cache) = (dir.join("data"), dir.join("run"), dir.join("cache"));
    write_idx_dataset(&data, 20, 0);
    let (data_s, run_s) = (data.to_str().unwrap(), run.to_str().unwrap());
    let train = dml(
        &[
            "train", "--data", data_s, "--preset", "tiny", "--steps", "1", "--levels", "10",
            "--batch", "4", "--out", run_s,
        ],
        &cache,
    );
    assert!(train.status.success());
    let eval = |data: &str| {
        let out = dml(
            &[
                "eval",
                "--checkpoint",
                run_s,
                "--count",
                "2",
                "--batch",
                "2",
                "--classifier-steps",
                "1",
                "--max-reference",
                "10",
                "--data",
                data,
            ],
            &cache,
        );
        assert!(out.status.success());
        stdout(&out).contains("classifier: test accuracy")
    };
    assert!(eval(data_s), "first use trains");
    assert!(!eval(&format!("{data_s}/")), "same data, other spelling");
    write_idx_dataset(&data, 20, 0x55);
    assert!(eval(data_s), "other data behind the same path trains anew");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Settings that cannot train a classifier are refused before any data is loaded or any step
/// run; so is a cache directory that cannot be written.
#[test]
fn classifier_settings_that_cannot_work_are_refused_before_training() {
    let dir = common::tempdir("classifier-flags");
    let cache = dir.join("cache");
    let refused = |args: &[&str], cache: &Path, wanted: &str| {
        let out = dml(args, cache);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains("error:") && err.contains(wanted),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            !err.contains("training the evaluation classifier"),
            "{args:?}: {err}"
        );
    };
    for (flag, value) in [
        ("--steps", "0"),
        ("--lr", "0"),
        ("--lr", "-1"),
        ("--lr", "NaN"),
        ("--lr", "inf"),
    ] {
        let arg = format!("{flag}={value}");
        refused(
            &["train-classifier", "--data", "shapes", &arg],
            &cache,
            flag,
        );
    }
    let nowhere = dir.join("nowhere");
    refused(
        &[
            "eval",
            "--checkpoint",
            nowhere.to_str().unwrap(),
            "--classifier-steps",
            "0",
        ],
        &cache,
        "--classifier-steps",
    );
    // XDG_CACHE_HOME names a file, so the cache directory below it cannot be made.
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    refused(
        &["train-classifier", "--data", "shapes", "--steps", "1"],
        &file,
        file.to_str().unwrap(),
    );
    std::fs::remove_dir_all(dir).unwrap();
}
