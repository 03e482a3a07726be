//! Builds the kernels three times (docs/DESIGN.md sections 2, 4 and 8):
//! - for the host, with the CUDA emulator header, into a static library the `emu` backend calls,
//!   and again, instrumented, into the profiling emulator `dml profile` runs;
//! - with nvcc, when one is found, into one fatbin per kernels/*.cu embedded in the binary;
//!
//! and reads every exported kernel's `extern "C" __global__` signature into the table that each
//! launch is checked against (src/device/launch.rs), with or without nvcc.
//!
//! With nvcc it also writes the kernel report `dml info --kernels` prints
//! (src/device/kernel_report.rs): registers, stack, spills and static shared memory per kernel
//! and architecture as ptxas reports them while compiling the fatbins, and the tensor-core (MMA)
//! instructions in each kernel's SASS, read back from the fatbin by cuobjdump when it is found.
//!
//! Without nvcc the build still succeeds: it warns once and the `cuda` backend reports at run time
//! that the binary has no kernels.
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// SASS for Ampere and Hopper, plus PTX for compute_80 so newer GPUs can JIT it.
const GENCODE: &[&str] = &[
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
    "-gencode=arch=compute_80,code=compute_80",
];

struct KernelFile {
    module: String,
    path: PathBuf,
    kernels: Vec<String>,
}

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=CUOBJDUMP");
    println!("cargo:rerun-if-env-changed=PATH");

    let files = kernel_files(Path::new("kernels"));
    build_emulated(&files);
    build_profiled_emulator(&files);
    write_emu_table(&files, &out.join("emu_kernels.rs"));
    write_signature_table(&files, &out.join("kernel_signatures.rs"));

    let nvcc = find_nvcc();
    let built = match &nvcc {
        Some(nvcc) => build_fatbins(nvcc, &files, &out),
        None => {
            println!(
                "cargo:warning=nvcc not found (set NVCC or CUDA_HOME, see README): building without CUDA kernels; \
                 the cpu and emu backends work, --device cuda will explain how to get them"
            );
            None
        }
    };
    write_cuda_table(
        &files,
        built.as_ref(),
        nvcc.as_deref(),
        &out.join("cuda_kernels.rs"),
    );
    write_kernel_report(
        built.as_ref(),
        nvcc.as_deref(),
        &out.join("kernel_report.rs"),
    );
}

/// Every `kernels/*.cu` with the kernels it exports through `EMU_EXPORT(name)`.
fn kernel_files(dir: &Path) -> Vec<KernelFile> {
    let mut files: Vec<KernelFile> = fs::read_dir(dir)
        .expect("kernels/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .map(|path| {
            let src = fs::read_to_string(&path).expect("kernel source is readable");
            let kernels = exported_kernels(&src);
            let module = path.file_stem().unwrap().to_string_lossy().into_owned();
            KernelFile {
                module,
                path,
                kernels,
            }
        })
        .collect();
    files.sort_by(|a, b| a.module.cmp(&b.module));
    files
}

fn exported_kernels(src: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in src.lines() {
        let line = line.trim_start();
        if let Some(rest) = line.strip_prefix("EMU_EXPORT(") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.push(name);
        }
    }
    names
}

fn build_emulated(files: &[KernelFile]) {
    let mut build = emu_build();
    build.file("kernels/emu/emu_runtime.cpp");
    for f in files {
        // The .cu files are compiled as C++ with the emulation header forced in first.
        let abs = fs::canonicalize(&f.path).unwrap();
        build.file(write_shim(
            &format!("emu_{}.cpp", f.module),
            &format!(
                "#include \"emu/cuda_emu.h\"\n#include \"{}\"\n",
                abs.display()
            ),
        ));
    }
    build.compile("dml_emu_kernels");
}

/// The host C++ build both emulators share.
fn emu_build() -> cc::Build {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .warnings(false)
        .include("kernels");
    build
}

