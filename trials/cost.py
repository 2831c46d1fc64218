"""Device detection and price per device-hour."""

from __future__ import annotations

__all__ = [
    "DEFAULT_USD_PER_DEVICE_HOUR",
    "detect_device",
    "device_share",
    "price_per_hour",
]

# Approximate on-demand list prices per single device, as published by Lambda Cloud
# (H100/A100 GPUs) and Google Cloud (L4/T4 GPUs; CPU = one e2-standard-2 VM) in 2025.
# Matched by substring against the detected device name, first match wins.
DEFAULT_USD_PER_DEVICE_HOUR: dict[str, float] = {
    "H200": 3.79,
    "H100": 2.99,
    "A100": 1.79,
    "A10": 0.75,
    "L40": 1.29,
    "L4": 0.71,
    "V100": 2.48,
    "T4": 0.35,
    "cpu": 0.067,
}
GENERIC_GPU_USD_PER_HOUR = 2.0


def detect_device(requested: str = "auto") -> tuple[str, str]:
    """Return (torch device, human device name) for ``training.device``."""
    import torch

    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from peftsearch.errors import UserError

            raise UserError(
                "CUDA was requested but no GPU is visible",
                where="training.device",
                hint="use auto or cpu",
            )
        return "cuda", torch.cuda.get_device_name(torch.cuda.current_device())
    return "cpu", "cpu"


def price_per_hour(device_name: str, overrides: dict[str, float] | None = None) -> float:
    """User prices first (exact name, then substring), then the defaults table."""
    for table in (overrides or {}, DEFAULT_USD_PER_DEVICE_HOUR):
        if device_name in table:
            return table[device_name]
        for key, price in table.items():
            if key.lower() in device_name.lower():
                return price
    return GENERIC_GPU_USD_PER_HOUR


def device_share(device: str, *, cpus: float, gpus: float, vcpus_per_cpu_price: int = 2) -> float:
    """How much of one priced device a trial holds: its GPU fraction on a GPU (two trials
    at 0.5 share one GPU and each pays half), its cores over the vCPUs the ``cpu`` price
    buys on a CPU. A trial is charged share x wall time x price."""
    if device.startswith("cuda"):
        return gpus if gpus > 0 else 1.0
    return cpus / vcpus_per_cpu_price
