//! Tensors: contiguous f32 storage on one device, with a shape.
//!
//! `cpu` and `emu` keep data in host memory (the emulator's "device memory" is host memory, so
//! AddressSanitizer sees kernel accesses); `cuda` keeps it in GPU memory. [`memory`] counts the
//! bytes tensors hold.
//!
//! A tensor may keep tensors computed from its data ([`Tensor::derived`]: a convolution's weights
//! reordered for its kernel), made once and reused while the data stays the same. Every write
//! goes through `&mut self` ([`Tensor::host_mut`], [`Tensor::buffer_mut`]), and each of those
//! drops them first, so a kept tensor is never stale.
pub mod host_allocator;
pub mod memory;

use std::sync::{Arc, Mutex, PoisonError};

use cudarc::driver::CudaSlice;

use crate::device::graph;
use crate::device::launch::{Buffer, BufferMut};
use crate::device::Device;
use crate::error::{Error, Result};

pub(crate) enum Storage {
    Host(Vec<f32>),
    Cuda(CudaSlice<f32>),
}

pub struct Tensor {
    shape: Vec<usize>,
    device: Device,
    storage: Storage,
    /// Tensors made from this one's data and shape, by what they are (see [`Tensor::derived`]).
    derived: Mutex<Vec<(DerivedKey, Arc<Tensor>)>>,
}

