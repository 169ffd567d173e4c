"""The server's Prometheus metrics: request counts and latency per endpoint, tokens, inputs,
forward passes, batch sizes, the worker's batch wait and the queue, rendered in the text format
(version 0.0.4)."""

from __future__ import annotations

import collections
import threading

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Histogram:
    """A Prometheus histogram (cumulative buckets, sum, count) guarded by the Metrics lock."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1
        self.sum += value
        self.count += 1

    def render(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [
            f'{name}_bucket{{{labels}{sep}le="{_fmt(b)}"}} {c}'
            for b, c in zip(self.buckets, self.counts, strict=True)
        ]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        braces = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{braces} {self.sum:.6f}")
        out.append(f"{name}_count{braces} {self.count}")
        return out


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


class Metrics:
    """Counters and histograms rendered in the Prometheus text format (version 0.0.4)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: collections.Counter[tuple[str, int]] = collections.Counter()
        self.latency: dict[str, Histogram] = {}
        self.tokens = 0
        self.inputs = 0
        self.forward_passes = 0
        self.steps = 0
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.step_requests = Histogram(BATCH_BUCKETS)
        self.batch_wait = Histogram(LATENCY_BUCKETS)
        self.queue_texts = 0

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(endpoint, status)] += 1
            self.latency.setdefault(endpoint, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def render(self) -> str:
        with self.lock:
            lines = [
                "# HELP diffembed_requests_total HTTP requests by endpoint and status.",
                "# TYPE diffembed_requests_total counter",
            ]
            for (endpoint, status), n in sorted(self.requests.items()):
                lines.append(
                    f'diffembed_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}'
                )
            lines += [
                "# HELP diffembed_request_latency_seconds Request latency by endpoint.",
                "# TYPE diffembed_request_latency_seconds histogram",
            ]
            for endpoint, h in sorted(self.latency.items()):
                lines += h.render("diffembed_request_latency_seconds", f'endpoint="{endpoint}"')
            lines += [
                "# HELP diffembed_tokens_total Tokens embedded (instruction and special tokens "
                "included).",
                "# TYPE diffembed_tokens_total counter",
                f"diffembed_tokens_total {self.tokens}",
                "# HELP diffembed_inputs_total Texts embedded.",
                "# TYPE diffembed_inputs_total counter",
                f"diffembed_inputs_total {self.inputs}",
                "# HELP diffembed_forward_passes_total Model forward passes.",
                "# TYPE diffembed_forward_passes_total counter",
                f"diffembed_forward_passes_total {self.forward_passes}",
                "# HELP diffembed_batch_size Texts per forward pass.",
                "# TYPE diffembed_batch_size histogram",
                *self.batch_size.render("diffembed_batch_size"),
                "# HELP diffembed_step_requests Requests merged into one worker step.",
                "# TYPE diffembed_step_requests histogram",
                *self.step_requests.render("diffembed_step_requests"),
                "# HELP diffembed_batch_wait_seconds The worker's adaptive wait before a step.",
                "# TYPE diffembed_batch_wait_seconds histogram",
                *self.batch_wait.render("diffembed_batch_wait_seconds"),
                "# HELP diffembed_queue_texts Texts waiting or in progress.",
                "# TYPE diffembed_queue_texts gauge",
                f"diffembed_queue_texts {self.queue_texts}",
            ]
        return "\n".join(lines) + "\n"
