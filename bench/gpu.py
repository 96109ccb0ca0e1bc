"""GPU throughput: ORT CUDA EP fp32/fp16, IOBinding, TensorRT EP fp16 (behind a parity gate), PyTorch eager.

    python -m bench.gpu [--batches 1,8,32,64,128,256] [--json] [--quick] [--no-e2e]

Needs an NVIDIA GPU with its driver (libcuda) and onnxruntime-gpu's CUDA 12 / cuDNN 9 libraries. On a
machine without one it prints a well-formed report with "cuda_available": false and the reason; that
is success for --quick (the test suite runs it on CPU-only machines) and exit status 2 otherwise.

Sections (base SigLIP-B/16 at 224 px, random weights, exported by models.export):
- encoder img/s by batch size for
  ort_cuda_fp32 / ort_cuda_fp16   session.run with numpy in and out (H2D of uint8 pixels, D2H of vectors)
  *_iobinding                     pixels already on the GPU, output left there ("tensors in")
  ort_trt_fp16(_iobinding)        TensorRT EP with fp16 kernels on the fp32 graph; used only if its min
                                  cosine vs ORT CUDA fp32 is >= 0.999 (TensorRT fp16 SigLIP is known to
                                  drift: TensorRT#4373)
  torch_eager_fp16                the same tower in PyTorch (CUDA build of torch only)
  and the FLOP limit: 35.4 GFLOP per image (open_clip's profile) against the GPU's dense fp16 peak.
- end to end: POST /items (multipart JPEG uploads) against `python -m app` with LOOKALIKE_DEVICE=cuda,
  from client processes on all cores, micro-batching on (max 128) vs off (max 1).

Targets: >= 10k img/s SigLIP-B/16 fp16 with tensors in; >= 3k img/s end to end from JPEGs on
16 cores; micro-batching >= 3x on GPU at saturation.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from app.core.model_contract import INPUT_NAME, OUTPUT_NAME
from bench.common import (
    base_parser,
    cache_dir,
    cached_model,
    cosine_rows,
    emit,
    machine_info,
    machine_line,
    percentile,
    table,
)
from bench.live import running_service
from models.photos import textured_photo

GFLOP_PER_IMAGE = 35.4  # SigLIP-B/16 @ 224, open_clip's profile
COSINE_GATE = 0.999
TARGET_TENSORS_IMG_S = 10_000
TARGET_E2E_IMG_S = 3_000
TARGET_BATCHING_GAIN = 3.0
# Dense fp16/bf16 tensor-core peaks (TFLOP/s, no sparsity), matched against the CUDA device name.
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "T4": 65.0,
}


# ---------------------------------------------------------------- is there a GPU?


def cuda_devices() -> tuple[list[dict[str, Any]], str]:
    """The CUDA devices the driver reports (name, memory), or [] and why not. No model, no torch."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        return [], f"no NVIDIA driver (libcuda.so.1 not loadable: {exc})"
    if lib.cuInit(0) != 0:
        return [], "the NVIDIA driver is present but cuInit failed (no usable GPU)"
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return [], "the NVIDIA driver reports no CUDA device"
    devices = []
    for ordinal in range(count.value):
        handle = ctypes.c_int(0)
        lib.cuDeviceGet(ctypes.byref(handle), ordinal)
        name = ctypes.create_string_buffer(256)
        lib.cuDeviceGetName(name, 256, handle)
        memory = ctypes.c_size_t(0)
        lib.cuDeviceTotalMem_v2(ctypes.byref(memory), handle)
        devices.append({"index": ordinal, "name": name.value.decode(errors="replace"), "memory_bytes": memory.value})
    return devices, ""


