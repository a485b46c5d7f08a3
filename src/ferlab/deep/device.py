"""Where the CNN computes: the device, its CPU threads and bfloat16 autocast."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch

from ferlab.errors import ConfigError

if TYPE_CHECKING:
    from ferlab.settings import DeviceSettings

# PyTorch's probes of the CPU's bfloat16 instructions (private, so looked up by name). Without
# them, bfloat16 autocast is emulated: 7.6x slower training on a 2-core AMD EPYC Zen 3.
BF16_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; anything else must exist here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but no CUDA GPU is available")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu or cuda[:N]")
    return device


def autocast_device(settings: DeviceSettings, device: torch.device) -> str | None:
    """The device type to run bfloat16 autocast on under the ``device`` settings, or None."""
    if device.type == "cuda" and settings.amp:
        return "cuda"
    if device.type == "cpu" and settings.cpu_bf16:
        return "cpu"
    return None


def autocast(device_type: str | None):
    """A bfloat16 autocast context on ``device_type`` (from :func:`autocast_device`), or a
    context that changes nothing when it is None."""
    if device_type is not None:
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(channels_last: bool) -> torch.memory_format:
    """The memory format of images (N, C, H, W) and weights under ``device.channels_last``."""
    return torch.channels_last if channels_last else torch.contiguous_format


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX-512 BF16 or AMX), as PyTorch reports them;
    True where this PyTorch cannot say."""
    probes = [getattr(torch.cpu, name, None) for name in BF16_PROBES]
    return any(probe is None or probe() for probe in probes)


def apply_threads(threads: int) -> None:
    """Use ``threads`` CPU threads (0 keeps PyTorch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)


def setup_device(name: str, threads: int) -> torch.device:
    """The device ``name`` resolves to, with the CPU threads set and cuDNN autotuning on CUDA."""
    device = resolve_device(name)
    apply_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def prepare(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A batch (N, C, H, W) in the memory format the network runs in."""
    if channels_last:
        return x.contiguous(memory_format=torch.channels_last)
    return x
