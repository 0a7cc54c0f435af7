//! Which device the tensors live on, by the name users give it: `cpu`, `cuda` or `cuda:N`.

use candle_core::Device;

/// A device name that is not `cpu`, `cuda` or `cuda:N`, or a GPU this build or machine lacks.
#[derive(Debug, thiserror::Error)]
#[error("'{name}': {reason}")]
pub struct DeviceError {
    pub name: String,
    pub reason: String,
}

/// `""` and `cpu` are the CPU; `cuda` is the first CUDA GPU and `cuda:N` the N-th, when the build
/// has the `cuda` feature and the machine the GPU.
pub fn parse_device(name: &str) -> Result<Device, DeviceError> {
    let name = name.trim();
    let error = |reason: String| DeviceError { name: name.to_string(), reason };
    if name.is_empty() || name == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match name.strip_prefix("cuda").map(|rest| (rest, rest.strip_prefix(':'))) {
        Some(("", _)) => 0,
        Some((_, Some(index))) => index.parse().map_err(|_| error("the GPU index must be a number".into()))?,
        _ => return Err(error("neither \"cpu\" nor \"cuda:N\"".into())),
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(error(
            "this build has no CUDA support (rebuild with the cuda feature: cargo build --features cuda, or colcon with -DMOE_VLA_CUDA=ON)"
                .into(),
        ));
    }
    Device::new_cuda(ordinal).map_err(|e| error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_is_named_cpu_or_nothing() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device(" ").unwrap().is_cpu());
    }

    #[test]
    fn other_names_are_refused_with_the_reason() {
        for (name, reason) in
            [("gpu", "neither"), ("cuda:x", "must be a number"), ("cudaa", "neither"), ("cuda:-1", "must be a number")]
        {
            let err = parse_device(name).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains(reason), "{name}: {err}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_build_without_cuda_says_how_to_get_it() {
        let err = parse_device("cuda:0").unwrap_err().to_string();
        assert!(err.contains("no CUDA support") && err.contains("--features cuda"), "{err}");
    }
}