def ort_cuda_works(model_path: Any) -> tuple[bool, str]:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, "this onnxruntime build has no CUDA execution provider (install onnxruntime-gpu only)"
    try:
        session = ort.InferenceSession(str(model_path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    except Exception as exc:
        return False, f"ONNX Runtime could not create a CUDA session: {exc}"
    active = session.get_providers()
    if active[0] != "CUDAExecutionProvider":
        return False, f"the CUDA execution provider did not become active ({active}); check CUDA 12 and cuDNN 9"
    return True, ""


def peak_tflops(device_name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, value in PEAK_TFLOPS.items():
        if key in device_name:
            return value
    return None


# ---------------------------------------------------------------- encoder variants


def _probe(size: int) -> np.ndarray:
    import io

    from PIL import Image

    from app.core.model_contract import resize_for_model

    rng = np.random.default_rng(5)
    photos = [
        resize_for_model(Image.open(io.BytesIO(textured_photo(200 + i, 640, 480))), size, "bicubic") for i in range(8)
    ]
    return np.concatenate([rng.integers(0, 256, (8, size, size, 3), dtype=np.uint8), np.stack(photos)])


class OrtVariant:
    """One ORT session; `prepare(pixels)` returns a zero-argument callable that runs one batch to completion."""

    def __init__(self, name: str, path: Any, providers: list[Any], iobinding: bool) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.name = name
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.provider = self.session.get_providers()[0]
        self.iobinding = iobinding

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0], dtype=np.float32)

    def prepare(self, pixels: np.ndarray) -> Callable[[], None]:
        import onnxruntime as ort

        if not self.iobinding:
            return lambda: self.embed(pixels)
        on_device = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(pixels), "cuda", 0)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(INPUT_NAME, on_device)
        binding.bind_output(OUTPUT_NAME, "cuda", 0)

        def run() -> None:
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        return run


class TorchVariant:
    def __init__(self) -> None:
        import torch

        from models.export import PixelsToEmbedding, load_source

        src = load_source(config="base", seed=0)
        self.torch = torch
        self.name = "torch_eager_fp16"
        self.provider = f"torch {torch.__version__} cuda"
        tower = src.tower.half().cuda().eval()
        self.module = PixelsToEmbedding(tower, src.preprocessing, torch.float16).cuda().eval()

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.module(self.torch.from_numpy(pixels).cuda()).float().cpu().numpy()

    def prepare(self, pixels: np.ndarray) -> Callable[[], None]:
        x = self.torch.from_numpy(pixels).cuda()

        def run() -> None:
            with self.torch.inference_mode():
                self.module(x)
            self.torch.cuda.synchronize()

        return run


def build_variants(quick: bool) -> tuple[list[Any], dict[str, str]]:
    fp32, fp16 = cached_model("tiny" if quick else "base"), cached_model("tiny" if quick else "base", "fp16")
    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    trt_cache = cache_dir("trt")
    size = 32 if quick else 224
    trt = [
        (
            "TensorrtExecutionProvider",
            {
                "trt_fp16_enable": True,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(trt_cache),
                "trt_profile_min_shapes": f"pixels:1x{size}x{size}x3",
                "trt_profile_opt_shapes": f"pixels:64x{size}x{size}x3",
                "trt_profile_max_shapes": f"pixels:256x{size}x{size}x3",
            },
        ),
        *cuda,
    ]
    specs = [
        ("ort_cuda_fp32", fp32, cuda, False),
        ("ort_cuda_fp32_iobinding", fp32, cuda, True),
        ("ort_cuda_fp16", fp16, cuda, False),
        ("ort_cuda_fp16_iobinding", fp16, cuda, True),
        ("ort_trt_fp16", fp32, trt, False),
        ("ort_trt_fp16_iobinding", fp32, trt, True),
    ]
    variants: list[Any] = []
    skipped: dict[str, str] = {}
    for name, path, providers, iobinding in specs:
        try:
            v = OrtVariant(name, path, providers, iobinding)
        except Exception as exc:
            skipped[name] = f"could not create the session: {exc}"[:300]
            continue
        wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
        if v.provider != wanted:
            skipped[name] = f"{wanted} did not become active (got {v.provider})"
            continue
        variants.append(v)
    try:
        import torch

        if torch.cuda.is_available() and not quick:
            variants.append(TorchVariant())
        elif not quick:
            skipped["torch_eager_fp16"] = f"torch {torch.__version__} has no CUDA here"
    except Exception as exc:
        skipped["torch_eager_fp16"] = f"{exc}"[:300]
    return variants, skipped


def time_variant(run: Callable[[], None], batch: int, min_s: float, max_iters: int) -> float:
    for _ in range(3):
        run()
    iters = 0
    t0 = time.perf_counter()
    while iters < max_iters and (iters < 3 or time.perf_counter() - t0 < min_s):
        run()
        iters += 1
    return batch * iters / (time.perf_counter() - t0)