fn write_shim(name: &str, text: &str) -> PathBuf {
    let shim = PathBuf::from(env::var("OUT_DIR").unwrap()).join(name);
    fs::write(&shim, text).unwrap();
    shim
}

/// Every header the runtime and the kernels include, included up front so that the files
/// themselves can be included inside the profiling build's namespace (their includes then find
/// these already done).
const PROFILED_PRELUDE: &str =
    "#include <sys/mman.h>\n#include <ucontext.h>\n#include <unistd.h>\n\
#include <algorithm>\n#include <atomic>\n#include <cmath>\n#include <cstddef>\n#include <cstdint>\n\
#include <cstdio>\n#include <cstdlib>\n#include <cstring>\n#include <map>\n#include <memory>\n\
#include <mutex>\n#include <string>\n#include <thread>\n#include <tuple>\n#include <type_traits>\n\
#include <unordered_map>\n#include <unordered_set>\n#include <utility>\n#include <vector>\n\
#define EMU_PROFILE 1\n";

/// The profiling emulator (docs/DESIGN.md section 8): the runtime and every kernel again, inside
/// namespace `dml_profiled` and with each kernel renamed, so they link beside the normal build
/// without sharing a single inline function or template instance with it; the kernels (not the
/// runtime) instrumented so that every load and store calls the profiler. Vectorisation and store
/// merging are off so each thread's accesses keep the widths the source gives them.
fn build_profiled_emulator(files: &[KernelFile]) {
    let mut kernels = emu_build();
    kernels.flag("-fsanitize=thread");
    if kernels.get_compiler().is_like_gnu() {
        kernels.flag("--param=tsan-instrument-func-entry-exit=0");
        kernels.flag("-fno-store-merging");
    }
    kernels
        .flag("-fno-tree-vectorize")
        .flag("-fno-tree-slp-vectorize");
    for f in files {
        let abs = fs::canonicalize(&f.path).unwrap();
        let mut text = String::from(PROFILED_PRELUDE);
        for k in files.iter().flat_map(|f| &f.kernels) {
            writeln!(text, "#define {k} profiled_{k}").unwrap();
        }
        write!(
            text,
            "namespace dml_profiled {{\n#include \"emu/cuda_emu.h\"\n#include \"{}\"\n}}\n",
            abs.display()
        )
        .unwrap();
        kernels.file(write_shim(&format!("emu_profiled_{}.cpp", f.module), &text));
    }
    kernels.compile("dml_emu_profiled_kernels");

    let mut runtime = emu_build();
    runtime.file(write_shim(
        "emu_profiled_runtime.cpp",
        &format!(
            "{PROFILED_PRELUDE}namespace dml_profiled {{\n#include \"emu/emu_runtime.cpp\"\n}}\n"
        ),
    ));
    runtime.compile("dml_emu_profiled_runtime");
}

fn write_emu_table(files: &[KernelFile], dest: &Path) {
    let mut s = String::from(
        "// Generated by build.rs: the emulated kernels' host launchers, plain and profiling.\n",
    );
    s.push_str("unsafe extern \"C\" {\n");
    for k in files.iter().flat_map(|f| &f.kernels) {
        for prefix in ["emu_launch", "emu_profiled_launch"] {
            writeln!(
                s,
                "    fn {prefix}_{k}(cfg: *const EmuLaunchCfg, params: *mut *mut c_void) -> c_int;"
            )
            .unwrap();
        }
    }
    s.push_str("}\n\n");
    for (table, prefix) in [
        ("EMU_KERNELS", "emu_launch"),
        ("EMU_PROFILED_KERNELS", "emu_profiled_launch"),
    ] {
        writeln!(s, "pub(crate) static {table}: &[(&str, EmuLauncher)] = &[").unwrap();
        for k in files.iter().flat_map(|f| &f.kernels) {
            writeln!(s, "    (\"{k}\", {prefix}_{k}),").unwrap();
        }
        s.push_str("];\n");
    }
    fs::write(dest, s).unwrap();
}

