//! GPU tasks as the grid sees them: what a worker's GPU is, what a GPU job asks of the workers
//! that run it, and how a task's input buffers travel.
//!
//! A GPU task's program is a kernel (WGSL, its buffers, its dispatches; `runegrid-gpu`), its
//! result the final bytes of its output buffers, returned as output files (one per buffer,
//! named as the buffer) and digested like any task's files. Its *fuel* is the kernel's work
//! (invocations × the shader's static cost), known before it runs.
//!
//! **Architecture Invariant:** pure; no I/O, no GPU.

use crate::tolerance::Tolerance;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A worker's GPU adapter, as it reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GpuAdapter {
    pub name: String,
    /// PCI vendor id (0 when the backend does not say).
    #[serde(default)]
    pub vendor: u32,
    /// PCI device id (0 when the backend does not say).
    #[serde(default)]
    pub device: u32,
    /// `discrete`, `integrated`, `virtual`, `cpu` or `other`.
    #[serde(default)]
    pub device_type: String,
    /// `vulkan`, `metal`, `dx12`, `gl` or `webgpu`.
    #[serde(default)]
    pub backend: String,
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub driver_info: String,
    /// A CPU implementation (lavapipe/llvmpipe, SwiftShader, WARP): it takes GPU tasks only
    /// of jobs that allow software adapters.
    #[serde(default)]
    pub software: bool,
    /// WebGPU feature names, e.g. `shader-f16`.
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub max_buffer_bytes: u64,
    #[serde(default)]
    pub max_storage_binding_bytes: u64,
    #[serde(default)]
    pub max_workgroups_per_dimension: u32,
    #[serde(default)]
    pub max_invocations_per_workgroup: u32,
}

impl GpuAdapter {
    /// The adapter class for homogeneous redundancy: same vendor, device, backend and driver.
    pub fn class(&self) -> String {
        format!(
            "{:04x}:{:04x}:{}:{} {}",
            self.vendor, self.device, self.backend, self.driver, self.driver_info
        )
    }
}

/// How the results of a GPU job's replicas are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum GpuVerify {
    /// Equal digests, as for every other task: integer and fixed-point kernels give the same
    /// bytes on every GPU.
    #[default]
    Exact,
    /// Equal digests, with a task's replicas only on workers of the adapter class of its first
    /// attempt ([`GpuAdapter::class`]; BOINC's homogeneous redundancy): float kernels agree
    /// bit for bit on one driver.
    Homogeneous,
    /// Outputs read as `f32` arrays agree element-wise within the tolerance
    /// ([`crate::tolerance`]).
    Tolerance {
        #[serde(flatten)]
        tolerance: Tolerance,
    },
}

impl std::fmt::Display for GpuVerify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GpuVerify::Exact => f.write_str("exact"),
            GpuVerify::Homogeneous => f.write_str("homogeneous"),
            GpuVerify::Tolerance { tolerance } => write!(f, "{tolerance}"),
        }
    }
}

impl std::str::FromStr for GpuVerify {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "exact" => Ok(GpuVerify::Exact),
            "homogeneous" => Ok(GpuVerify::Homogeneous),
            t if t == "tolerance" || t.starts_with("tolerance:") => Ok(GpuVerify::Tolerance {
                tolerance: t
                    .parse()
                    .map_err(|e: crate::ToleranceError| e.to_string())?,
            }),
            other => Err(format!(
                "unknown verification {other:?}: expected exact, homogeneous or tolerance:abs=…,rel=…,ulps=…"
            )),
        }
    }
}

/// What a GPU job asks of the workers that run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct GpuOptions {
    /// How replicas are compared (default `exact`).
    pub verify: GpuVerify,
    /// Software adapters (lavapipe, SwiftShader, WARP) may run it (default: only GPUs).
    pub allow_software: bool,
}

/// Whether a program's bytes are a GPU kernel (JSON) rather than a WebAssembly module.
pub fn is_kernel(program: &[u8]) -> bool {
    program.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// What a GPU task needs of a worker: a GPU, a hardware one unless software is allowed, and,
/// under homogeneous redundancy, one of the class its first attempt ran on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GpuNeed {
    pub allow_software: bool,
    pub class: Option<String>,
}

impl GpuNeed {
    /// Whether a worker with `adapter` (none: no GPU) may run the task.
    pub fn met_by(&self, adapter: Option<&GpuAdapter>) -> bool {
        let Some(a) = adapter else { return false };
        (self.allow_software || !a.software) && self.class.as_ref().is_none_or(|c| *c == a.class())
    }
}

