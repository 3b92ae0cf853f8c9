"""Record OpenTelemetry spans of a test process in a JSON-lines file, for the test to read.

``install(path)`` sets a tracer provider (the SDK) whose spans are appended
to ``path`` as they end: one JSON object per span with its name, trace id,
span id and parent span id (hex). Processes started by a test (daphne, a
writer) call it when their environment names a file.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """Return what a test checks of a span."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
    }


class FileExporter(SpanExporter):
    """Append each span to a file as one JSON line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock, self.path.open("a") as out:
            for span in spans:
                out.write(json.dumps(span_record(span)) + "\n")
        return SpanExportResult.SUCCESS


def install(path: str) -> None:
    """Make this process's spans go to ``path``."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter(Path(path))))
    trace.set_tracer_provider(provider)


def read(path: Path) -> list[dict[str, Any]]:
    """Return the spans recorded in ``path`` so far."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