/// The C type of one kernel parameter, as the launch check in src/device/launch.rs knows it.
fn param_type(kernel: &str, param: &str) -> &'static str {
    let words: Vec<&str> = param
        .split(|c: char| c.is_whitespace() || c == '*')
        .filter(|w| !w.is_empty() && *w != "__restrict__")
        .collect();
    let pointer = param.contains('*');
    let konst = words.first() == Some(&"const");
    let base = words.iter().find(|w| **w != "const").copied().unwrap_or("");
    match (base, pointer, konst) {
        ("float", true, true) => "ConstF32Ptr",
        ("float", true, false) => "MutF32Ptr",
        ("uint32_t", true, false) => "MutU32Ptr",
        ("float", false, _) => "F32",
        ("int", false, _) => "I32",
        ("uint32_t", false, _) => "U32",
        ("uint64_t", false, _) => "U64",
        _ => panic!(
            "kernel {kernel}: parameter `{param}` has a type the launch check does not know; \
             add it to ParamType in src/device/launch.rs and to build.rs"
        ),
    }
}

/// Every `extern "C" __global__` signature of `src`: name and (parameter name, type) pairs.
fn kernel_signatures(src: &str) -> Vec<(String, Vec<(String, &'static str)>)> {
    const HEAD: &str = "extern \"C\" __global__ void ";
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(at) = rest.find(HEAD) {
        rest = &rest[at + HEAD.len()..];
        // `__launch_bounds__(threads, blocks)` stands between `void` and the name.
        if let Some(bounds) = rest.strip_prefix("__launch_bounds__(") {
            let end = bounds.find(')').expect("__launch_bounds__(...) is closed");
            rest = bounds[end + 1..].trim_start();
        }
        let open = rest
            .find('(')
            .expect("a kernel signature has a parameter list");
        let close = rest
            .find(')')
            .expect("a kernel signature has a parameter list");
        let name = rest[..open].trim().to_string();
        let params = rest[open + 1..close]
            .split(',')
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|p| !p.is_empty() && p != "void")
            .map(|p| {
                let pname = p
                    .rsplit(|c: char| c.is_whitespace() || c == '*')
                    .next()
                    .unwrap_or("")
                    .to_string();
                let ty = param_type(&name, &p);
                (pname, ty)
            })
            .collect();
        out.push((name, params));
    }
    out
}

/// The table every launch is checked against: one entry per exported kernel, from its source.
fn write_signature_table(files: &[KernelFile], dest: &Path) {
    let mut s = String::from(
        "// Generated by build.rs from the kernels' `extern \"C\" __global__` signatures.\n",
    );
    s.push_str("pub static KERNEL_SIGNATURES: &[KernelSignature] = &[\n");
    for f in files {
        let src = fs::read_to_string(&f.path).expect("kernel source is readable");
        let signatures = kernel_signatures(&src);
        for k in &f.kernels {
            let (_, params) = signatures.iter().find(|(n, _)| n == k).unwrap_or_else(|| {
                panic!(
                    "{}: EMU_EXPORT({k}) has no `extern \"C\" __global__ void {k}(...)` signature",
                    f.path.display()
                )
            });
            write!(s, "    KernelSignature {{ name: {k:?}, params: &[").unwrap();
            for (pname, ty) in params {
                write!(s, "({pname:?}, ParamType::{ty}), ").unwrap();
            }
            s.push_str("] },\n");
        }
    }
    s.push_str("];\n");
    fs::write(dest, s).unwrap();
}

fn find_nvcc() -> Option<PathBuf> {
    let candidates = env::var_os("NVCC")
        .map(PathBuf::from)
        .into_iter()
        .chain(env::var_os("CUDA_HOME").map(|h| PathBuf::from(h).join("bin/nvcc")))
        .chain(env::var_os("PATH").into_iter().flat_map(|p| {
            env::split_paths(&p)
                .map(|d| d.join("nvcc"))
                .collect::<Vec<_>>()
        }));
    candidates.into_iter().find(|p| p.is_file())
}

