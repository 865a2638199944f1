//! CUDA path of the BT mixture E-step: launches `core/kernels/bt_estep.cu`, one thread per
//! (user, group) over the user-sorted comparisons. **Unverified on GPU** until
//! `benches/gpu-check.sh` has passed on an H100; compiled with NVRTC 13.0 in the tests.

use super::cpu::Segments;
use crate::device::{driver_err, CudaDevice, Kernel};
use crate::{Error, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// Comparisons resident on the GPU.
pub struct DeviceComparisons {
    r_chosen: CudaSlice<f32>,
    r_rejected: CudaSlice<f32>,
    order: CudaSlice<u32>,
    offsets: CudaSlice<u32>,
    users: usize,
    k: usize,
}

impl DeviceComparisons {
    /// Copy [m, k] rewards and the user segments to the GPU.
    pub fn upload(
        dev: &CudaDevice,
        r_chosen: &[f32],
        r_rejected: &[f32],
        seg: &Segments,
        k: usize,
    ) -> Result<Self> {
        let s = dev.stream();
        let up = |x: &[f32]| {
            s.clone_htod(x)
                .map_err(|e| driver_err("copying rewards", e))
        };
        let upu = |x: &[u32]| {
            s.clone_htod(x)
                .map_err(|e| driver_err("copying segments", e))
        };
        Ok(DeviceComparisons {
            r_chosen: up(r_chosen)?,
            r_rejected: up(r_rejected)?,
            order: upu(&seg.order)?,
            offsets: upu(&seg.offsets)?,
            users: seg.offsets.len() - 1,
            k,
        })
    }

    /// Launch the E-step into `ll` ([users, k]).
    pub fn estep_into(&self, dev: &CudaDevice, ll: &mut CudaSlice<f32>) -> Result<()> {
        let total = self.users * self.k;
        if total == 0 {
            return Ok(());
        }
        let users = i32::try_from(self.users)
            .map_err(|_| Error::input(format!("bt_estep: {} users > i32", self.users), None))?;
        let k = i32::try_from(self.k)
            .map_err(|_| Error::input(format!("bt_estep: k = {} > i32", self.k), None))?;
        let f = dev.function(Kernel::BtEstep, "bt_estep")?;
        let cfg = LaunchConfig {
            grid_dim: (total.div_ceil(256) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = dev.stream().launch_builder(&f);
        b.arg(&self.r_chosen)
            .arg(&self.r_rejected)
            .arg(&self.order)
            .arg(&self.offsets)
            .arg(ll)
            .arg(&users)
            .arg(&k);
        // SAFETY: arguments follow `bt_estep(const float*, const float*, const u32* order,
        // const u32* offsets, float* ll, int users, int k)`; rewards are [m, k], order [m],
        // offsets [users + 1] with values ≤ m, ll [users, k]; threads past users × k return.
        unsafe { b.launch(cfg) }.map_err(|e| driver_err("launching bt_estep", e))?;
        Ok(())
    }

    /// Run the E-step and copy the [users, k] matrix back.
    pub fn estep(&self, dev: &CudaDevice) -> Result<Vec<f32>> {
        let mut ll = dev
            .stream()
            .alloc_zeros::<f32>(self.users * self.k)
            .map_err(|e| driver_err("allocating the E-step output", e))?;
        self.estep_into(dev, &mut ll)?;
        dev.stream()
            .clone_dtoh(&ll)
            .map_err(|e| driver_err("copying the E-step output", e))
    }
}
