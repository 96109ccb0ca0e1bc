"""Every Prometheus metric of the service, named once."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PREFIX = "lookalike_"
# Latency buckets from 1 ms to 30 s; the image fetch and the queue wait share them.
LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
POWERS_OF_2 = tuple(float(2**i) for i in range(11))  # 1 .. 1024, the batch size limit

http_requests = Counter(PREFIX + "http_requests_total", "HTTP requests answered", ["route", "method", "status"])
http_duration = Histogram(
    PREFIX + "http_request_duration_seconds", "HTTP request latency", ["route", "method"], buckets=LATENCY
)
image_fetch_duration = Histogram(
    PREFIX + "image_fetch_duration_seconds", "Time to download an image URL", buckets=LATENCY
)
image_fetch_failures = Counter(PREFIX + "image_fetch_failures_total", "Image downloads that failed", ["reason"])
image_decode_duration = Histogram(
    PREFIX + "image_decode_duration_seconds", "Time to decode and resize one image", buckets=LATENCY
)
image_rejected = Counter(PREFIX + "image_rejected_total", "Images refused before embedding", ["reason"])
# The encoder's metrics, one series per model version (each version has its own micro-batcher).
batch_queue_depth = Gauge(PREFIX + "batch_queue_depth", "Images waiting for the encoder", ["version"])
batch_queue_wait = Histogram(
    PREFIX + "batch_queue_wait_seconds", "Time an image waited before its batch ran", ["version"], buckets=LATENCY
)
batch_size = Histogram(PREFIX + "batch_size", "Images per encoder batch", ["version"], buckets=POWERS_OF_2)
inference_duration = Histogram(
    PREFIX + "inference_duration_seconds", "Encoder time per batch", ["version"], buckets=LATENCY
)
store_duration = Histogram(PREFIX + "store_duration_seconds", "Vector store call latency", ["op"], buckets=LATENCY)
store_errors = Counter(PREFIX + "store_errors_total", "Vector store calls that failed", ["op"])
items_indexed = Counter(PREFIX + "items_indexed_total", "Items written (embedded and stored)")
admission_in_use = Gauge(
    PREFIX + "admission_in_use", "Admission permits held by writes (images, body bytes)", ["resource"]
)
admission_capacity = Gauge(PREFIX + "admission_capacity", "Admission permits in all", ["resource"])
overload_rejections = Counter(PREFIX + "overload_rejections_total", "Requests shed with 429 overloaded")
model_info = Gauge(PREFIX + "model_info", "The loaded model", ["version", "provider", "precision"])
backfill_items = Counter(
    PREFIX + "backfill_items_total",
    "Items a backfill handled, by outcome (embedded, skipped: deleted or rewritten meanwhile, failed: image gone)",
    ["version", "outcome"],
)
model_coverage = Gauge(
    PREFIX + "model_coverage_ratio", "Share of items that have this model version's vector", ["version"]
)
experiment_events = Counter(
    PREFIX + "experiment_events_total",
    "Experiment events logged: answers served (type=served) and POST /events accepted",
    ["experiment", "variant", "type"],
)