/// One fatbin per file, and what ptxas said about every kernel it compiled into it.
struct BuiltFatbins {
    fatbins: Vec<PathBuf>,
    resources: Vec<PtxasResources>,
}

fn build_fatbins(nvcc: &Path, files: &[KernelFile], out: &Path) -> Option<BuiltFatbins> {
    let mut built = BuiltFatbins {
        fatbins: Vec::new(),
        resources: Vec::new(),
    };
    for f in files {
        let dest = out.join(format!("{}.fatbin", f.module));
        // -Xptxas -v: ptxas prints each kernel's registers, spills and shared memory per arch.
        let output = Command::new(nvcc)
            .args(["-fatbin", "-O3", "-std=c++17", "-Ikernels", "-Xptxas", "-v"])
            .args(GENCODE)
            .arg("-o")
            .arg(&dest)
            .arg(&f.path)
            .output();
        match output {
            Ok(o) if o.status.success() => {
                let log = String::from_utf8_lossy(&o.stderr);
                built.resources.extend(parse_ptxas_log(&f.module, &log));
                built.fatbins.push(dest);
            }
            Ok(o) => panic!(
                "nvcc failed on {} ({}); fix the kernel or unset NVCC:\n{}",
                f.path.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("cannot run nvcc at {}: {e}", nvcc.display()),
        }
    }
    Some(built)
}

/// What ptxas reported for one kernel compiled for one architecture.
struct PtxasResources {
    module: String,
    kernel: String,
    arch: String,
    registers: u32,
    stack_bytes: u32,
    spill_store_bytes: u32,
    spill_load_bytes: u32,
    static_shared_bytes: u32,
}

/// The number before `unit` in a ptxas line such as `Used 72 registers, used 1 barriers,
/// 8320 bytes smem` (0 when ptxas left it out, as it does for no shared memory).
fn number_before(line: &str, unit: &str) -> u32 {
    line.split(',')
        .map(str::trim)
        .find_map(|part| part.strip_suffix(unit))
        .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Parses `-Xptxas -v` output: for each kernel and arch, an `entry function 'K' for 'sm_XY'`
/// line, then its stack frame and spills, then its registers and shared memory.
fn parse_ptxas_log(module: &str, log: &str) -> Vec<PtxasResources> {
    let mut found: Vec<PtxasResources> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let mut quoted = rest.split('\'');
            let kernel = quoted.next().unwrap_or("").to_string();
            let arch = quoted.nth(1).unwrap_or("").to_string();
            found.push(PtxasResources {
                module: module.to_string(),
                kernel,
                arch,
                registers: 0,
                stack_bytes: 0,
                spill_store_bytes: 0,
                spill_load_bytes: 0,
                static_shared_bytes: 0,
            });
        } else if let Some(current) = found.last_mut() {
            if line.contains("bytes stack frame") {
                current.stack_bytes = number_before(line, "bytes stack frame");
                current.spill_store_bytes = number_before(line, "bytes spill stores");
                current.spill_load_bytes = number_before(line, "bytes spill loads");
            } else if line.contains("Used ") && line.contains(" registers") {
                current.registers = number_before(line, "registers");
                current.static_shared_bytes = number_before(line, "bytes smem");
            }
        }
    }
    found
}

/// cuobjdump (which needs nvdisasm beside it) from the same toolkit as nvcc, else `CUOBJDUMP`,
/// else `PATH`.
fn find_cuobjdump(nvcc: &Path) -> Option<PathBuf> {
    let beside_nvcc = nvcc.parent().map(|d| d.join("cuobjdump"));
    let candidates = beside_nvcc
        .into_iter()
        .chain(env::var_os("CUOBJDUMP").map(PathBuf::from))
        .chain(env::var_os("PATH").into_iter().flat_map(|p| {
            env::split_paths(&p)
                .map(|d| d.join("cuobjdump"))
                .collect::<Vec<_>>()
        }));
    candidates.into_iter().find(|p| p.is_file())
}

