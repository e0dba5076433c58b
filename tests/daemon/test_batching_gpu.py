"""GPU offload planning from llama.cpp's device list, and what `personad doctor` shows of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon._ops import gpu_checks
from daemon.engine import (
    Device,
    EngineOptions,
    LlamaModel,
    ModelShape,
    plan_offload,
    probe_devices,
)
from daemon.errors import ConfigError
from daemon.settings import load_settings
from models import Catalog
from tests.conftest import make_settings, manifest_for

GiB = 1 << 30
SHAPE = ModelShape(size_bytes=4 * GiB, n_layer=31, kv_bytes_per_token_layer=4096)
CPU = Device("CPU", "a CPU", "cpu", 16 * GiB, 16 * GiB)


def gpu(free_gib: float) -> Device:
    """A GPU with ``free_gib`` GiB free."""
    return Device("CUDA0", "a test GPU", "gpu", int(free_gib * GiB), 24 * GiB)


def test_auto_offloads_nothing_without_a_gpu() -> None:
    """With only a CPU device, auto plans zero layers."""
    plan = plan_offload(SHAPE, [CPU], kv_tokens=4 * 4096)
    assert plan.layers == 0 and "CPU only" in plan.reason


def test_auto_offloads_what_fits_with_the_slots_kv_cache() -> None:
    """Layers fit in free memory after the reserve, each with its KV for slots x context."""
    per_layer = SHAPE.size_bytes // 32 + 4096 * 4 * 4096  # 128 MiB weights + 64 MiB KV
    plan = plan_offload(SHAPE, [CPU, gpu(2.5)], kv_tokens=4 * 4096)
    assert plan.layers == (2 * GiB) // per_layer == 10
    assert plan_offload(SHAPE, [CPU, gpu(24)], kv_tokens=4 * 4096).layers == 31
    # More slots, more KV per layer: fewer layers fit.
    assert plan_offload(SHAPE, [gpu(2.5)], kv_tokens=16 * 4096).layers < 10
    assert plan_offload(SHAPE, [gpu(0.4)], kv_tokens=4096).layers == 0


def test_a_number_of_layers_is_kept_as_set() -> None:
    """An explicit n_gpu_layers is not second-guessed; -1 means every layer."""
    assert plan_offload(SHAPE, [CPU], kv_tokens=1, requested=5).layers == 5
    assert plan_offload(SHAPE, [CPU], kv_tokens=1, requested=-1).layers == 31


def test_the_real_probe_sees_this_machines_cpu(demo_path: Path) -> None:
    """llama.cpp's device registry is read; on this CPU-only build auto loads 0 layers."""
    devices = probe_devices()
    assert any(d.kind == "cpu" and d.total > 0 for d in devices)
    model = LlamaModel(manifest_for(demo_path, context_length=256))
    try:
        assert model.offload.layers == 0 and model.offload.n_layer == 30
    finally:
        model.close()


def test_a_manifest_setting_overrides_the_models_section(demo_path: Path) -> None:
    """A manifest's explicit n_gpu_layers and flash_attn win over [models]."""
    manifest = manifest_for(demo_path, n_gpu_layers=0, flash_attn=False)
    opts = EngineOptions(flash_attn=True, n_gpu_layers="auto").for_manifest(manifest)
    assert opts.n_gpu_layers == 0 and opts.flash_attn is False
    default = EngineOptions(flash_attn=True).for_manifest(manifest_for(demo_path))
    assert default.n_gpu_layers == "auto" and default.flash_attn is True


def test_doctor_shows_devices_slots_kv_and_offload(tmp_path: Path) -> None:
    """Doctor lists the devices and, per model, slots x context, KV size and planned layers."""
    settings = make_settings(tmp_path, parallel=3)
    catalog = Catalog.load(settings.models.dir, include_demo=True)
    lines = [c.what for c in gpu_checks(settings, catalog, probe=lambda: [CPU, gpu(8)])]
    assert lines[0].startswith("devices: CPU [cpu]") and "CUDA0 [gpu]" in lines[0]
    model = next(line for line in lines if line.startswith("model smollm2"))
    # SmolLM2-135M: 30 layers x 768 B per token-layer x 3 x 2048 tokens = 135 MiB.
    assert "3 slots x 2048 tokens = 135 MiB KV cache" in model
    assert "30/30 layers on GPU" in model and model.endswith("flash attention on")
    cpu_only = gpu_checks(settings, catalog, probe=lambda: [CPU])
    assert "0/30 layers on GPU (no GPU device: CPU only)" in cpu_only[-1].what
    assert cpu_only[-1].what.endswith("flash attention off")


def test_flash_attention_auto_follows_the_offload(demo_path: Path) -> None:
    """flash_attn "auto" (the default) is on with layers on a GPU and off on the CPU; an
    explicit setting wins either way."""
    shape = ModelShape(size_bytes=100 << 20, n_layer=30, kv_bytes_per_token_layer=768)
    on_gpu = plan_offload(shape, [CPU, gpu(8)], kv_tokens=2048, requested="auto")
    on_cpu = plan_offload(shape, [CPU], kv_tokens=2048, requested="auto")
    auto = EngineOptions()
    assert auto.flash_attn == "auto"
    assert auto.flash_attn_for(on_gpu) and not auto.flash_attn_for(on_cpu)
    assert EngineOptions(flash_attn=True).flash_attn_for(on_cpu)
    assert not EngineOptions(flash_attn=False).flash_attn_for(on_gpu)
    model = LlamaModel(manifest_for(demo_path, context_length=256))
    try:  # this machine has no GPU: the context was made without flash attention
        assert model._llm.context_params.flash_attn_type == 0
    finally:
        model.close()


def test_models_settings_take_the_engine_options(tmp_path: Path) -> None:
    """[models] parallel, threads, flash_attn and n_gpu_layers reach the engine's options."""
    settings = make_settings(
        tmp_path, parallel=8, n_threads=1, n_threads_batch=2, flash_attn=False, n_gpu_layers=-1
    )
    opts = EngineOptions.from_settings(settings.models)
    assert (opts.parallel, opts.n_threads, opts.n_threads_batch) == (8, 1, 2)
    assert opts.flash_attn is False and opts.n_gpu_layers == -1
    assert EngineOptions.from_settings(make_settings(tmp_path).models).n_gpu_layers == "auto"


def test_a_bad_n_gpu_layers_is_a_clear_error(tmp_path: Path) -> None:
    """n_gpu_layers below -1 or an unknown word is refused with the accepted forms named."""
    for bad in ("-2", "most"):
        with pytest.raises(ConfigError, match="n_gpu_layers"):
            load_settings(tmp_path / "none.toml", environ={"PERSONAD_MODELS__N_GPU_LAYERS": bad})