/// What a tensor kept by [`Tensor::derived`] is: the kind of computation and the sizes it was
/// made for (a reordered weight's layout and shape), so that a key names one result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DerivedKey {
    pub kind: &'static str,
    pub sizes: Vec<usize>,
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: &[usize], device: &Device) -> Result<Self> {
        let n = numel(shape);
        let storage = match device {
            Device::Cuda(dev) => Storage::Cuda(dev.alloc_zeros(n)?),
            _ => Storage::Host(vec![0.0; n]),
        };
        Ok(Self::with_storage(shape, device, storage, Some(0.0)))
    }

    /// A tensor a kernel is about to overwrite. On `emu` it is poisoned with NaN so that any
    /// element the kernel fails to write shows in the result (docs/DESIGN.md section 5.2); on
    /// `cuda` it is left as allocated (no memset), which those tests make safe.
    pub fn uninit(shape: &[usize], device: &Device) -> Result<Self> {
        match device {
            Device::Emu(_) => Ok(Self::with_storage(
                shape,
                device,
                Storage::Host(vec![f32::NAN; numel(shape)]),
                Some(f32::NAN),
            )),
            Device::Cuda(dev) => Ok(Self::with_storage(
                shape,
                device,
                Storage::Cuda(dev.alloc_uninit(numel(shape))?),
                None,
            )),
            Device::Cpu => Self::zeros(shape, device),
        }
    }

    pub fn from_vec(data: Vec<f32>, shape: &[usize], device: &Device) -> Result<Self> {
        if data.len() != numel(shape) {
            return Err(Error::shape(
                "from_vec",
                format!(
                    "{} values for shape {shape:?} ({} elements)",
                    data.len(),
                    numel(shape)
                ),
            ));
        }
        let storage = match device {
            Device::Cuda(dev) => Storage::Cuda(dev.upload(&data)?),
            Device::Emu(_) => {
                graph::emu_host_access("a copy from the host");
                Storage::Host(data)
            }
            Device::Cpu => Storage::Host(data),
        };
        Ok(Self::with_storage(shape, device, storage, None))
    }

    /// Every tensor is made here, so that [`memory`] sees its storage (and a capture on `emu`,
    /// which keeps what it allocates and refills it at each replay as `fill` says, see
    /// [`graph`]).
    fn with_storage(shape: &[usize], device: &Device, storage: Storage, fill: Option<f32>) -> Self {
        memory::allocated(4 * numel(shape));
        if let (Device::Emu(_), Storage::Host(v)) = (device, &storage) {
            graph::emu_allocated(v, fill);
        }
        Self {
            shape: shape.to_vec(),
            device: device.clone(),
            storage,
            derived: Mutex::new(Vec::new()),
        }
    }

    /// The tensor `make` computes from this one, made on the first call for `key` and kept
    /// until this tensor's data or shape changes: a convolution's weights reordered for its
    /// kernel, which change only at an optimiser step, are made once per sampling run instead
    /// of once per call. The kept tensors count as held memory, as any tensor.
    pub fn derived(
        &self,
        key: DerivedKey,
        make: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<Arc<Tensor>> {
        let mut kept = self.derived.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, t)) = kept.iter().find(|(k, _)| *k == key) {
            return Ok(Arc::clone(t));
        }
        let t = Arc::new(make(self)?);
        kept.push((key, Arc::clone(&t)));
        Ok(t)
    }

    /// Drops every derived tensor: the data or the shape is about to change.
    fn forget_derived(&mut self) {
        self.derived
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    pub fn from_slice(data: &[f32], shape: &[usize], device: &Device) -> Result<Self> {
        Self::from_vec(data.to_vec(), shape, device)
    }

    pub fn scalar(v: f32, device: &Device) -> Result<Self> {
        Self::from_vec(vec![v], &[], device)
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The data, copied to the host.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        self.note_host_access("a copy to the host");
        match &self.storage {
            Storage::Host(v) => Ok(v.clone()),
            Storage::Cuda(s) => match &self.device {
                Device::Cuda(dev) => dev.download(s, self.numel()),
                _ => unreachable!("cuda storage always lives on a cuda device"),
            },
        }
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::shape(
                "item",
                format!("tensor of shape {:?} is not a scalar", self.shape),
            ));
        }
        Ok(self.to_vec()?[0])
    }

    /// The same data on another device.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Self::from_vec(self.to_vec()?, &self.shape, device)
    }

    /// Same data, new shape with the same number of elements.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        if numel(shape) != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!(
                    "cannot view {:?} ({} elements) as {shape:?}",
                    self.shape,
                    self.numel()
                ),
            ));
        }
        self.forget_derived();
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// Host data, for the Rust reference implementations (`cpu` and `emu` only).
    pub fn host(&self) -> Result<&[f32]> {
        self.note_host_access("host code reading device memory");
        match &self.storage {
            Storage::Host(v) => Ok(v),
            Storage::Cuda(_) => Err(Error::invalid("host access to a tensor in GPU memory")),
        }
    }

    pub fn host_mut(&mut self) -> Result<&mut [f32]> {
        self.note_host_access("host code writing device memory");
        self.forget_derived();
        match &mut self.storage {
            Storage::Host(v) => Ok(v),
            Storage::Cuda(_) => Err(Error::invalid("host access to a tensor in GPU memory")),
        }
    }

    /// Overwrites the data with `values`, one per element, in place: the storage stays where it
    /// is, so that a captured graph reading it sees the new values at its next replay.
    pub fn write(&mut self, values: &[f32]) -> Result<()> {
        if values.len() != self.numel() {
            return Err(Error::shape(
                "write",
                format!("{} values for shape {:?}", values.len(), self.shape),
            ));
        }
        self.note_host_access("a copy from the host");
        self.forget_derived();
        match (&mut self.storage, &self.device) {
            (Storage::Host(v), _) => v.copy_from_slice(values),
            (Storage::Cuda(s), Device::Cuda(dev)) => dev.write(s, values)?,
            (Storage::Cuda(_), _) => unreachable!("cuda storage always lives on a cuda device"),
        }
        Ok(())
    }

    /// Tells a capture on `emu` that host code touches this tensor's memory (see [`graph`]).
    fn note_host_access(&self, what: &str) {
        if let Device::Emu(_) = self.device {
            graph::emu_host_access(what);
        }
    }

    /// The memory a kernel reads this tensor from.
    pub fn buffer(&self) -> Buffer<'_> {
        match &self.storage {
            Storage::Host(v) => Buffer::Host(v),
            Storage::Cuda(s) => Buffer::Cuda(s),
        }
    }

    /// The memory a kernel writes this tensor into.
    pub fn buffer_mut(&mut self) -> BufferMut<'_> {
        self.forget_derived();
        match &mut self.storage {
            Storage::Host(v) => BufferMut::Host(v),
            Storage::Cuda(s) => BufferMut::Cuda(s),
        }
    }

    /// Fails unless `other` has the same shape; `op` names the operation for the message.
    pub fn check_same_shape(&self, other: &Tensor, op: &'static str) -> Result<()> {
        if self.shape != other.shape {
            return Err(Error::shape(
                op,
                format!("{:?} vs {:?}", self.shape, other.shape),
            ));
        }
        if !self.device.same(&other.device) {
            return Err(Error::DeviceMismatch {
                op,
                a: self.device.to_string(),
                b: other.device.to_string(),
            });
        }
        Ok(())
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        memory::freed(4 * self.numel());
        if let (Device::Emu(_), Storage::Host(v)) = (&self.device, &mut self.storage) {
            graph::emu_dropping(v);
        }
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?} on {})", self.shape, self.device)
    }
}