/// Tensor-core instructions per (kernel, arch) in a fatbin's SASS: every opcode whose base name
/// ends in MMA (HMMA for wmma and mma.sync, HGMMA for Hopper's wgmma, IMMA, DMMA, ...).
fn tensor_core_instructions(cuobjdump: &Path, fatbin: &Path) -> Result<Vec<SassMma>, String> {
    let output = Command::new(cuobjdump)
        .arg("-sass")
        .arg(fatbin)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cuobjdump.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} -sass {} failed: {}",
            cuobjdump.display(),
            fatbin.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(parse_sass(&String::from_utf8_lossy(&output.stdout)))
}

/// The MMA instructions of one kernel's SASS for one arch, and its asynchronous global-to-shared
/// copies (LDGSTS: cp.async).
struct SassMma {
    kernel: String,
    arch: String,
    count: u32,
    opcodes: Vec<String>,
    async_copies: u32,
}

/// Parses `cuobjdump -sass`: `code for sm_XY` starts an arch, `Function : K` a kernel, and each
/// instruction line is `/*offset*/ [@P] OPCODE operands ;`.
fn parse_sass(sass: &str) -> Vec<SassMma> {
    let mut kernels: Vec<SassMma> = Vec::new();
    let mut arch = String::new();
    for line in sass.lines().map(str::trim) {
        if let Some(a) = line.strip_prefix("code for ") {
            arch = a.trim().to_string();
        } else if let Some(k) = line.strip_prefix("Function : ") {
            kernels.push(SassMma {
                kernel: k.trim().to_string(),
                arch: arch.clone(),
                count: 0,
                opcodes: Vec::new(),
                async_copies: 0,
            });
        } else if let (Some(current), Some(code)) = (kernels.last_mut(), sass_instruction(line)) {
            let opcode = code
                .split_whitespace()
                .find(|w| !w.starts_with('@'))
                .unwrap_or("");
            let base = opcode.split('.').next().unwrap_or("");
            if base.ends_with("MMA") {
                current.count += 1;
                if !current.opcodes.iter().any(|o| o == opcode) {
                    current.opcodes.push(opcode.to_string());
                }
            } else if base == "LDGSTS" {
                current.async_copies += 1;
            }
        }
    }
    kernels
}

/// The instruction text of a SASS line `/*0130*/  OPCODE ... ;`, None for other lines.
fn sass_instruction(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("/*")?;
    let (offset, code) = rest.split_once("*/")?;
    offset
        .chars()
        .all(|c| c.is_ascii_hexdigit())
        .then_some(code.trim())
}

