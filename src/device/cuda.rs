//! The `cuda` backend: the fatbins build.rs embedded, loaded once per module and cached, and
//! launched through the CUDA driver API (cudarc, loaded dynamically so the binary starts without
//! CUDA).
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::{
    CUdevice_attribute_enum, CUfunction, CUfunction_attribute_enum, CUgraphInstantiate_flags,
    CUmemPool_attribute_enum, CUmodule, CUstreamCaptureMode_enum,
};
use cudarc::driver::{
    result, CudaContext, CudaGraph, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
};

use super::launch::{Buffer, BufferMut, KernelArg, LaunchGeometry};
use crate::error::{Error, Result};

/// One embedded module: a fatbin compiled from `kernels/<name>.cu`.
pub struct CudaModuleImage {
    pub name: &'static str,
    pub fatbin: &'static [u8],
    pub kernels: &'static [&'static str],
}

include!(concat!(env!("OUT_DIR"), "/cuda_kernels.rs"));

/// Dynamic shared memory above this needs an explicit opt-in per function.
const DEFAULT_SHARED_LIMIT: u32 = 48 * 1024;

/// What the build embedded, for `info` and for error messages.
pub fn kernels_compiled() -> bool {
    !CUDA_MODULES.is_empty()
}

/// Whether the CUDA driver library can be loaded (cudarc panics on first use otherwise).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda; no CUDA call is made.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Number of CUDA devices, or why there are none.
pub fn device_count() -> Result<usize> {
    if !driver_present() {
        return Err(Error::Cuda(
            "no CUDA driver found (libcuda.so could not be loaded)".into(),
        ));
    }
    let n =
        CudaContext::device_count().map_err(|e| Error::Cuda(format!("counting devices: {e:?}")))?;
    Ok(n.max(0) as usize)
}