def encoder_section(quick: bool, batches: list[int], flop_limit: float | None) -> dict[str, Any]:
    from tqdm import tqdm

    variants, skipped = build_variants(quick)
    size = 32 if quick else 224
    probe = _probe(size)
    reference = next(v for v in variants if v.name == "ort_cuda_fp32").embed(probe)
    parity = {}
    for v in variants:
        try:
            parity[v.name] = round(float(cosine_rows(v.embed(probe), reference).min()), 6)
        except Exception as exc:
            skipped[v.name] = f"failed on the parity images: {exc}"[:300]
    variants = [v for v in variants if v.name in parity]
    rows = []
    rng = np.random.default_rng(0)
    for batch in tqdm(batches, desc="GPU batch sizes", file=sys.stderr, leave=False):
        pixels = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        for v in variants:
            try:
                img_s = time_variant(v.prepare(pixels), batch, min_s=0.5 if quick else 2.0, max_iters=200)
            except Exception as exc:  # e.g. out of memory at the largest batch
                rows.append({"variant": v.name, "batch": batch, "img_per_s": None, "error": f"{exc}"[:200]})
                continue
            rows.append(
                {
                    "variant": v.name,
                    "batch": batch,
                    "img_per_s": round(img_s, 1),
                    "ms_per_batch": round(batch / img_s * 1e3, 3),
                    "fraction_of_flop_limit": round(img_s / flop_limit, 3) if flop_limit else None,
                }
            )
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.get("img_per_s") is not None and r["img_per_s"] > best.get(r["variant"], {}).get("img_per_s", -1):
            best[r["variant"]] = r
    summary = [
        {
            "variant": v.name,
            "provider": v.provider,
            "min_cosine_vs_cuda_fp32": parity[v.name],
            "parity_ok": parity[v.name] >= COSINE_GATE,
            "best_img_per_s": best.get(v.name, {}).get("img_per_s"),
            "at_batch": best.get(v.name, {}).get("batch"),
        }
        for v in variants
    ]
    tensors_in = [
        s["best_img_per_s"]
        for s in summary
        if s["parity_ok"] and "iobinding" in s["variant"] and "fp16" in s["variant"] and s["best_img_per_s"]
    ]
    return {
        "rows": rows,
        "summary": summary,
        "skipped": skipped,
        "best_fp16_tensors_in_img_per_s": max(tensors_in or [0]),
    }


# ---------------------------------------------------------------- end to end


def _multipart(jpeg: bytes, boundary: str) -> bytes:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="item_id"\r\n\r\n@ID@\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + jpeg + f"\r\n--{boundary}--\r\n".encode()


def _client_process(args: tuple[str, int, list[bytes], str, int, float, int]) -> tuple[list[float], int]:
    """One client process: `threads` closed-loop keep-alive connections posting multipart JPEGs."""
    import http.client
    import threading

    host, port, bodies, boundary, threads, seconds, worker = args
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def loop(t: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        n = 0
        while time.perf_counter() < deadline:
            body = bodies[n % len(bodies)].replace(b"@ID@", f"g{worker}-{t}-{n}-{os.getpid()}".encode())
            n += 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/items", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
                response = conn.getresponse()
                response.read()
                ok = response.status in (200, 201)
            except Exception:
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=120)
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[0] += 1
        conn.close()

    pool = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return latencies, errors[0]