/// The report `dml info --kernels` prints: ptxas's resources per kernel and arch, each with its
/// SASS's MMA instructions when cuobjdump could read them (else why not).
fn write_kernel_report(built: Option<&BuiltFatbins>, nvcc: Option<&Path>, dest: &Path) {
    let mut s =
        String::from("// Generated by build.rs: ptxas resources, SASS MMA and cp.async counts.\n");
    let Some((built, nvcc)) = built.zip(nvcc) else {
        s.push_str(
            "pub const SASS_READER: Result<&str, &str> = Err(\"no kernels were compiled\");\n",
        );
        s.push_str("pub static KERNEL_RESOURCES: &[KernelResources] = &[];\n");
        fs::write(dest, s).unwrap();
        return;
    };
    let sass = read_sass(built, nvcc);
    if let Err(why) = &sass {
        println!(
            "cargo:warning={why}: `dml info --kernels` will not say which kernels use tensor cores"
        );
    }
    match &sass {
        Ok((tool, _)) => writeln!(
            s,
            "pub const SASS_READER: Result<&str, &str> = Ok({tool:?});"
        ),
        Err(why) => writeln!(
            s,
            "pub const SASS_READER: Result<&str, &str> = Err({why:?});"
        ),
    }
    .unwrap();
    s.push_str("pub static KERNEL_RESOURCES: &[KernelResources] = &[\n");
    for r in &built.resources {
        let mma = sass.as_ref().ok().and_then(|(_, all)| {
            all.iter()
                .find(|m| m.kernel == r.kernel && m.arch == r.arch)
        });
        let (count, opcodes, async_copies) = match (&sass, mma) {
            (Err(_), _) => ("None".to_string(), String::new(), "None".to_string()),
            (Ok(_), Some(m)) => (
                format!("Some({})", m.count),
                m.opcodes.join(" "),
                format!("Some({})", m.async_copies),
            ),
            (Ok(_), None) => panic!(
                "cuobjdump -sass shows no {} for {}, though ptxas compiled it",
                r.kernel, r.arch
            ),
        };
        writeln!(
            s,
            "    KernelResources {{ module: {:?}, kernel: {:?}, arch: {:?}, registers: {}, \
             stack_bytes: {}, spill_store_bytes: {}, spill_load_bytes: {}, \
             static_shared_bytes: {}, mma_instructions: {count}, mma_opcodes: {opcodes:?}, \
             async_copy_instructions: {async_copies} }},",
            r.module,
            r.kernel,
            r.arch,
            r.registers,
            r.stack_bytes,
            r.spill_store_bytes,
            r.spill_load_bytes,
            r.static_shared_bytes,
        )
        .unwrap();
    }
    s.push_str("];\n");
    fs::write(dest, s).unwrap();
}

/// cuobjdump's version and the MMA instructions of every fatbin, or why the SASS was not read.
fn read_sass(built: &BuiltFatbins, nvcc: &Path) -> Result<(String, Vec<SassMma>), String> {
    let cuobjdump = find_cuobjdump(nvcc).ok_or_else(|| {
        "cuobjdump was not found beside nvcc, in CUOBJDUMP or on PATH at build time \
         (see README, 'Getting nvcc')"
            .to_string()
    })?;
    let mut all = Vec::new();
    for fatbin in &built.fatbins {
        all.extend(tensor_core_instructions(&cuobjdump, fatbin)?);
    }
    Ok((format!("cuobjdump, {}", tool_release(&cuobjdump)), all))
}

/// The `release` line of a CUDA tool's `--version`.
fn tool_release(tool: &Path) -> String {
    Command::new(tool)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.lines()
                .rev()
                .find(|l| l.contains("release"))
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn write_cuda_table(
    files: &[KernelFile],
    built: Option<&BuiltFatbins>,
    nvcc: Option<&Path>,
    dest: &Path,
) {
    let mut s = String::from("// Generated by build.rs: the embedded CUDA modules.\n");
    match (built, nvcc) {
        (Some(built), Some(nvcc)) => {
            writeln!(
                s,
                "pub const NVCC_VERSION: Option<&str> = Some({:?});",
                tool_release(nvcc)
            )
            .unwrap();
            let archs: Vec<&str> = GENCODE
                .iter()
                .map(|g| g.rsplit('=').next().unwrap())
                .collect();
            writeln!(s, "pub const CUDA_ARCHS: &[&str] = &{archs:?};").unwrap();
            s.push_str("pub static CUDA_MODULES: &[CudaModuleImage] = &[\n");
            for (f, path) in files.iter().zip(&built.fatbins) {
                writeln!(
                    s,
                    "    CudaModuleImage {{ name: {:?}, fatbin: include_bytes!({:?}), kernels: &{:?} }},",
                    f.module,
                    path.display().to_string(),
                    f.kernels
                )
                .unwrap();
            }
            s.push_str("];\n");
        }
        _ => {
            s.push_str("pub const NVCC_VERSION: Option<&str> = None;\n");
            s.push_str("pub const CUDA_ARCHS: &[&str] = &[];\n");
            s.push_str("pub static CUDA_MODULES: &[CudaModuleImage] = &[];\n");
        }
    }
    fs::write(dest, s).unwrap();
}
