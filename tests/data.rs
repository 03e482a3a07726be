//! Dataset readers (IDX gzipped or not, CIFAR-10 binary), their validation, the built-in shapes
//! dataset, the pixel map, deterministic batches and the dataset statistics.
mod common;

use std::io::Write;
use std::path::Path;

use common::*;
use dalemeetslangevin::data::{epoch_permutation, Batcher, Dataset, PixelRange, Split};
use dalemeetslangevin::Device;
use rand::rngs::StdRng;
use rand::Rng;

fn idx_bytes(magic_type: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, magic_type, dims.len() as u8];
    dims.iter().for_each(|d| b.extend(d.to_be_bytes()));
    b.extend_from_slice(data);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Writes an IDX pair for `prefix` into `dir`; returns the images and labels written.
fn write_idx_split(
    rng: &mut StdRng,
    dir: &Path,
    prefix: &str,
    n: u32,
    gz: bool,
) -> (Vec<u8>, Vec<u8>) {
    let images: Vec<u8> = (0..n * 5 * 4).map(|_| rng.random()).collect();
    let labels: Vec<u8> = (0..n).map(|_| rng.random_range(0..10)).collect();
    let files = [
        ("images-idx3-ubyte", idx_bytes(8, &[n, 5, 4], &images)),
        ("labels-idx1-ubyte", idx_bytes(8, &[n], &labels)),
    ];
    for (kind, bytes) in files {
        let (name, bytes) = if gz {
            (format!("{prefix}-{kind}.gz"), gzip(&bytes))
        } else {
            (format!("{prefix}-{kind}"), bytes)
        };
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    (images, labels)
}

#[test]
fn idx_directories_load_gzipped_or_not() {
    let mut rng = test_rng("idx_load");
    let dir = tempdir("idx_load");
    let (train_images, train_labels) = write_idx_split(&mut rng, &dir, "train", 13, true);
    let (test_images, test_labels) = write_idx_split(&mut rng, &dir, "t10k", 4, false);
    let train = Dataset::load(dir.to_str().unwrap(), Split::Train).unwrap();
    assert_eq!(
        (train.n, train.channels, train.height, train.width),
        (13, 1, 5, 4)
    );
    assert_eq!((train.images, train.labels), (train_images, train_labels));
    let test = Dataset::load(dir.to_str().unwrap(), Split::Test).unwrap();
    assert_eq!(test.n, 4);
    assert_eq!((test.images, test.labels), (test_images, test_labels));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Loads the train split of `dir` and returns the error message.
fn load_error(dir: &Path) -> String {
    Dataset::load_dir(dir, Split::Train)
        .unwrap_err()
        .to_string()
}

#[test]
fn damaged_idx_files_are_errors_naming_file_expected_and_found() {
    let mut rng = test_rng("idx_errors");
    let dir = tempdir("idx_errors");
    let images_path = dir.join("train-images-idx3-ubyte");
    let labels_path = dir.join("train-labels-idx1-ubyte");

    let err = load_error(&dir);
    assert!(
        err.contains("train-images-idx3-ubyte") && err.contains("missing"),
        "{err}"
    );

    write_idx_split(&mut rng, &dir, "train", 6, false);
    let good_images = std::fs::read(&images_path).unwrap();
    let good_labels = std::fs::read(&labels_path).unwrap();

    // Truncated, plain and gzipped.
    std::fs::write(&images_path, &good_images[..good_images.len() - 3]).unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("train-images-idx3-ubyte")
            && err.contains("truncated")
            && err.contains("120")
            && err.contains("117"),
        "{err}"
    );
    std::fs::remove_file(&images_path).unwrap();
    let gz = gzip(&good_images);
    let gz_path = dir.join("train-images-idx3-ubyte.gz");
    std::fs::write(&gz_path, &gz[..gz.len() / 2]).unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("train-images-idx3-ubyte.gz") && err.contains("gzip"),
        "{err}"
    );
    std::fs::remove_file(&gz_path).unwrap();

    // Wrong magic: a labels file where the images belong.
    std::fs::write(&images_path, &good_labels).unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("wrong magic") && err.contains("0x00000803") && err.contains("0x00000801"),
        "{err}"
    );
    std::fs::write(&images_path, &good_images).unwrap();

    // Six images, five labels.
    std::fs::write(&labels_path, idx_bytes(8, &[5], &[1, 2, 3, 4, 5])).unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("train-labels-idx1-ubyte")
            && err.contains("5 labels")
            && err.contains("6 images"),
        "{err}"
    );

    // A label outside the classes.
    std::fs::write(&labels_path, idx_bytes(8, &[6], &[1, 2, 3, 4, 5, 10])).unwrap();
    let err = load_error(&dir);
    assert!(err.contains("label 10 at index 5"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Header sizes whose product overflows, or exceeds what the file holds by far: errors naming
/// the file, never a panic or a huge allocation.
#[test]
fn idx_headers_with_overflowing_or_oversized_dimensions_are_errors() {
    let dir = tempdir("idx_huge_dims");
    let images_path = dir.join("train-images-idx3-ubyte");
    let labels_path = dir.join("train-labels-idx1-ubyte");
    let cases: [[u32; 3]; 4] = [
        [4, 1 << 31, 1 << 31],
        [u32::MAX, u32::MAX, u32::MAX],
        [1 << 20, 1 << 20, 1 << 20],
        [2, 1 << 16, 1 << 16],
    ];
    for dims in cases {
        for gz in [false, true] {
            let labels = idx_bytes(8, &[dims[0]], &[1, 2, 3]);
            let images = idx_bytes(8, &dims, &[7; 64]);
            let (images, labels) = if gz {
                (gzip(&images), gzip(&labels))
            } else {
                (images, labels)
            };
            std::fs::write(&images_path, images).unwrap();
            std::fs::write(&labels_path, labels).unwrap();
            let err = load_error(&dir);
            assert!(
                err.contains("train-images-idx3-ubyte") || err.contains("train-labels-idx1-ubyte"),
                "{dims:?} (gzip {gz}): {err}"
            );
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unknown_names_and_missing_directories_are_errors() {
    let err = Dataset::load("/nonexistent/mnist-copy", Split::Train)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/mnist-copy") && err.contains("not a directory"),
        "{err}"
    );
    assert!("validation".parse::<Split>().is_err());
}

#[test]
fn fashion_mnist_loads_from_the_system_path() {
    if !Path::new("/usr/share/datasets/fashion-mnist").is_dir() {
        eprintln!("fashion_mnist: skipped: /usr/share/datasets/fashion-mnist not installed");
        return;
    }
    let test = Dataset::load("fashion-mnist", Split::Test).unwrap();
    assert_eq!(
        (
            test.n,
            test.channels,
            test.height,
            test.width,
            test.n_classes
        ),
        (10_000, 1, 28, 28, 10)
    );
    // Fashion-MNIST's test split has exactly 1000 images of each class.
    let mut counts = [0; 10];
    test.labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [1000; 10]);
    assert_eq!(test.images.len(), 10_000 * 784);
}

fn write_cifar(rng: &mut StdRng, path: &Path, records: usize) -> (Vec<u8>, Vec<u8>) {
    let (mut images, mut labels, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..records {
        let label = rng.random_range(0..10u8);
        let image: Vec<u8> = (0..3072).map(|_| rng.random()).collect();
        bytes.push(label);
        bytes.extend_from_slice(&image);
        labels.push(label);
        images.extend(image);
    }
    std::fs::write(path, bytes).unwrap();
    (images, labels)
}

#[test]
fn cifar10_batches_load_and_are_validated() {
    let mut rng = test_rng("cifar");
    let root = tempdir("cifar");
    let dir = root.join("cifar-10-batches-bin");
    std::fs::create_dir(&dir).unwrap();
    let (mut want_images, mut want_labels) = (Vec::new(), Vec::new());
    for i in 1..=5 {
        let (im, la) = write_cifar(&mut rng, &dir.join(format!("data_batch_{i}.bin")), 3);
        want_images.extend(im);
        want_labels.extend(la);
    }
    write_cifar(&mut rng, &dir.join("test_batch.bin"), 2);
    let train = Dataset::load(root.to_str().unwrap(), Split::Train).unwrap();
    assert_eq!(
        (train.n, train.channels, train.height, train.width),
        (15, 3, 32, 32)
    );
    assert_eq!((train.images, train.labels), (want_images, want_labels));
    assert_eq!(Dataset::load_dir(&root, Split::Test).unwrap().n, 2);

    let batch3 = dir.join("data_batch_3.bin");
    let bytes = std::fs::read(&batch3).unwrap();
    std::fs::write(&batch3, &bytes[..bytes.len() - 100]).unwrap();
    let err = Dataset::load_dir(&root, Split::Train)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data_batch_3.bin") && err.contains("3073") && err.contains("9119"),
        "{err}"
    );

    std::fs::remove_file(&batch3).unwrap();
    let err = Dataset::load_dir(&root, Split::Train)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data_batch_3.bin") && err.contains("cannot read"),
        "{err}"
    );
    std::fs::remove_dir_all(root).unwrap();
}

/// A batch file that is a FIFO (or a directory) is refused at once; reading it would block
/// forever.
#[test]
fn non_regular_cifar_batches_are_refused() {
    let mut rng = test_rng("cifar_fifo");
    let dir = tempdir("cifar_fifo");
    write_cifar(&mut rng, &dir.join("data_batch_1.bin"), 2);
    make_fifo(&dir.join("data_batch_2.bin"));
    let root = dir.clone();
    let err = finishes_within("loading a CIFAR-10 dir with a FIFO", 10, move || {
        Dataset::load_dir(&root, Split::Train)
            .unwrap_err()
            .to_string()
    });
    assert!(
        err.contains("data_batch_2.bin") && err.contains("not a regular file"),
        "{err}"
    );
    std::fs::remove_file(dir.join("data_batch_2.bin")).unwrap();
    std::fs::create_dir(dir.join("data_batch_2.bin")).unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("data_batch_2.bin") && err.contains("not a regular file"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn pixel_range_maps_affinely_and_back() {
    let r = PixelRange::default();
    assert_eq!((r.to_model(0), r.to_model(255)), (1.0, 2.0));
    assert!((0..=255u8).all(|b| r.to_byte(r.to_model(b)) == b));
    assert_eq!(
        (r.to_byte(0.3), r.to_byte(7.0), r.to_byte(f32::NAN)),
        (0, 255, 0)
    );
    let parsed: PixelRange = "0.5, 3".parse().unwrap();
    assert_eq!(parsed, PixelRange::new(0.5, 3.0).unwrap());
    assert_eq!(parsed.to_string().parse::<PixelRange>().unwrap(), parsed);
    assert!(PixelRange::new(0.0, 1.0).is_err() && "2,1".parse::<PixelRange>().is_err());
}

#[test]
fn shapes_dataset_is_deterministic_balanced_and_distinct() {
    let train = Dataset::shapes(Split::Train);
    assert_eq!(train, Dataset::load("shapes", Split::Train).unwrap());
    let test = Dataset::shapes(Split::Test);
    assert_eq!(
        (train.n, test.n, train.n_classes, train.image_len()),
        (6000, 1000, 5, 784)
    );
    assert_ne!(train.image(0), test.image(0));
    let mut counts = [0; 5];
    train.labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [1200; 5]);
    // Every image shows something, and no two classes have the same mean image.
    assert!((0..train.n).all(|i| train.image(i).iter().filter(|&&b| b > 100).count() > 20));
    let means = train.class_means(PixelRange::default()).unwrap();
    let classes: Vec<&[f32]> = means.chunks(784).collect();
    for a in 0..5 {
        for b in a + 1..5 {
            let dist: f32 = classes[a]
                .iter()
                .zip(classes[b])
                .map(|(x, y)| (x - y).abs())
                .sum();
            assert!(dist > 5.0, "classes {a} and {b} look alike ({dist})");
        }
    }
}

#[test]
fn batches_are_a_pure_function_of_seed_and_step() {
    let data = Dataset::shapes(Split::Test).truncated(37);
    let range = PixelRange::default();
    let mut sequential = Batcher::new(data.n, 8, 42, range).unwrap();
    let batches: Vec<_> = (0..12)
        .map(|s| sequential.batch(&data, s, &Device::Cpu).unwrap())
        .collect();

    // A fresh batcher asked for any step directly (a resume) gives the same batch.
    for s in [11u64, 3, 7, 0] {
        let again = Batcher::new(data.n, 8, 42, range)
            .unwrap()
            .batch(&data, s, &Device::Cpu)
            .unwrap();
        assert_eq!(again.indices, batches[s as usize].indices);
        assert_eq!(
            again.images.to_vec().unwrap(),
            batches[s as usize].images.to_vec().unwrap()
        );
    }
    // Each epoch visits every example exactly once.
    let all: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    for epoch in all.chunks(37).filter(|c| c.len() == 37) {
        let mut sorted = epoch.to_vec();
        sorted.sort();
        assert_eq!(sorted, (0..37).collect::<Vec<_>>());
    }
    assert_ne!(epoch_permutation(37, 42, 0), epoch_permutation(37, 42, 1));
    assert_ne!(epoch_permutation(37, 42, 0), epoch_permutation(37, 43, 0));
    // Contents: the indexed images mapped into the range, with their labels.
    let b = &batches[5];
    assert_eq!(b.images.shape(), &[8, 1, 28, 28]);
    assert_eq!(
        b.images.to_vec().unwrap(),
        data.images_in_range(&b.indices, range)
    );
    assert!(b
        .indices
        .iter()
        .zip(&b.labels)
        .all(|(&i, &l)| data.labels[i] == l));
    assert!(Batcher::new(0, 8, 1, range).is_err());
}

#[test]
fn class_means_and_log_stats_match_direct_computation() {
    let mut rng = test_rng("stats");
    let dir = tempdir("stats");
    write_idx_split(&mut rng, &dir, "train", 50, false);
    let data = Dataset::load_dir(&dir, Split::Train).unwrap();
    let range = PixelRange::new(0.5, 3.0).unwrap();
    // Random labels leave a class empty now and then; a set folded onto three classes always
    // does, so both the per-class and the all-images (empty class) means are checked every run.
    let mut folded = data.clone();
    folded.labels.iter_mut().for_each(|l| *l %= 3);
    for set in [&data, &folded] {
        let means = set.class_means(range).unwrap();
        for c in 0..10u8 {
            let members: Vec<usize> = (0..set.n).filter(|&i| set.labels[i] == c).collect();
            let members = if members.is_empty() {
                (0..set.n).collect()
            } else {
                members
            };
            let want: Vec<f32> = (0..20)
                .map(|p| {
                    members
                        .iter()
                        .map(|&i| range.to_model(set.image(i)[p]))
                        .sum::<f32>()
                        / members.len() as f32
                })
                .collect();
            assert_close(
                &format!("class {c} mean"),
                &means[c as usize * 20..][..20],
                &want,
                1e-5,
                0.0,
            );
        }
    }
    let logs: Vec<f64> = data
        .images
        .iter()
        .map(|&b| (range.to_model(b) as f64).ln())
        .collect();
    let mean = logs.iter().sum::<f64>() / logs.len() as f64;
    let var = logs.iter().map(|l| (l - mean) * (l - mean)).sum::<f64>() / logs.len() as f64;
    let stats = data.log_stats(range);
    assert_eq!(stats.len(), 1);
    assert!(
        (stats[0].mean - mean).abs() < 1e-6 && (stats[0].var - var).abs() < 1e-6,
        "{stats:?} vs {mean} {var}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