def e2e_section(quick: bool, seconds: float, side: int) -> dict[str, Any]:
    model = cached_model("tiny" if quick else "base", "fp16")
    boundary = "lookalikebenchboundary"
    bodies = [_multipart(textured_photo(300 + i, side, side), boundary) for i in range(32)]
    procs = max(2, (os.cpu_count() or 2) // 2)
    threads = 4 if quick else 16
    results = []
    for mode, max_batch in (("batching_on", "128"), ("batching_off", "1")):
        data = cache_dir("gpu-e2e") / mode
        shutil.rmtree(data, ignore_errors=True)
        env = {
            "LOOKALIKE_MODEL_PATH": str(model),
            "LOOKALIKE_QDRANT_PATH": str(data),
            "LOOKALIKE_DEVICE": "cuda",
            "LOOKALIKE_BATCH_MAX_SIZE": max_batch,
            "LOOKALIKE_QUEUE_MAX": "8192",
            "LOOKALIKE_LOG_LEVEL": "warning",
        }
        with running_service(env, name=f"gpu-e2e-{mode}") as service:
            ctx = mp.get_context("spawn")
            with ctx.Pool(procs) as pool:
                t0 = time.perf_counter()
                outs = pool.map(
                    _client_process,
                    [(service.host, service.port, bodies, boundary, threads, seconds, w) for w in range(procs)],
                )
                wall = time.perf_counter() - t0
        latencies = [x for lat, _ in outs for x in lat]
        results.append(
            {
                "mode": mode,
                "client_processes": procs,
                "connections": procs * threads,
                "requests": len(latencies),
                "errors": sum(e for _, e in outs),
                "img_per_s": round(len(latencies) / wall, 1),
                "p50_ms": round(percentile(latencies, 50) * 1e3, 2),
                "p99_ms": round(percentile(latencies, 99) * 1e3, 2),
            }
        )
        shutil.rmtree(data, ignore_errors=True)
    on, off = results[0]["img_per_s"], results[1]["img_per_s"]
    return {"image_side": side, "rows": results, "batching_gain": round(on / off, 2) if off else 0.0}


# ---------------------------------------------------------------- main


def run(*, quick: bool, batches: list[int], e2e: bool, e2e_seconds: float, side: int, tflops: float | None):
    machine = machine_info()
    devices, reason = cuda_devices()
    report: dict[str, Any] = {
        "benchmark": "gpu",
        "quick": quick,
        "machine": machine,
        "cuda_available": False,
        "reason": reason,
        "devices": devices,
        "gflop_per_image": GFLOP_PER_IMAGE,
        "encoder": None,
        "e2e": None,
        "targets": {
            "tensors_in_img_per_s_min": TARGET_TENSORS_IMG_S,
            "e2e_img_per_s_min": TARGET_E2E_IMG_S,
            "batching_gain_min": TARGET_BATCHING_GAIN,
            "tensors_in_met": None,
            "e2e_met": None,
            "batching_met": None,
        },
    }
    if not devices:
        return report
    ok, why = ort_cuda_works(cached_model("tiny"))
    if not ok:
        report["reason"] = why
        return report
    report["cuda_available"] = True
    report["reason"] = ""
    peak = peak_tflops(devices[0]["name"], tflops)
    flop_limit = peak * 1e12 / (GFLOP_PER_IMAGE * 1e9) if peak else None
    report["peak_tflops"] = peak
    report["flop_limit_img_per_s"] = round(flop_limit, 0) if flop_limit else None
    report["encoder"] = encoder_section(quick, batches, flop_limit)
    best = report["encoder"]["best_fp16_tensors_in_img_per_s"]
    report["targets"]["tensors_in_met"] = bool(best >= TARGET_TENSORS_IMG_S) if not quick else None
    if e2e:
        report["e2e"] = e2e_section(quick, e2e_seconds, side)
        if not quick:
            top = max(r["img_per_s"] for r in report["e2e"]["rows"])
            report["targets"]["e2e_met"] = top >= TARGET_E2E_IMG_S
            report["targets"]["batching_met"] = report["e2e"]["batching_gain"] >= TARGET_BATCHING_GAIN
    return report


def render(r: dict[str, Any]) -> str:
    lines = ["GPU benchmark (SigLIP-B/16, random weights)", machine_line(r["machine"])]
    if not r["cuda_available"]:
        lines.append(f"CUDA is not available here: {r['reason']}. Nothing measured.")
        return "\n".join(lines)
    dev = r["devices"][0]
    lines.append(
        f"device: {dev['name']} ({dev['memory_bytes'] / 2**30:.0f} GiB); FLOP limit "
        f"{r['flop_limit_img_per_s']} img/s at {r['peak_tflops']} TFLOP/s and {r['gflop_per_image']} GFLOP/img"
    )
    enc = r["encoder"]
    lines += [table(enc["rows"]), table(enc["summary"])]
    lines += [f"skipped {k}: {v}" for k, v in enc["skipped"].items()]
    if r["e2e"]:
        lines += [f"end to end POST /items, {r['e2e']['image_side']}px JPEG uploads", table(r["e2e"]["rows"])]
        lines.append(f"micro-batching gain on GPU: {r['e2e']['batching_gain']}x")
    lines.append(f"targets: {r['targets']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n")[0])
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,8,32,64,128,256)")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end POST /items section")
    parser.add_argument("--e2e-seconds", type=float, default=None, help="seconds per end-to-end mode (default 30)")
    parser.add_argument("--side", type=int, default=800, help="JPEG side for the end-to-end section")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense fp16 peak, if the GPU is not known")
    args = parser.parse_args(argv)
    quick = args.quick
    result = run(
        quick=quick,
        batches=[int(b) for b in (args.batches or ("1,8" if quick else "1,8,32,64,128,256")).split(",")],
        e2e=not args.no_e2e,
        e2e_seconds=args.e2e_seconds or (3.0 if quick else 30.0),
        side=args.side if not quick else 128,
        tflops=args.peak_tflops,
    )
    emit(result, args.json, render)
    if not result["cuda_available"] and not quick:
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
