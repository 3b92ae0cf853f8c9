"""Record OpenTelemetry spans of a test process in a JSON-lines file, for the test to read.

``install(path)`` sets a tracer provider (the SDK) whose spans are appended
to ``path`` as they end: one JSON object per span with its name, trace id,
span id and parent span id (hex). Processes started by a test (daphne, a
writer, a task worker) call it when their environment names a file.

``in_memory()`` does the same for the test process itself, once, with the
SDK's in-memory exporter.
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
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


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


_memory: InMemorySpanExporter | None = None


def in_memory() -> InMemorySpanExporter:
    """Return the exporter this process's spans go to, installing it on first use.

    A process has one tracer provider: it is set once and kept.
    """
    global _memory
    if _memory is None:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _memory = exporter
    return _memory


def ancestors(spans: Sequence[ReadableSpan], span: ReadableSpan) -> list[str]:
    """Return the names of ``span``'s parents among ``spans``, nearest first."""
    by_id = {s.get_span_context().span_id: s for s in spans}  # type: ignore[union-attr]
    names = []
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        found = by_id[parent.span_id]
        names.append(found.name)
        parent = found.parent
    return names


def read(path: Path) -> list[dict[str, Any]]:
    """Return the spans recorded in ``path`` so far."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
