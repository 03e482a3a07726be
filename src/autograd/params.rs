//! Named parameters: an insertion-ordered map from PyTorch-style names (`res1.0.conv1.weight`) to
//! tensors on one device, with deterministic initialisation (SPEC section 5: Philox stream
//! PARAM_INIT).
//!
//! Each parameter draws from its own Philox step, a hash of its name, so a parameter's initial
//! values depend only on (seed, name, element): adding or reordering parameters changes no other.
use std::collections::HashMap;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::rng;
use crate::tensor::Tensor;

pub struct ParamStore {
    device: Device,
    seed: u64,
    names: Vec<String>,
    tensors: Vec<Tensor>,
    index: HashMap<String, usize>,
}

/// FNV-1a of the name: the Philox step of a parameter's draws.
fn name_step(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

impl ParamStore {
    /// An empty store whose parameters will live on `device`, initialised from `seed`.
    pub fn new(device: &Device, seed: u64) -> Self {
        Self {
            device: device.clone(),
            seed,
            names: Vec::new(),
            tensors: Vec::new(),
            index: HashMap::new(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Adds a parameter; a name already present is an error.
    pub fn insert(&mut self, name: &str, tensor: Tensor) -> Result<()> {
        if self.index.contains_key(name) {
            return Err(Error::invalid(format!("parameter {name} defined twice")));
        }
        if !tensor.device().same(&self.device) {
            return Err(Error::DeviceMismatch {
                op: "ParamStore::insert",
                a: self.device.to_string(),
                b: tensor.device().to_string(),
            });
        }
        self.index.insert(name.to_string(), self.names.len());
        self.names.push(name.to_string());
        self.tensors.push(tensor);
        Ok(())
    }

    /// Replaces the value of an existing parameter by one of the same shape (checkpoint loading),
    /// moving it to the store's device.
    pub fn set(&mut self, name: &str, tensor: Tensor) -> Result<()> {
        let device = self.device.clone();
        let slot = self.get_mut(name)?;
        if slot.shape() != tensor.shape() {
            return Err(Error::shape(
                "ParamStore::set",
                format!("{name}: {:?} vs stored {:?}", tensor.shape(), slot.shape()),
            ));
        }
        *slot = if tensor.device().same(&device) {
            tensor
        } else {
            tensor.to_device(&device)?
        };
        Ok(())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.index
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| Error::invalid(format!("no parameter named {name}")))
    }

    pub fn get_mut(&mut self, name: &str) -> Result<&mut Tensor> {
        match self.index.get(name) {
            Some(&i) => Ok(&mut self.tensors[i]),
            None => Err(Error::invalid(format!("no parameter named {name}"))),
        }
    }

    /// Parameters in insertion order (the order a PyTorch state_dict of the same model has when
    /// the model registers them in the same order).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.names.iter().map(String::as_str).zip(&self.tensors)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut Tensor)> {
        self.names.iter().map(String::as_str).zip(&mut self.tensors)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The total number of scalar parameters.
    pub fn num_elements(&self) -> usize {
        self.tensors.iter().map(Tensor::numel).sum()
    }

    /// A new parameter with element i = f(philox words of (seed, PARAM_INIT, step(name), i)).
    fn init_with(
        &mut self,
        name: &str,
        shape: &[usize],
        f: impl Fn(u64, [u32; 4]) -> f32,
    ) -> Result<()> {
        let step = name_step(name);
        let n: usize = shape.iter().product();
        let data = (0..n as u64)
            .map(|i| {
                f(
                    i,
                    rng::philox_bits(self.seed, rng::stream::PARAM_INIT, step, i),
                )
            })
            .collect();
        let t = Tensor::from_vec(data, shape, &self.device)?;
        self.insert(name, t)
    }

    /// A new parameter drawn from U(-bound, bound).
    pub fn init_uniform(&mut self, name: &str, shape: &[usize], bound: f32) -> Result<()> {
        self.init_with(name, shape, |_, bits| {
            bound * (2.0 * rng::uniform_closed_open(bits[0]) - 1.0)
        })
    }

    /// A new parameter drawn from N(mean, std^2).
    pub fn init_normal(&mut self, name: &str, shape: &[usize], mean: f32, std: f32) -> Result<()> {
        let (seed, step) = (self.seed, name_step(name));
        self.init_with(name, shape, |i, _| {
            mean + std * rng::normal(seed, rng::stream::PARAM_INIT, step, i)
        })
    }

    /// A new parameter with every element `value`.
    pub fn init_constant(&mut self, name: &str, shape: &[usize], value: f32) -> Result<()> {
        let n: usize = shape.iter().product();
        let t = Tensor::from_vec(vec![value; n], shape, &self.device)?;
        self.insert(name, t)
    }

    /// The same parameters on another device.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let mut out = Self::new(device, self.seed);
        for (name, t) in self.iter() {
            out.insert(name, t.to_device(device)?)?;
        }
        Ok(out)
    }
}