/// Why a task's framed buffers could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the task's input buffers are malformed: {0}")]
pub struct FramingError(&'static str);

/// A GPU task's input buffers as one byte string (its stdin, stored and sent like any task's):
/// per buffer, in name order, the name's length (u32 LE), the name, the length of the bytes
/// (u64 LE) and the bytes.
pub fn encode_buffers<B: AsRef<[u8]>>(buffers: &BTreeMap<String, B>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, bytes) in buffers {
        let bytes = bytes.as_ref();
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// The buffers [`encode_buffers`] framed.
pub fn decode_buffers(mut framed: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, FramingError> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], FramingError> {
        if b.len() < n {
            return Err(FramingError("truncated"));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    let mut out = BTreeMap::new();
    while !framed.is_empty() {
        let n = u32::from_le_bytes(take(&mut framed, 4)?.try_into().expect("4 bytes")) as usize;
        let name = std::str::from_utf8(take(&mut framed, n)?)
            .map_err(|_| FramingError("a name is not UTF-8"))?
            .to_owned();
        let len = u64::from_le_bytes(take(&mut framed, 8)?.try_into().expect("8 bytes"));
        let len = usize::try_from(len).map_err(|_| FramingError("a buffer is too long"))?;
        let bytes = take(&mut framed, len)?.to_vec();
        if out.insert(name, bytes).is_some() {
            return Err(FramingError("a name appears twice"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn adapter(software: bool, driver: &str) -> GpuAdapter {
        GpuAdapter {
            name: "gpu".into(),
            vendor: 0x10005,
            device: 0,
            device_type: if software { "cpu" } else { "discrete" }.into(),
            backend: "vulkan".into(),
            driver: driver.into(),
            driver_info: "1.0".into(),
            software,
            features: vec![],
            max_buffer_bytes: 1 << 30,
            max_storage_binding_bytes: 1 << 27,
            max_workgroups_per_dimension: 65535,
            max_invocations_per_workgroup: 256,
        }
    }

    #[test]
    fn who_may_run_a_gpu_task() {
        let hw = adapter(false, "mesa");
        let sw = adapter(true, "llvmpipe");
        let need = GpuNeed::default();
        assert!(!need.met_by(None));
        assert!(need.met_by(Some(&hw)));
        assert!(!need.met_by(Some(&sw)));
        let soft = GpuNeed {
            allow_software: true,
            class: None,
        };
        assert!(soft.met_by(Some(&sw)) && soft.met_by(Some(&hw)));
        let pinned = GpuNeed {
            allow_software: true,
            class: Some(hw.class()),
        };
        assert!(pinned.met_by(Some(&hw)));
        assert!(!pinned.met_by(Some(&sw)));
        assert!(!pinned.met_by(Some(&adapter(false, "other driver"))));
    }

    #[test]
    fn verification_modes_parse() {
        assert_eq!("exact".parse::<GpuVerify>(), Ok(GpuVerify::Exact));
        assert_eq!(
            "homogeneous".parse::<GpuVerify>(),
            Ok(GpuVerify::Homogeneous)
        );
        let t: GpuVerify = "tolerance:rel=1e-4,ulps=4".parse().unwrap();
        assert_eq!(
            t,
            GpuVerify::Tolerance {
                tolerance: Tolerance::new(0.0, 1e-4, 4).unwrap()
            }
        );
        assert!("tolerance:rel=-1".parse::<GpuVerify>().is_err());
        assert!("approximate".parse::<GpuVerify>().is_err());
        let json = serde_json::to_string(&GpuOptions {
            verify: t,
            allow_software: true,
        })
        .unwrap();
        assert_eq!(serde_json::from_str::<GpuOptions>(&json).unwrap().verify, t);
        assert_eq!(
            serde_json::from_str::<GpuOptions>("{}").unwrap(),
            GpuOptions::default()
        );
    }

    #[test]
    fn malformed_framing_is_refused() {
        let mut one = BTreeMap::new();
        one.insert("a".to_string(), vec![1u8, 2, 3, 4]);
        let framed = encode_buffers(&one);
        for cut in 1..framed.len() {
            assert!(decode_buffers(&framed[..cut]).is_err(), "cut at {cut}");
        }
        let mut twice = framed.clone();
        twice.extend_from_slice(&framed);
        assert!(decode_buffers(&twice).is_err());
        assert_eq!(decode_buffers(&[]).unwrap(), BTreeMap::new());
    }

    proptest! {
        #[test]
        fn framing_round_trips(buffers in proptest::collection::btree_map(
            "[a-z_.-]{1,12}", proptest::collection::vec(any::<u8>(), 0..64), 0..6)) {
            let framed = encode_buffers(&buffers);
            prop_assert_eq!(decode_buffers(&framed).unwrap(), buffers);
        }
    }
}