/// Lets the device's default memory pool keep what tensors free instead of handing it back to the
/// driver at every synchronisation (its default release threshold is 0): each training or
/// sampler step frees and allocates the same sizes again, as PyTorch's caching allocator
/// assumes. A device without memory pools (cudarc then allocates synchronously) has none to set.
fn keep_freed_memory(ctx: &CudaContext) -> Result<()> {
    let err = |what: &str, e| Error::Cuda(format!("{what}: {e:?}"));
    let pools = ctx
        .attribute(CUdevice_attribute_enum::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED)
        .map_err(|e| err("asking whether the device has memory pools", e))?;
    if pools == 0 {
        return Ok(());
    }
    // SAFETY: the device handle comes from the context just created.
    let pool = unsafe { result::device::get_default_mem_pool(ctx.cu_device()) }
        .map_err(|e| err("getting the default memory pool", e))?;
    let mut threshold = u64::MAX;
    // SAFETY: the release threshold is a cuuint64_t, and `threshold` is one.
    unsafe {
        result::mem_pool::set_attribute(
            pool,
            CUmemPool_attribute_enum::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
    }
    .map_err(|e| err("keeping freed memory in the pool", e))
}

struct Loaded {
    modules: HashMap<&'static str, CUmodule>,
    functions: HashMap<String, CUfunction>,
}

// SAFETY: module and function handles are plain driver handles, valid in any thread once the
// context is bound, and only used under the mutex.
unsafe impl Send for Loaded {}

pub struct CudaDevice {
    ordinal: usize,
    name: String,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    loaded: Mutex<Loaded>,
}

impl CudaDevice {
    /// Opens device `ordinal`, with a clear error for each way that can fail.
    pub fn open(ordinal: usize) -> Result<Arc<Self>> {
        if !kernels_compiled() {
            return Err(Error::Cuda(
                "this binary was built without CUDA kernels (nvcc was not found at build time); \
                 install nvcc (see README, 'Getting nvcc') and rebuild, or use --device cpu"
                    .into(),
            ));
        }
        let count = device_count()?;
        if ordinal >= count {
            return Err(Error::Cuda(format!(
                "no CUDA device {ordinal} ({count} found)"
            )));
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| Error::Cuda(format!("creating context: {e:?}")))?;
        // SAFETY: every buffer is allocated, used and freed on the one stream made below, in order,
        // so the events cudarc would create for each allocation (two, to order other streams'
        // uses) order nothing.
        unsafe { ctx.disable_event_tracking() };
        keep_freed_memory(&ctx)?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        // A stream of our own: the legacy default stream cannot be captured into a graph.
        let stream = ctx
            .new_stream()
            .map_err(|e| Error::Cuda(format!("creating a stream: {e:?}")))?;
        Ok(Arc::new(Self {
            ordinal,
            name,
            ctx,
            stream,
            loaded: Mutex::new(Loaded {
                modules: HashMap::new(),
                functions: HashMap::new(),
            }),
        }))
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn compute_capability(&self) -> Option<(i32, i32)> {
        self.ctx.compute_capability().ok()
    }

    pub fn total_memory(&self) -> Option<usize> {
        self.ctx.total_mem().ok()
    }

    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| Error::Cuda(format!("synchronize: {e:?}")))
    }

    pub(crate) fn alloc_zeros(&self, n: usize) -> Result<CudaSlice<f32>> {
        self.stream
            .alloc_zeros::<f32>(n.max(1))
            .map_err(|e| Error::Cuda(format!("allocating {n} floats: {e:?}")))
    }

    /// `n` floats left as the allocator hands them out, for a kernel to overwrite: no memset, one
    /// driver call less per tensor (a network forward allocates about as many tensors as it
    /// launches kernels). Every kernel writes every element of such an output: the emulator
    /// poisons these buffers with NaN, so a kernel that skips one fails its tests there.
    pub(crate) fn alloc_uninit(&self, n: usize) -> Result<CudaSlice<f32>> {
        // SAFETY: the memory is only ever read as f32, for which every bit pattern is a value
        // (by kernels, or copied to the host by `download`); nothing reads it as anything else.
        unsafe { self.stream.alloc::<f32>(n.max(1)) }
            .map_err(|e| Error::Cuda(format!("allocating {n} floats: {e:?}")))
    }

    pub(crate) fn upload(&self, data: &[f32]) -> Result<CudaSlice<f32>> {
        if data.is_empty() {
            return self.alloc_zeros(0);
        }
        self.stream.clone_htod(data).map_err(|e| {
            Error::Cuda(format!(
                "copying {} floats to the device: {e:?}",
                data.len()
            ))
        })
    }

    /// Copies `data` over the start of `dst`, in place.
    pub(crate) fn write(&self, dst: &mut CudaSlice<f32>, data: &[f32]) -> Result<()> {
        self.stream.memcpy_htod(data, dst).map_err(|e| {
            Error::Cuda(format!(
                "copying {} floats to the device: {e:?}",
                data.len()
            ))
        })
    }

    /// Starts capturing this thread's work on the stream into a graph; other threads' CUDA calls
    /// are not restricted (thread-local mode).
    pub(crate) fn begin_capture(&self) -> Result<()> {
        self.stream
            .begin_capture(CUstreamCaptureMode_enum::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| Error::Cuda(format!("beginning a graph capture: {e:?}")))
    }

    /// Ends the capture begun by [`Self::begin_capture`] and instantiates the graph. Memory the
    /// graph allocates and does not free would stay allocated at its next launch, which CUDA
    /// refuses unless freed on launch: the body frees what it allocates, so no flag is needed.
    pub(crate) fn end_capture(&self) -> Result<CudaGraph> {
        self.stream
            .end_capture(CUgraphInstantiate_flags(0))
            .map_err(|e| Error::Cuda(format!("ending a graph capture: {e:?}")))?
            .ok_or_else(|| Error::Cuda("the capture recorded no work".into()))
    }

    /// Drops the errors cudarc recorded during a capture that failed. cudarc records the error
    /// of a free instead of returning it, and every free in a failed capture fails; left there,
    /// the next call on this context would report one of them. (An error another thread's free
    /// recorded meanwhile would go too: they are reported nowhere else either.)
    pub(crate) fn forget_failed_capture_errors(&self) {
        let _ = self.ctx.check_err();
    }

    pub(crate) fn download(&self, data: &CudaSlice<f32>, len: usize) -> Result<Vec<f32>> {
        let mut v = self
            .stream
            .clone_dtoh(data)
            .map_err(|e| Error::Cuda(format!("copying {len} floats from the device: {e:?}")))?;
        v.truncate(len);
        Ok(v)
    }

    fn function(&self, kernel: &str) -> Result<CUfunction> {
        let mut loaded = self.loaded.lock().expect("cuda module cache poisoned");
        if let Some(f) = loaded.functions.get(kernel) {
            return Ok(*f);
        }
        let image = CUDA_MODULES
            .iter()
            .find(|m| m.kernels.contains(&kernel))
            .ok_or_else(|| Error::UnknownKernel(kernel.to_string()))?;
        self.ctx
            .bind_to_thread()
            .map_err(|e| Error::Cuda(format!("binding context: {e:?}")))?;
        let module = match loaded.modules.get(image.name) {
            Some(m) => *m,
            None => {
                // The driver wants the image 8-byte aligned; include_bytes! promises 1.
                let mut aligned = vec![0u64; image.fatbin.len().div_ceil(8)];
                bytemuck::cast_slice_mut::<u64, u8>(&mut aligned)[..image.fatbin.len()]
                    .copy_from_slice(image.fatbin);
                // SAFETY: `aligned` holds a complete fatbin produced by nvcc.
                let m = unsafe { result::module::load_data(aligned.as_ptr() as *const c_void) }
                    .map_err(|e| Error::Cuda(format!("loading module {}: {e:?}", image.name)))?;
                loaded.modules.insert(image.name, m);
                m
            }
        };
        let cname = CString::new(kernel).map_err(|_| Error::UnknownKernel(kernel.to_string()))?;
        // SAFETY: `module` is a loaded module of this context.
        let f = unsafe { result::module::get_function(module, cname) }
            .map_err(|e| Error::Cuda(format!("kernel {kernel} in module {}: {e:?}", image.name)))?;
        loaded.functions.insert(kernel.to_string(), f);
        Ok(f)
    }

    pub(crate) fn launch(
        &self,
        kernel: &str,
        g: LaunchGeometry,
        args: &mut [KernelArg<'_>],
    ) -> Result<()> {
        let f = self.function(kernel)?;
        self.ctx
            .bind_to_thread()
            .map_err(|e| Error::Cuda(format!("binding context: {e:?}")))?;
        if g.shared_bytes > DEFAULT_SHARED_LIMIT {
            // SAFETY: `f` is a valid function of this context.
            unsafe {
                result::function::set_function_attribute(
                    f,
                    CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    g.shared_bytes as i32,
                )
            }
            .map_err(|e| {
                Error::Cuda(format!(
                    "{kernel}: {} bytes of shared memory: {e:?}",
                    g.shared_bytes
                ))
            })?;
        }
        let mut guards = Vec::new();
        let mut slots = Vec::with_capacity(args.len());
        for a in args.iter_mut() {
            slots.push(match a {
                KernelArg::In(Buffer::Cuda(s)) => {
                    let (p, guard) = s.device_ptr(&self.stream);
                    guards.push(guard);
                    p
                }
                KernelArg::Out(BufferMut::Cuda(s)) | KernelArg::OutWords(BufferMut::Cuda(s)) => {
                    let (p, guard) = s.device_ptr_mut(&self.stream);
                    guards.push(guard);
                    p
                }
                scalar => scalar.scalar_bits().ok_or_else(|| {
                    Error::invalid(format!("kernel {kernel}: host memory passed to the GPU"))
                })?,
            });
        }
        let mut params = super::launch::param_ptrs(&mut slots);
        // SAFETY: one parameter pointer per kernel argument, each to an 8-byte slot holding a
        // value of the parameter's type; device pointers stay alive while `guards` lives.
        unsafe {
            result::launch_kernel(
                f,
                (g.grid[0], g.grid[1], g.grid[2]),
                (g.block[0], g.block[1], g.block[2]),
                g.shared_bytes,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| Error::Cuda(format!("launching {kernel} with {g:?}: {e:?}")))?;
        drop(guards);
        Ok(())
    }
}
