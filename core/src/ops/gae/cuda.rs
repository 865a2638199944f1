//! CUDA path of GAE: launches `core/kernels/gae.cu`, one thread per env walking back in time.
//! **Unverified on GPU** until `benches/gpu-check.sh` has passed on an H100; compiled with
//! NVRTC 13.0 in the tests. Worth it only when the rollout already lives on the GPU: for
//! host data the copies cost more than the O(T N) recurrence.

use super::{cpu::Gae, input::GaeInput};
use crate::device::{driver_err, CudaDevice, Kernel};
use crate::{Error, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// A rollout resident on the GPU; flags byte: bit 0 terminated, bit 1 truncated.
pub struct DeviceRollout {
    rewards: CudaSlice<f32>,
    values: CudaSlice<f32>,
    next_values: CudaSlice<f32>,
    flags: CudaSlice<u8>,
    t: usize,
    n: usize,
}

impl DeviceRollout {
    /// Copy a validated rollout to the GPU.
    pub fn upload(dev: &CudaDevice, x: &GaeInput) -> Result<Self> {
        let s = dev.stream();
        let up = |v: &[f32]| {
            s.clone_htod(v)
                .map_err(|e| driver_err("copying the rollout", e))
        };
        let flags: Vec<u8> = x
            .terminated
            .iter()
            .zip(x.truncated)
            .map(|(&a, &b)| a as u8 | ((b as u8) << 1))
            .collect();
        Ok(DeviceRollout {
            rewards: up(x.rewards)?,
            values: up(x.values)?,
            next_values: up(x.next_values)?,
            flags: s
                .clone_htod(&flags)
                .map_err(|e| driver_err("copying the rollout", e))?,
            t: x.t,
            n: x.n,
        })
    }

    /// Launch GAE into `adv` and `ret` ([T, N] device buffers).
    pub fn gae_into(
        &self,
        dev: &CudaDevice,
        gamma: f32,
        lambda: f32,
        adv: &mut CudaSlice<f32>,
        ret: &mut CudaSlice<f32>,
    ) -> Result<()> {
        if self.t == 0 || self.n == 0 {
            return Ok(());
        }
        let t = i32::try_from(self.t)
            .map_err(|_| Error::input(format!("gae: T = {} > i32", self.t), None))?;
        let n = i32::try_from(self.n)
            .map_err(|_| Error::input(format!("gae: N = {} > i32", self.n), None))?;
        let f = dev.function(Kernel::Gae, "gae")?;
        let cfg = LaunchConfig {
            grid_dim: (self.n.div_ceil(128) as u32, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = dev.stream().launch_builder(&f);
        b.arg(&self.rewards)
            .arg(&self.values)
            .arg(&self.next_values)
            .arg(&self.flags)
            .arg(adv)
            .arg(ret)
            .arg(&t)
            .arg(&n)
            .arg(&gamma)
            .arg(&lambda);
        // SAFETY: arguments follow `gae(const float* rewards, const float* values,
        // const float* next_values, const u8* flags, float* adv, float* ret, int T, int N,
        // float gamma, float lambda)`; every buffer is [T, N]; threads past N return.
        unsafe { b.launch(cfg) }.map_err(|e| driver_err("launching gae", e))?;
        Ok(())
    }

    /// Run GAE and copy advantages and returns back.
    pub fn gae(&self, dev: &CudaDevice, gamma: f32, lambda: f32) -> Result<Gae> {
        let s = dev.stream();
        let alloc = || {
            s.alloc_zeros::<f32>(self.t * self.n)
                .map_err(|e| driver_err("allocating GAE outputs", e))
        };
        let (mut adv, mut ret) = (alloc()?, alloc()?);
        self.gae_into(dev, gamma, lambda, &mut adv, &mut ret)?;
        let down = |x: &CudaSlice<f32>| {
            s.clone_dtoh(x)
                .map_err(|e| driver_err("copying GAE outputs", e))
        };
        Ok(Gae {
            advantages: down(&adv)?,
            returns: down(&ret)?,
        })
    }
}
